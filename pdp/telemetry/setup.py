"""From operator options to a running `TelemetryObserver` (what `pdp serve` calls)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pdp.telemetry.config import TelemetryOptions
from pdp.telemetry.masking import Masker
from pdp.telemetry.metrics import Metrics
from pdp.telemetry.observer import TelemetryObserver
from pdp.telemetry.otel import Otel, make_resource, setup_otel
from pdp.telemetry.sinks import RotatingFileSink, Sink, StreamSink

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from pdp.engine.holder import EngineHolder


def open_sink(spec: str, options: TelemetryOptions, resource: Resource | None = None) -> Sink:
    if spec == "stdout":
        return StreamSink()
    if spec == "otlp":
        from pdp.telemetry.otlp_logs import OtlpLogSink

        return OtlpLogSink(resource=resource)
    return RotatingFileSink(spec, max_bytes=options.max_bytes, backups=options.backups)


def build_observer(
    options: TelemetryOptions, holder: EngineHolder | None = None, *, writer_thread: bool = True
) -> TelemetryObserver:
    """Validate the options, start the exporters and the writer, and watch `holder`."""
    masker = Masker(options.mask)  # raises MaskPathError before anything is started
    resource = make_resource()
    otel = Otel()
    sinks: list[Sink] = []
    try:
        if options.otel or options.prometheus:
            otel = setup_otel(
                traces=options.otel,
                metrics=True,
                # --otel off with --prometheus: metrics for the scrape endpoint only.
                metric_readers=None if options.otel else [],
                prometheus=options.prometheus,
                resource=resource,
            )
        sinks = [open_sink(spec, options, resource) for spec in options.decision_log]
    except BaseException:
        for sink in sinks:
            sink.close()
        otel.shutdown()
        raise
    observer = TelemetryObserver(
        sinks=[*sinks, *options.extra_sinks],
        masker=masker,
        tracer=otel.tracer,
        metrics=Metrics(otel.meter) if otel.meter is not None else None,
        queue_size=options.queue_size,
        queue_bytes=options.queue_bytes,
        otel=otel,
        writer_thread=writer_thread,
    )
    if holder is not None:
        observer.watch_holder(holder)
    return observer

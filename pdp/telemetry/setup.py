"""From operator options to a running `TelemetryObserver` (what `pdp serve` calls)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pdp.telemetry.masking import Masker
from pdp.telemetry.metrics import Metrics
from pdp.telemetry.observer import DEFAULT_QUEUE_SIZE, TelemetryObserver
from pdp.telemetry.otel import Otel, make_resource, setup_otel
from pdp.telemetry.sinks import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    RotatingFileSink,
    Sink,
    StreamSink,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from pdp.engine.holder import EngineHolder


@dataclass(frozen=True)
class TelemetryOptions:
    decision_log: tuple[str, ...] = ()  # each `stdout`, `otlp` or a file path
    mask: tuple[str, ...] = ()  # operator mask paths
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_bytes: int = DEFAULT_MAX_BYTES  # file rotation size
    backups: int = DEFAULT_BACKUPS
    otel: bool = True  # traces and metrics through the OTEL_* configured exporters
    prometheus: str | None = None  # HOST:PORT of an opt-in scrape endpoint
    extra_sinks: tuple[Sink, ...] = field(default=())  # for tests and embedders

    @property
    def enabled(self) -> bool:
        return bool(self.decision_log or self.otel or self.prometheus or self.extra_sinks)


def open_sink(spec: str, options: TelemetryOptions, resource: Resource | None = None) -> Sink:
    if spec == "stdout":
        return StreamSink()
    if spec == "otlp":
        from pdp.telemetry.otlp_logs import OtlpLogSink

        return OtlpLogSink(resource=resource)
    return RotatingFileSink(spec, max_bytes=options.max_bytes, backups=options.backups)


def build_observer(
    options: TelemetryOptions, holder: EngineHolder | None = None
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
        otel=otel,
    )
    if holder is not None:
        observer.watch_holder(holder)
    return observer

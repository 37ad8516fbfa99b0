"""OpenTelemetry providers, configured the OpenTelemetry way.

What the SDK reads itself is left to it: the OTLP exporters read `OTEL_EXPORTER_OTLP_*`
(endpoint, headers, TLS, timeout, compression), `Resource.create` reads `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES`, the tracer provider reads `OTEL_TRACES_SAMPLER[_ARG]`, the batch
span processor `OTEL_BSP_*`, the periodic metric reader `OTEL_METRIC_EXPORT_INTERVAL`, the
propagator `OTEL_PROPAGATORS`. What the SDK only reads in its auto-instrumentation entry point
is read here: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` and `OTEL_METRICS_EXPORTER`
(`otlp` — the default —, `console`, `prometheus` for metrics, or `none`).

Providers are private to pdp (not installed as the global ones): the server's telemetry has
one owner, which shuts it down, and tests can build as many as they like.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Tracer

log = logging.getLogger("pdp.telemetry")

# The service name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one.
DEFAULT_SERVICE_NAME = "pdp"
# Instrumentation scope of pdp's spans and metrics.
SCOPE = "pdp"
# Where `OTEL_METRICS_EXPORTER=prometheus` serves when OTEL_EXPORTER_PROMETHEUS_HOST/PORT are
# unset (the values the OpenTelemetry specification gives).
DEFAULT_PROMETHEUS_HOST = "localhost"
DEFAULT_PROMETHEUS_PORT = 9464


class TelemetryConfigError(ValueError):
    """An OTEL_* variable or telemetry flag that pdp cannot honour."""


def make_resource() -> Resource:
    resource = Resource.create()
    # Resource.create lets explicit attributes override the environment, so the default name
    # is applied only when the environment left the SDK's `unknown_service` placeholder.
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def exporter_names(signal: str) -> list[str]:
    """`OTEL_<SIGNAL>_EXPORTER` as a list; `none` (or OTEL_SDK_DISABLED) means no exporter."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    return [] if "none" in names else names


def _check_protocol() -> None:
    for var in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        value = os.environ.get(var, "grpc").strip().lower()
        if value not in ("", "grpc"):
            raise TelemetryConfigError(
                f"{var}=`{value}` is not supported: pdp exports OTLP over grpc"
            )


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `:PORT` for all interfaces) to (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise TelemetryConfigError(f"`{text}` is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Otel:
    """The providers pdp created, and how to shut them down (flushing what they hold)."""

    tracer: Tracer | None = None
    meter: Meter | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    prometheus_address: tuple[str, int] | None = None  # where the scrape endpoint listens
    _servers: list[Any] = field(default_factory=list)

    def shutdown(self) -> None:
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()


def setup_otel(
    *,
    traces: bool = True,
    metrics: bool = True,
    prometheus: str | None = None,
    resource: Resource | None = None,
    span_exporters: Sequence[SpanExporter] | None = None,
    metric_readers: Sequence[MetricReader] | None = None,
) -> Otel:
    """Build the tracer and meter providers.

    `prometheus` (`HOST:PORT`) opts into a scrape endpoint in addition to whatever
    OTEL_METRICS_EXPORTER says. `span_exporters` / `metric_readers` replace the
    environment-configured ones (tests pass in-memory ones).
    """
    resource = resource or make_resource()
    otel = Otel()
    if traces:
        exporters = list(span_exporters) if span_exporters is not None else _span_exporters()
        provider = TracerProvider(resource=resource)
        otel.tracer_provider = provider
        otel.tracer = provider.get_tracer(SCOPE)
        for exporter in exporters:
            # The SDK's batch processor reads OTEL_BSP_* (queue size, batch size, delay).
            provider.add_span_processor(BatchSpanProcessor(exporter))
    if metrics:
        readers = list(metric_readers) if metric_readers is not None else _metric_readers(otel)
        if prometheus:
            readers.append(_prometheus_reader(otel, *parse_host_port(prometheus)))
        # Measurements are recorded on the writer thread, outside any span, so the SDK's
        # default trace-based exemplar filter can never keep one; it only costs its check on
        # every measurement. An operator's OTEL_METRICS_EXEMPLAR_FILTER still applies.
        extra: dict[str, Any] = {}
        if not os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
            extra["exemplar_filter"] = AlwaysOffExemplarFilter()
        otel.meter_provider = MeterProvider(resource=resource, metric_readers=readers, **extra)
        otel.meter = otel.meter_provider.get_meter(SCOPE)
    return otel


def _span_exporters() -> list[SpanExporter]:
    out: list[SpanExporter] = []
    for name in exporter_names("traces"):
        if name == "otlp":
            _check_protocol()
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            out.append(OTLPSpanExporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        else:
            raise TelemetryConfigError(f"OTEL_TRACES_EXPORTER: unsupported exporter `{name}`")
    return out


def _metric_readers(otel: Otel) -> list[MetricReader]:
    out: list[MetricReader] = []
    for name in exporter_names("metrics"):
        if name == "otlp":
            _check_protocol()
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            out.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            out.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "prometheus":
            host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", DEFAULT_PROMETHEUS_HOST)
            port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", DEFAULT_PROMETHEUS_PORT))
            out.append(_prometheus_reader(otel, host, port))
        else:
            raise TelemetryConfigError(f"OTEL_METRICS_EXPORTER: unsupported exporter `{name}`")
    return out


def _prometheus_reader(otel: Otel, host: str, port: int) -> MetricReader:
    if otel.prometheus_address is not None:
        raise TelemetryConfigError("only one Prometheus endpoint can be configured")
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, start_http_server

    # A registry of our own, not prometheus_client's global one: the endpoint shows pdp's
    # metrics only, and several providers (tests) never collide.
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    otel._servers.append(server)
    otel.prometheus_address = (host, server.server_port)
    log.info("prometheus metrics on http://%s:%d/metrics", host, server.server_port)
    return reader

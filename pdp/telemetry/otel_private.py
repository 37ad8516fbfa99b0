"""Every private OpenTelemetry name pdp uses, and nothing else: the one module to check on an
OpenTelemetry upgrade.

pdp builds spans' wire bytes itself and aggregates its histograms itself, both measured to
matter for the telemetry cost (bench/RESULTS.md), and both need SDK details the SDK does not
promise to keep: its OTLP encoders, the propagator's `traceparent` pattern, a reader's
histogram temporality and collection hook, a tracer's scope. The logs signal is still under
`_logs` in the Python SDK (no public module yet). pyproject.toml pins `opentelemetry-*` to
the minor release these were checked against (`TESTED_SDK`), and
tests/adopt/test_otel_private.py fails, naming the symbol, when an upgrade moves one of them;
the same test fails when a private OpenTelemetry name is used outside this module.
"""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
    _SPAN_KIND_MAP,
    _encode_span,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics._internal.instrument import _Histogram
from opentelemetry.trace.propagation.tracecontext import (
    _TRACECONTEXT_MAXIMUM_TRACESTATE_LENGTH,
    TraceContextTextMapPropagator,
)

# The opentelemetry-sdk releases these names were checked against (a PEP 440 specifier).
TESTED_SDK = ">=1.45,<1.46"

encode_instrumentation_scope = _encode_instrumentation_scope
encode_resource = _encode_resource
encode_span = _encode_span
SPAN_KIND_MAP = _SPAN_KIND_MAP

# W3C trace context: the propagator's own header pattern and limits, so pdp's fast path
# accepts exactly the `traceparent` values the SDK's propagator accepts.
TRACEPARENT_HEADER_FORMAT: str = TraceContextTextMapPropagator._TRACEPARENT_HEADER_FORMAT
TRACEPARENT_MAXIMUM_LENGTH: int = TraceContextTextMapPropagator._TRACEPARENT_MAXIMUM_LENGTH
TRACESTATE_MAXIMUM_LENGTH: int = _TRACECONTEXT_MAXIMUM_TRACESTATE_LENGTH


def reader_histogram_temporality(reader: Any) -> Any:
    """The temporality a metric reader keeps for SDK histograms, or None if it keeps none."""
    try:
        return reader._instrument_class_temporality.get(_Histogram)
    except (AttributeError, TypeError):
        return None


def receive_metrics_hook(reader: Any) -> Any:
    """The reader's `_receive_metrics`: where `MetricReader.collect` hands its collection (the
    hook the SDK documents for subclasses)."""
    return reader._receive_metrics


def set_receive_metrics_hook(reader: Any, hook: Any) -> None:
    reader._receive_metrics = hook


def composite_propagators(textmap: Any) -> Any:
    """The propagators inside a CompositePropagator, or None for a single propagator."""
    return getattr(textmap, "_propagators", None)


def tracer_scope(tracer: Any) -> Any:
    """An SDK tracer's instrumentation scope, or None."""
    return getattr(tracer, "_instrumentation_scope", None)


def otlp_log_exporter() -> LogRecordExporter:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter()


__all__ = [
    "SPAN_KIND_MAP",
    "TESTED_SDK",
    "TRACEPARENT_HEADER_FORMAT",
    "TRACEPARENT_MAXIMUM_LENGTH",
    "TRACESTATE_MAXIMUM_LENGTH",
    "BatchLogRecordProcessor",
    "LogRecordExporter",
    "LoggerProvider",
    "SeverityNumber",
    "composite_propagators",
    "encode_instrumentation_scope",
    "encode_resource",
    "encode_span",
    "otlp_log_exporter",
    "reader_histogram_temporality",
    "receive_metrics_hook",
    "set_receive_metrics_hook",
    "tracer_scope",
]

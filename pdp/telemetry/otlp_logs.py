"""A decision-log sink that sends records as OpenTelemetry log records over OTLP/gRPC.

The exporter reads the standard `OTEL_EXPORTER_OTLP_[LOGS_]*` variables (endpoint, headers,
TLS, timeout, compression). Each record becomes one log record whose body is the record's JSON
line (bodies must be OTLP `AnyValue`s, and request attributes may hold JSON `null`, which is
not one), with the decision id as an attribute and the record's trace/span ids as the log
record's trace context, so a backend links the decision to its span.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource

from pdp.telemetry.otel_private import (
    BatchLogRecordProcessor,
    LoggerProvider,
    LogRecordExporter,
    SeverityNumber,
    otlp_log_exporter,
)
from pdp.telemetry.sinks import Record, to_json_line

# The writer hands over at most this many records at a time (see `observer.MAX_BATCH`); the
# SDK's batch queue is sized above it so that it never drops: back-pressure belongs to the
# decision-log queue, where drops are counted.
_SDK_QUEUE_SIZE = 4096
# How long one batch may take to export before the writer moves on (the SDK logs the failure).
EXPORT_TIMEOUT_MS = 10_000

# Log records carry this event name, so a backend can tell decisions from other logs.
EVENT_NAME = "pdp.decision"


class OtlpLogSink:
    def __init__(
        self, exporter: LogRecordExporter | None = None, resource: Resource | None = None
    ) -> None:
        if exporter is None:
            exporter = otlp_log_exporter()
        self._provider = LoggerProvider(resource=resource or Resource.create())
        self._provider.add_log_record_processor(
            BatchLogRecordProcessor(exporter, max_queue_size=_SDK_QUEUE_SIZE)
        )
        self._logger = self._provider.get_logger("pdp.decision_log")

    def write(self, records: Sequence[Record]) -> None:
        for record in records:
            self._logger.emit(
                timestamp=_unix_ns(record),
                context=_trace_context(record),
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=to_json_line(record).rstrip("\n"),
                attributes={
                    "pdp.decision_id": record.get("decision_id", ""),
                    "pdp.rpc": record.get("rpc", ""),
                },
                event_name=EVENT_NAME,
            )
        # Export now, on the writer thread: a slow collector then slows the writer, and the
        # bounded decision-log queue (which counts its drops) absorbs it.
        self._provider.force_flush(EXPORT_TIMEOUT_MS)

    def flush(self) -> None:
        self._provider.force_flush(EXPORT_TIMEOUT_MS)

    def close(self) -> None:
        self._provider.shutdown()


def _unix_ns(record: Record) -> int | None:
    ts = record.get("timestamp")
    if not isinstance(ts, str):
        return None
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1e9)


def _trace_context(record: Record) -> Any:
    trace_id, span_id = record.get("trace_id") or "", record.get("span_id") or ""
    if not trace_id or not span_id:
        return None
    span_context = trace.SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))

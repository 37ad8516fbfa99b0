"""The one private OpenTelemetry API pdp uses: the logs signal, for the `otlp` decision-log sink.

The Python SDK still ships logs under `_logs` (no public module yet), with its OTLP/gRPC
exporter under `_log_exporter`. Everything else in pdp uses public OpenTelemetry APIs only.
pyproject.toml pins `opentelemetry-*` to the minor release these names were checked against
(`TESTED_SDK`); tests/adopt/test_otel_private.py fails, naming the symbol, when an upgrade
moves one, and fails when a private OpenTelemetry name is used anywhere else in pdp/.
"""

from __future__ import annotations

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter

# The opentelemetry-sdk releases these names were checked against (a PEP 440 specifier).
TESTED_SDK = ">=1.45,<1.46"


def otlp_log_exporter() -> LogRecordExporter:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter()


__all__ = [
    "TESTED_SDK",
    "BatchLogRecordProcessor",
    "LogRecordExporter",
    "LoggerProvider",
    "SeverityNumber",
    "otlp_log_exporter",
]

"""Decision logs, traces and metrics: the only package that imports OpenTelemetry.

The server (and the Envoy ext_authz servicer) call an observer after every decision; this
package provides it (`TelemetryObserver`, built from operator options by `build_observer`).
"""

from pdp.telemetry.decision_log import SCHEMA, build_record, request_from_record, request_to_json
from pdp.telemetry.masking import MASKED, Masker, MaskPathError
from pdp.telemetry.metrics import Metrics
from pdp.telemetry.observation import Observation, Observer
from pdp.telemetry.observer import DEFAULT_QUEUE_SIZE, TelemetryObserver
from pdp.telemetry.otel import Otel, TelemetryConfigError, setup_otel
from pdp.telemetry.setup import TelemetryOptions, build_observer
from pdp.telemetry.sinks import MemorySink, RotatingFileSink, Sink, StreamSink

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "MASKED",
    "SCHEMA",
    "MaskPathError",
    "Masker",
    "MemorySink",
    "Metrics",
    "Observation",
    "Observer",
    "Otel",
    "RotatingFileSink",
    "Sink",
    "StreamSink",
    "TelemetryConfigError",
    "TelemetryObserver",
    "TelemetryOptions",
    "build_observer",
    "build_record",
    "request_from_record",
    "request_to_json",
    "setup_otel",
]

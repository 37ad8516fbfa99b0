"""Decision logs, traces and metrics: the only package that imports OpenTelemetry.

The server (and the Envoy ext_authz servicer) call an observer after every decision; this
package provides it (`TelemetryObserver`, built from operator options by `build_observer`).

Names are loaded on first use (PEP 562), so importing `pdp.telemetry.cli` to register the
`pdp serve` flags does not import the OpenTelemetry SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdp.telemetry.config import DEFAULT_QUEUE_SIZE, TelemetryOptions
    from pdp.telemetry.decision_log import (
        SCHEMA,
        build_record,
        request_from_record,
        request_to_json,
    )
    from pdp.telemetry.masking import MASKED, Masker, MaskPathError
    from pdp.telemetry.metrics import Metrics
    from pdp.telemetry.observation import Observation, Observer
    from pdp.telemetry.observer import TelemetryObserver
    from pdp.telemetry.otel import Otel, TelemetryConfigError, setup_otel
    from pdp.telemetry.setup import build_observer
    from pdp.telemetry.sinks import MemorySink, RotatingFileSink, Sink, StreamSink

_EXPORTS = {
    "DEFAULT_QUEUE_SIZE": "config",
    "TelemetryOptions": "config",
    "SCHEMA": "decision_log",
    "build_record": "decision_log",
    "request_from_record": "decision_log",
    "request_to_json": "decision_log",
    "MASKED": "masking",
    "MaskPathError": "masking",
    "Masker": "masking",
    "Metrics": "metrics",
    "Observation": "observation",
    "Observer": "observation",
    "TelemetryObserver": "observer",
    "Otel": "otel",
    "TelemetryConfigError": "otel",
    "setup_otel": "otel",
    "build_observer": "setup",
    "MemorySink": "sinks",
    "RotatingFileSink": "sinks",
    "Sink": "sinks",
    "StreamSink": "sinks",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module `pdp.telemetry` has no attribute `{name}`")
    value = getattr(importlib.import_module(f"pdp.telemetry.{module}"), name)
    globals()[name] = value
    return value

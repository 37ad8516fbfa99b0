"""The service's metrics, created once on a `Meter` and fed by the decision-log writer.

Names follow OpenTelemetry conventions (dotted, unit in `unit`); the Prometheus exporter turns
them into `pdp_decisions_total`, `pdp_decision_duration_seconds`, ...
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from pdp.model.decision import BundleInfo
from pdp.telemetry.decision_log import Summary
from pdp.telemetry.intake import watch_holder

if TYPE_CHECKING:
    from pdp.engine.engine import Engine
    from pdp.engine.holder import EngineHolder

# Latency buckets (seconds): decisions take tens of microseconds in the engine and up to tens
# of milliseconds over the network with large batches; the default OTel buckets (0..10 s in
# coarse steps) would put nearly every decision in the first bucket.
LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# Batch-size buckets (resource x action checks per call), up to `Limits.max_checks` (1000).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# Reason codes are a closed set only for the engine's own; rules name their own reasons.
# Past this many distinct (effect, reason) pairs, further reasons are counted as `other` so a
# policy that puts request data into reasons cannot blow up the metric's cardinality.
MAX_REASON_SERIES = 200
OTHER_REASON = "other"

_OK = {"outcome": "ok"}
_ERROR = {"outcome": "error"}


class Metrics:
    """The instruments, plus the bundle state the observable gauge reports."""

    def __init__(self, meter: Meter) -> None:
        counter = meter.create_counter
        self.decisions = counter(
            "pdp.decisions",
            unit="{decision}",
            description="Resource x action decisions, by effect and first reason",
        )
        self.latency = meter.create_histogram(
            "pdp.decision.duration",
            unit="s",
            description="Time to answer one Check call (all its decisions)",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.batch_size = meter.create_histogram(
            "pdp.check.batch_size",
            unit="{check}",
            description="Resource x action checks asked in one call",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        self.rate_limits = counter(
            "pdp.rate_limit.decisions",
            unit="{decision}",
            description="Actions a rate limit covered, by limit id and outcome (granted, limited)",
        )
        self.errors = counter(
            "pdp.check.errors", unit="{call}", description="Calls answered with an error, by code"
        )
        self.activations = counter(
            "pdp.bundle.activations",
            unit="{activation}",
            description="Bundles activated (swapped in) since the process started",
        )
        self.failures = counter(
            "pdp.bundle.failures",
            unit="{failure}",
            description="Candidate bundles refused (bad signature, failing tests, compile error)",
        )
        self.log_dropped = counter(
            "pdp.decision_log.dropped",
            unit="{record}",
            description="Decision-log records lost, by reason (queue_full, sink_error)",
        )
        self._lock = threading.Lock()
        self._active: BundleInfo | None = None
        self._reasons: set[tuple[str, str]] = set()
        meter.create_observable_gauge(
            "pdp.bundle.active",
            callbacks=[self._observe_active],
            unit="{bundle}",
            description="1 for the active bundle, labelled with its name, version and revision",
        )

    # -- decisions ---------------------------------------------------------------------------

    def record_calls(self, calls: Iterable[tuple[Summary | None, float, str]]) -> None:
        """Record a batch of calls as (decision summary or None, latency seconds, error code).

        Counters are summed over the batch first: one `add` per series per batch instead of
        one per call (calls on one cached decision share their summary)."""
        decisions: Counter[tuple[str, str]] = Counter()
        limits: Counter[tuple[str, str]] = Counter()
        errors: Counter[str] = Counter()
        for summary, latency_s, error_code in calls:
            self.latency.record(latency_s, _ERROR if error_code else _OK)
            if error_code:
                errors[error_code] += 1
            if summary is not None:
                self.batch_size.record(summary.checks)
                for effect, reason, count in summary.decisions:
                    decisions[(effect, reason)] += count
                for limit_id, outcome, count in summary.limits:
                    limits[(limit_id, outcome)] += count
        for (effect, reason), n in decisions.items():
            self.decisions.add(n, {"effect": effect, "reason": self._reason(effect, reason)})
        for (limit_id, outcome), n in limits.items():
            self.rate_limits.add(n, {"limit": limit_id, "outcome": outcome})
        for code, n in errors.items():
            self.errors.add(n, {"code": code})

    def _reason(self, effect: str, reason: str) -> str:
        key = (effect, reason)
        if key in self._reasons:
            return reason
        with self._lock:
            if len(self._reasons) >= MAX_REASON_SERIES:
                return OTHER_REASON
            self._reasons.add(key)
        return reason

    def record_dropped(self, n: int, reason: str) -> None:
        if n:
            self.log_dropped.add(n, {"reason": reason})

    # -- bundles -----------------------------------------------------------------------------

    def watch(self, holder: EngineHolder) -> None:
        """Count activations and refusals from now on and report the holder's active bundle."""
        watch_holder(holder, self.bundle_activated, self.bundle_failed)

    def bundle_activated(self, engine: Engine | Any) -> None:
        self.bundle_is(getattr(engine, "bundle", None))

    def bundle_is(self, bundle: BundleInfo | None) -> None:
        with self._lock:
            self._active = bundle
        self.activations.add(1, _bundle_attributes(bundle))

    def bundle_failed(self, error: str = "") -> None:
        # The error text is free-form (file paths, messages): never an attribute.
        self.failures.add(1)

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            bundle = self._active
        if bundle is None:
            return []
        return [Observation(1, _bundle_attributes(bundle))]


def _bundle_attributes(bundle: BundleInfo | None) -> dict[str, Any]:
    if bundle is None:
        return {}
    return {
        "bundle.name": bundle.name,
        "bundle.version": bundle.version,
        "bundle.revision": bundle.revision,
    }

"""The service's metrics, created once on a `Meter` and fed by the decision-log writer.

Names follow OpenTelemetry conventions (dotted, unit in `unit`); the Prometheus exporter turns
them into `pdp_decisions_total`, `pdp_decision_duration_seconds`, ...
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pdp.model.decision import BundleInfo
from pdp.telemetry.decision_log import Summary

if TYPE_CHECKING:
    from pdp.engine.engine import Engine
    from pdp.engine.holder import EngineHolder

# Latency buckets (seconds): decisions take tens of microseconds in the engine and up to tens
# of milliseconds over the network with large batches; the default OTel buckets (0..10 s in
# coarse steps) would put nearly every decision in the first bucket.
LATENCY_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# Batch-size buckets (resource x action checks per call), up to `Limits.max_checks` (1000).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# Reason codes are a closed set only for the engine's own; rules name their own reasons.
# Past this many distinct (effect, reason) pairs, further reasons are counted as `other` so a
# policy that puts request data into reasons cannot blow up the metric's cardinality.
MAX_REASON_SERIES = 200
OTHER_REASON = "other"


_OK = {"outcome": "ok"}
_ERROR = {"outcome": "error"}


@dataclass(frozen=True)
class HistogramSpec:
    """How a histogram is exported, whether the SDK or `LocalHistograms` aggregates it."""

    name: str
    unit: str
    description: str
    boundaries: tuple[float, ...]


LATENCY = HistogramSpec(
    "pdp.decision.duration",
    "s",
    "Time to answer one Check call (all its decisions)",
    LATENCY_BUCKETS_S,
)
BATCH_SIZE = HistogramSpec(
    "pdp.check.batch_size",
    "{check}",
    "Resource x action checks asked in one call",
    BATCH_BUCKETS,
)


class HistogramSeries:
    """The values of one histogram and attribute set: one batch's, or one reader's so far."""

    __slots__ = ("attributes", "counts", "max", "min", "spec", "start_ns", "sum")

    def __init__(
        self, spec: HistogramSpec, attributes: Mapping[str, Any], start_ns: int = 0
    ) -> None:
        self.spec = spec
        self.attributes = attributes
        # The SDK's explicit-bucket semantics: counts[i] holds the values <= boundaries[i] not
        # in an earlier bucket, the last one the values above every boundary.
        self.counts = [0] * (len(spec.boundaries) + 1)
        self.sum: float = 0
        self.min = math.inf
        self.max = -math.inf
        self.start_ns = start_ns

    def add(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.spec.boundaries, value)] += times
        self.sum += value * times
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def add_all(self, values: Sequence[float]) -> HistogramSeries:
        """Add each of `values`; returns this series."""
        if values:
            counts = self.counts
            # Bucket indexes counted in C (Counter over map): a batch has hundreds of values
            # and few distinct buckets.
            for index, n in Counter(
                map(partial(bisect_left, self.spec.boundaries), values)
            ).items():
                counts[index] += n
            self.sum += sum(values)
            self.min = min(self.min, min(values))
            self.max = max(self.max, max(values))
        return self

    def merge(self, other: HistogramSeries) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts)]
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)


_SeriesKey = tuple[HistogramSpec, tuple[tuple[str, Any], ...]]


def _series_key(series: HistogramSeries) -> _SeriesKey:
    return series.spec, tuple(sorted(series.attributes.items()))


class _ReaderState:
    """What one attached reader has not collected yet (DELTA) or ever (CUMULATIVE)."""

    __slots__ = ("delta", "last_collection_ns", "series")

    def __init__(self, delta: bool, now_ns: int) -> None:
        self.delta = delta
        self.last_collection_ns = now_ns
        self.series: dict[_SeriesKey, HistogramSeries] = {}


class LocalHistograms:
    """Histograms aggregated in plain Python, handed to metric readers as SDK histogram metrics.

    The SDK's `Histogram.record` builds a measurement, hashes its attributes, walks the views and
    takes a lock for every value: on the decision-log writer that was a third of its CPU per
    call. Here a batch's values are bucketed lock-free into `HistogramSeries` of the caller's,
    then merged under one lock per batch into each attached reader's state; `attach_histograms`
    adds them to the reader's collections where the SDK's own histograms would have been.
    """

    def __init__(self, scope: str | InstrumentationScope, resource: Resource | None = None) -> None:
        # Must be the scope of the meter the other instruments are created on, so that the
        # histograms are exported next to them as before.
        self.scope = (
            scope if isinstance(scope, InstrumentationScope) else InstrumentationScope(scope)
        )
        # Only used when a collection has no ResourceMetrics to join: the provider's resource.
        self.resource = resource if resource is not None else Resource.create()
        self._lock = threading.Lock()
        self._readers: list[_ReaderState] = []

    def add_reader(self, temporality: AggregationTemporality) -> _ReaderState:
        state = _ReaderState(temporality is AggregationTemporality.DELTA, time.time_ns())
        with self._lock:
            self._readers.append(state)
        return state

    def record(self, batch: Iterable[HistogramSeries]) -> None:
        """Merge a batch's series (empty ones are skipped) into every reader's state."""
        filled = [(_series_key(s), s) for s in batch if any(s.counts)]
        if not filled:
            return
        now = time.time_ns()
        with self._lock:
            for reader in self._readers:
                for key, series in filled:
                    mine = reader.series.get(key)
                    if mine is None:
                        mine = HistogramSeries(series.spec, dict(series.attributes), now)
                        reader.series[key] = mine
                    mine.merge(series)

    def collect(self, reader: _ReaderState) -> list[Metric]:
        """The reader's histogram metrics now; a DELTA reader's period restarts."""
        now = time.time_ns()
        points: dict[HistogramSpec, list[HistogramDataPoint]] = {}
        with self._lock:
            for (spec, _), series in reader.series.items():
                points.setdefault(spec, []).append(
                    HistogramDataPoint(
                        attributes=dict(series.attributes),
                        start_time_unix_nano=(
                            reader.last_collection_ns if reader.delta else series.start_ns
                        ),
                        time_unix_nano=now,
                        count=sum(series.counts),
                        sum=series.sum,
                        bucket_counts=tuple(series.counts),
                        explicit_bounds=spec.boundaries,
                        min=series.min,
                        max=series.max,
                        exemplars=[],
                    )
                )
            if reader.delta:
                reader.series = {}
                reader.last_collection_ns = now
        temporality = (
            AggregationTemporality.DELTA if reader.delta else AggregationTemporality.CUMULATIVE
        )
        return [
            Metric(
                name=spec.name,
                description=spec.description,
                unit=spec.unit,
                data=Histogram(data_points=data_points, aggregation_temporality=temporality),
            )
            for spec, data_points in points.items()
        ]

    def merged(self, data: MetricsData | None, metrics: Sequence[Metric]) -> MetricsData:
        """`data` with `metrics` added to this scope's ScopeMetrics (created if missing)."""
        # The SDK's collections are frozen dataclasses, and may be shared: rebuild, never mutate.
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if not resource_metrics:
            resource_metrics.append(
                ResourceMetrics(
                    resource=self.resource, scope_metrics=[], schema_url=self.resource.schema_url
                )
            )
        # The SDK makes one ResourceMetrics, the provider's.
        index = next(
            (i for i, rm in enumerate(resource_metrics) if rm.resource == self.resource), 0
        )
        target = resource_metrics[index]
        scope_metrics = list(target.scope_metrics)
        for i, sm in enumerate(scope_metrics):
            if sm.scope == self.scope:
                scope_metrics[i] = ScopeMetrics(
                    scope=sm.scope, metrics=[*sm.metrics, *metrics], schema_url=sm.schema_url
                )
                break
        else:
            scope_metrics.append(
                ScopeMetrics(
                    scope=self.scope, metrics=list(metrics), schema_url=self.scope.schema_url or ""
                )
            )
        resource_metrics[index] = ResourceMetrics(
            resource=target.resource, scope_metrics=scope_metrics, schema_url=target.schema_url
        )
        return MetricsData(resource_metrics=resource_metrics)


def histogram_temporality(reader: MetricReader) -> AggregationTemporality:
    """The temporality `reader` collects histograms with (its own or its exporter's choice)."""
    # Kept by the SDK per SDK instrument class, a private detail: read defensively, and fall
    # back to the SDK's own default.
    from .otel_private import reader_histogram_temporality

    value = reader_histogram_temporality(reader)
    if isinstance(value, AggregationTemporality):
        return value
    return AggregationTemporality.CUMULATIVE


def attach_histograms(reader: MetricReader, histograms: LocalHistograms) -> None:
    """Make `reader`'s collections carry `histograms` (their values from now on).

    `MetricReader.collect` hands the SDK's collection to `_receive_metrics`, the hook the SDK
    documents for subclasses; wrapping it on this one instance works for any reader class
    (periodic OTLP, Prometheus, in-memory). The SDK skips that hook when none of its own
    instruments has a point; pdp's counters move with every batch that records histograms, and
    a DELTA period only restarts when collected, so such a collection delays values, never
    loses them.
    """
    state = histograms.add_reader(histogram_temporality(reader))
    from .otel_private import receive_metrics_hook, set_receive_metrics_hook

    receive = receive_metrics_hook(reader)

    def receive_with_histograms(
        metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        metrics = histograms.collect(state)
        if metrics:
            metrics_data = histograms.merged(metrics_data, metrics)
        receive(metrics_data, timeout_millis=timeout_millis, **kwargs)

    set_receive_metrics_hook(reader, receive_with_histograms)


class Metrics:
    """The instruments, plus the bundle state the observable gauge reports."""

    def __init__(self, meter: Meter, histograms: LocalHistograms | None = None) -> None:
        """`histograms` (attached to the meter's readers) aggregates the two histograms;
        without it they are the SDK's own, recorded value by value."""
        self.decisions = meter.create_counter(
            "pdp.decisions",
            unit="{decision}",
            description="Resource x action decisions, by effect and first reason",
        )
        self.histograms = histograms
        if histograms is None:
            self.latency = _sdk_histogram(meter, LATENCY)
            self.batch_size = _sdk_histogram(meter, BATCH_SIZE)
        self.rate_limits = meter.create_counter(
            "pdp.rate_limit.decisions",
            unit="{decision}",
            description="Actions a rate limit covered, by limit id and outcome (granted, limited)",
        )
        self.errors = meter.create_counter(
            "pdp.check.errors", unit="{call}", description="Calls answered with an error, by code"
        )
        self.activations = meter.create_counter(
            "pdp.bundle.activations",
            unit="{activation}",
            description="Bundles activated (swapped in) since the process started",
        )
        self.failures = meter.create_counter(
            "pdp.bundle.failures",
            unit="{failure}",
            description="Candidate bundles refused (bad signature, failing tests, compile error)",
        )
        self.log_dropped = meter.create_counter(
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
        """Record a batch of calls as (decision summary or None, latency seconds, error code)."""
        # One pass sorts the calls: latencies by outcome, and how many calls share each
        # summary (the hits on one cached decision share one). Counters and the batch-size
        # histogram then take each distinct summary once, times its calls: one SDK `add` per
        # series per batch instead of one per call was most of the metrics' cost.
        ok: list[float] = []
        failed: list[float] = []
        errors: dict[str, int] = {}
        shared: dict[int, list[Any]] = {}  # id(summary) -> [summary, calls]
        for summary, latency_s, error_code in calls:
            if error_code:
                failed.append(latency_s)
                errors[error_code] = errors.get(error_code, 0) + 1
            else:
                ok.append(latency_s)
            if summary is not None:
                slot = shared.get(id(summary))
                if slot is None:
                    shared[id(summary)] = [summary, 1]
                else:
                    slot[1] += 1
        decisions: dict[tuple[str, str], int] = {}
        limits: dict[tuple[str, str], int] = {}
        for summary, n in shared.values():
            for effect, reason, count in summary.decisions:
                key = (effect, reason)
                decisions[key] = decisions.get(key, 0) + count * n
            for limit_id, outcome, count in summary.limits:
                key = (limit_id, outcome)
                limits[key] = limits.get(key, 0) + count * n
        if self.histograms is not None:
            # Histograms likewise: bucketed here, merged under one lock per batch.
            sizes = HistogramSeries(BATCH_SIZE, {})
            for summary, n in shared.values():
                sizes.add(summary.checks, n)
            self.histograms.record(
                (
                    HistogramSeries(LATENCY, _OK).add_all(ok),
                    HistogramSeries(LATENCY, _ERROR).add_all(failed),
                    sizes,
                )
            )
        else:
            record = self.latency.record
            for value in ok:
                record(value, attributes=_OK)
            for value in failed:
                record(value, attributes=_ERROR)
            for summary, n in shared.values():
                for _ in range(n):
                    self.batch_size.record(summary.checks)
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
        holder.on_swap(self.bundle_activated)
        engine = holder.current
        if engine is not None:
            self.bundle_activated(engine)
        # EngineHolder tells listeners about swaps only; its failures (a refused candidate, an
        # unreachable source) are seen by wrapping this one instance's `record_failure`.
        original = holder.record_failure

        def record_failure(error: str) -> None:
            original(error)
            self.bundle_failed(error)

        holder.record_failure = record_failure  # type: ignore[method-assign]

    def bundle_activated(self, engine: Engine) -> None:
        bundle: BundleInfo | None = getattr(engine, "bundle", None)
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


def _sdk_histogram(meter: Meter, spec: HistogramSpec) -> Any:
    return meter.create_histogram(
        spec.name,
        unit=spec.unit,
        description=spec.description,
        explicit_bucket_boundaries_advisory=spec.boundaries,
    )


def _bundle_attributes(bundle: BundleInfo | None) -> dict[str, Any]:
    if bundle is None:
        return {}
    return {
        "bundle.name": bundle.name,
        "bundle.version": bundle.version,
        "bundle.revision": bundle.revision,
    }

"""pdp's histograms aggregated outside the SDK, as every metric reader collects them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    Metric,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from pdp.telemetry.decision_log import Summary
from pdp.telemetry.metrics import (
    BATCH_BUCKETS,
    BATCH_SIZE,
    LATENCY,
    LATENCY_BUCKETS_S,
    HistogramSeries,
    LocalHistograms,
    Metrics,
    attach_histograms,
)
from pdp.telemetry.otel import SCOPE, setup_otel

Call = tuple[Summary | None, float, str]


def call(latency_s: float, checks: int = 1, error: str = "") -> Call:
    if error:
        return None, latency_s, error
    return Summary((("allow", "reader", checks),), checks, checks, 0), latency_s, ""


def local_metrics(
    reader: InMemoryMetricReader, scope: str = SCOPE
) -> Iterator[tuple[Metrics, MeterProvider]]:
    resource = Resource.create({"service.name": "pdp-test"})
    histograms = LocalHistograms(scope, resource)
    attach_histograms(reader, histograms)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    yield Metrics(provider.get_meter(scope), histograms), provider
    provider.shutdown()


@pytest.fixture
def cumulative() -> Iterator[tuple[Metrics, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    for metrics, _ in local_metrics(reader):
        yield metrics, reader


@pytest.fixture
def delta() -> Iterator[tuple[Metrics, InMemoryMetricReader]]:
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    for metrics, _ in local_metrics(reader):
        yield metrics, reader


def histograms_of(data: MetricsData | None) -> dict[str, Metric]:
    assert data is not None
    out: dict[str, Metric] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name in ("pdp.decision.duration", "pdp.check.batch_size"):
                    assert m.name not in out, "one metric per name"
                    out[m.name] = m
    return out


def points_by_outcome(metric: Metric) -> dict[str, Any]:
    return {dict(p.attributes)["outcome"]: p for p in metric.data.data_points}


# Values on, just below and just above boundaries: a value equal to a boundary belongs to that
# boundary's bucket (`le`), like the SDK's explicit-bucket aggregation.
LATENCIES = (0.00005, 0.00004, 0.00006, 0.001, 0.0011, 2.0, 0.00042)
ERROR_LATENCIES = (0.1, 0.30)
CHECKS = (1, 2, 3, 1000, 1001, 7, 5)


def sample_calls() -> list[Call]:
    calls = [call(lat, checks) for lat, checks in zip(LATENCIES, CHECKS)]
    calls += [call(lat, error="INVALID_ARGUMENT") for lat in ERROR_LATENCIES]
    return calls


def test_buckets_sum_count_min_max(cumulative: tuple[Metrics, InMemoryMetricReader]) -> None:
    metrics, reader = cumulative
    metrics.record_calls(sample_calls())
    data = reader.get_metrics_data()
    got = histograms_of(data)

    latency = got["pdp.decision.duration"]
    assert latency.unit == "s"
    assert latency.description == "Time to answer one Check call (all its decisions)"
    assert latency.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    by_outcome = points_by_outcome(latency)
    ok = by_outcome["ok"]
    assert tuple(ok.explicit_bounds) == LATENCY_BUCKETS_S
    #             0.00005 .0001 .00025 .0005 .001 .0025 ... 1.0  +Inf
    assert list(ok.bucket_counts) == [2, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert ok.count == 7
    assert ok.sum == pytest.approx(sum(LATENCIES))
    assert (ok.min, ok.max) == (0.00004, 2.0)
    error = by_outcome["error"]
    assert error.count == 2 and error.sum == pytest.approx(0.4)
    assert (error.min, error.max) == (0.1, 0.3)
    assert error.bucket_counts[LATENCY_BUCKETS_S.index(0.1)] == 1
    assert error.bucket_counts[LATENCY_BUCKETS_S.index(0.5)] == 1

    batch = got["pdp.check.batch_size"]
    assert batch.unit == "{check}"
    (size,) = batch.data.data_points
    assert dict(size.attributes) == {}
    assert tuple(size.explicit_bounds) == BATCH_BUCKETS
    #                          1  2  5 10 20 50 100 200 500 1000 +Inf
    assert list(size.bucket_counts) == [1, 1, 2, 1, 0, 0, 0, 0, 0, 1, 1]
    assert size.count == 7 and size.sum == sum(CHECKS)
    assert (size.min, size.max) == (1, 1001)

    # Exported with the meter's other instruments: same resource and scope.
    assert data is not None
    (rm,) = data.resource_metrics
    assert rm.resource.attributes["service.name"] == "pdp-test"
    (sm,) = rm.scope_metrics
    assert sm.scope.name == SCOPE
    names = {m.name for m in sm.metrics}
    assert {"pdp.decisions", "pdp.check.errors", "pdp.decision.duration"} <= names


def test_same_points_as_the_sdk_histograms() -> None:
    sdk_reader, local_reader = InMemoryMetricReader(), InMemoryMetricReader()
    sdk_provider = MeterProvider(metric_readers=[sdk_reader])
    sdk = Metrics(sdk_provider.get_meter(SCOPE))  # no local histograms: the SDK's own
    try:
        for local, _ in local_metrics(local_reader):
            for metrics in (sdk, local):
                metrics.record_calls(sample_calls()[:5])
                metrics.record_calls(sample_calls()[5:])
            want = histograms_of(sdk_reader.get_metrics_data())
            got = histograms_of(local_reader.get_metrics_data())
    finally:
        sdk_provider.shutdown()
    assert want.keys() == got.keys() == {"pdp.decision.duration", "pdp.check.batch_size"}
    for name, w in want.items():
        g = got[name]
        assert (g.unit, g.description) == (w.unit, w.description)
        assert g.data.aggregation_temporality == w.data.aggregation_temporality

        def key(p: Any) -> Any:
            return sorted(dict(p.attributes).items())

        w_points = sorted(w.data.data_points, key=key)
        g_points = sorted(g.data.data_points, key=key)
        assert len(w_points) == len(g_points)
        for wp, gp in zip(w_points, g_points):
            assert dict(gp.attributes) == dict(wp.attributes)
            assert list(gp.bucket_counts) == list(wp.bucket_counts)
            assert list(gp.explicit_bounds) == list(wp.explicit_bounds)
            assert gp.count == wp.count
            assert gp.sum == pytest.approx(wp.sum)
            assert (gp.min, gp.max) == (wp.min, wp.max)


def test_cumulative_keeps_everything(cumulative: tuple[Metrics, InMemoryMetricReader]) -> None:
    metrics, reader = cumulative
    metrics.record_calls([call(0.001), call(0.002)])
    first = points_by_outcome(histograms_of(reader.get_metrics_data())["pdp.decision.duration"])
    metrics.record_calls([call(0.5)])
    again = histograms_of(reader.get_metrics_data())
    second = points_by_outcome(again["pdp.decision.duration"])
    assert first["ok"].count == 2
    assert second["ok"].count == 3 and second["ok"].max == 0.5 and second["ok"].min == 0.001
    assert second["ok"].start_time_unix_nano == first["ok"].start_time_unix_nano
    assert second["ok"].time_unix_nano >= first["ok"].time_unix_nano
    assert again["pdp.check.batch_size"].data.data_points[0].count == 3


def test_delta_has_only_the_values_since_the_last_collection(
    delta: tuple[Metrics, InMemoryMetricReader],
) -> None:
    metrics, reader = delta
    metrics.record_calls([call(0.001, checks=2), call(0.002, error="INTERNAL")])
    first = histograms_of(reader.get_metrics_data())
    latency = first["pdp.decision.duration"]
    assert latency.data.aggregation_temporality is AggregationTemporality.DELTA
    assert set(points_by_outcome(latency)) == {"ok", "error"}

    metrics.record_calls([call(0.3, checks=40), call(0.00001, checks=40)])
    second = histograms_of(reader.get_metrics_data())
    by_outcome = points_by_outcome(second["pdp.decision.duration"])
    assert set(by_outcome) == {"ok"}  # no error in this period: no error point
    ok = by_outcome["ok"]
    assert ok.count == 2 and ok.sum == pytest.approx(0.30001)
    assert (ok.min, ok.max) == (0.00001, 0.3)  # this period's, not all time's
    assert ok.bucket_counts[0] == 1 and ok.bucket_counts[LATENCY_BUCKETS_S.index(0.5)] == 1
    first_ok = points_by_outcome(latency)["ok"]
    assert ok.start_time_unix_nano == first_ok.time_unix_nano  # the period starts where it ended
    (size,) = second["pdp.check.batch_size"].data.data_points
    assert size.count == 2 and size.sum == 80
    assert size.bucket_counts[BATCH_BUCKETS.index(50)] == 2

    metrics.record_dropped(1, "queue_full")  # SDK data, so that the reader receives a collection
    assert histograms_of(reader.get_metrics_data()) == {}


def test_each_reader_has_its_own_period() -> None:
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    histograms = LocalHistograms(SCOPE)
    for reader in (cumulative, delta):
        attach_histograms(reader, histograms)
    provider = MeterProvider(metric_readers=[cumulative, delta])
    metrics = Metrics(provider.get_meter(SCOPE), histograms)
    try:
        metrics.record_calls([call(0.001)])
        assert histograms_of(delta.get_metrics_data())["pdp.check.batch_size"]
        metrics.record_calls([call(0.001)])
        (d,) = histograms_of(delta.get_metrics_data())["pdp.check.batch_size"].data.data_points
        (c,) = histograms_of(cumulative.get_metrics_data())["pdp.check.batch_size"].data.data_points
    finally:
        provider.shutdown()
    assert (d.count, c.count) == (1, 2)


def test_a_scope_and_resource_the_collection_lacks_are_added() -> None:
    resource = Resource.create({"service.name": "pdp-test"})
    histograms = LocalHistograms(SCOPE, resource)
    reader = InMemoryMetricReader()
    attach_histograms(reader, histograms)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    try:
        # The counters on a meter of another scope: pdp's scope is not in the collection.
        other = provider.get_meter("other").create_counter("other.count")
        other.add(1)
        metrics = Metrics(provider.get_meter("unused"), histograms)
        metrics.record_calls([call(0.001)])
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert data is not None
    (rm,) = data.resource_metrics
    scopes = {sm.scope.name: {m.name for m in sm.metrics} for sm in rm.scope_metrics}
    assert scopes["other"] == {"other.count"}
    assert scopes[SCOPE] == {"pdp.decision.duration", "pdp.check.batch_size"}


def test_a_collection_without_resource_metrics_gets_the_providers_resource() -> None:
    resource = Resource.create({"service.name": "pdp-test"})
    histograms = LocalHistograms(SCOPE, resource)
    state = histograms.add_reader(AggregationTemporality.CUMULATIVE)
    series = HistogramSeries(BATCH_SIZE, {})
    series.add(3)
    histograms.record([series, HistogramSeries(LATENCY, {})])  # the empty one is left out
    merged = histograms.merged(MetricsData(resource_metrics=[]), histograms.collect(state))
    (rm,) = merged.resource_metrics
    assert rm.resource == resource
    (sm,) = rm.scope_metrics
    assert sm.scope.name == SCOPE
    (metric,) = sm.metrics
    assert metric.name == "pdp.check.batch_size"
    assert [p.count for p in metric.data.data_points] == [1]


def test_setup_otel_attaches_every_reader() -> None:
    readers = [
        InMemoryMetricReader(),
        InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA}),
    ]
    otel = setup_otel(traces=False, metric_readers=readers)
    assert otel.meter is not None and otel.histograms is not None
    metrics = Metrics(otel.meter, otel.histograms)
    try:
        metrics.record_calls([call(0.001, checks=4)])
        for reader in readers:
            data = reader.get_metrics_data()
            (size,) = histograms_of(data)["pdp.check.batch_size"].data.data_points
            assert size.count == 1 and size.sum == 4
            assert data is not None
            (rm,) = data.resource_metrics
            assert [sm.scope.name for sm in rm.scope_metrics] == [SCOPE]
    finally:
        otel.shutdown()


def test_recording_and_collecting_concurrently(
    cumulative: tuple[Metrics, InMemoryMetricReader],
) -> None:
    metrics, reader = cumulative
    batches, per_batch = 200, 50
    done = threading.Event()

    def record() -> None:
        for _ in range(batches):
            metrics.record_calls([call(0.001, checks=2)] * per_batch)
        done.set()

    writer = threading.Thread(target=record)
    writer.start()
    while not done.is_set():
        data = reader.get_metrics_data()
        if data is not None and (got := histograms_of(data)):
            (size,) = got["pdp.check.batch_size"].data.data_points
            assert size.count == sum(size.bucket_counts) and size.sum == 2 * size.count
    writer.join()
    (size,) = histograms_of(reader.get_metrics_data())["pdp.check.batch_size"].data.data_points
    assert size.count == batches * per_batch


class MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Any] = []

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.mark.parametrize("preference", ["cumulative", "delta"])
def test_otlp_exporter_sends_the_histograms(
    monkeypatch: pytest.MonkeyPatch, preference: str
) -> None:
    receiver = MetricsReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # exported on shutdown only
    otel = setup_otel(traces=False)
    assert otel.meter is not None
    try:
        metrics = Metrics(otel.meter, otel.histograms)
        metrics.record_calls([call(0.0003, checks=3), call(0.02, checks=1)])
    finally:
        otel.shutdown()
        server.stop(None)
    found = {
        m.name: m
        for request in receiver.requests
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        if sm.scope.name == SCOPE
        for m in sm.metrics
    }
    latency = found["pdp.decision.duration"]
    assert latency.unit == "s"
    want = f"AGGREGATION_TEMPORALITY_{preference.upper()}"
    assert latency.histogram.aggregation_temporality == metrics_pb2.AggregationTemporality.Value(
        want
    )
    (point,) = latency.histogram.data_points
    assert point.count == 2 and point.sum == pytest.approx(0.0203)
    assert (point.min, point.max) == (0.0003, 0.02)
    assert list(point.explicit_bounds) == list(LATENCY_BUCKETS_S)
    assert point.bucket_counts[LATENCY_BUCKETS_S.index(0.0005)] == 1
    assert point.bucket_counts[LATENCY_BUCKETS_S.index(0.025)] == 1
    assert {a.key: a.value.string_value for a in point.attributes} == {"outcome": "ok"}
    (size,) = found["pdp.check.batch_size"].histogram.data_points
    assert size.count == 2 and size.sum == 4
    assert "pdp.decisions" in found

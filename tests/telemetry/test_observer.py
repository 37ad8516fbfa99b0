from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.decision import BundleInfo
from pdp.model.loader import load_policy_dir
from pdp.telemetry import (
    Masker,
    MemorySink,
    Metrics,
    TelemetryObserver,
    TelemetryOptions,
    build_observer,
)
from pdp.telemetry import observer as observer_module
from pdp.telemetry.metrics import BATCH_BUCKETS, LATENCY_BUCKETS_S
from pdp.telemetry.otel import setup_otel

from .conftest import PARENT_SPAN_ID, TOKEN, TRACE_ID, ObsFactory


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def metrics() -> Iterator[tuple[Metrics, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield Metrics(provider.get_meter("test")), reader
    provider.shutdown()


def real_engine(tmp_path: Path) -> Engine:
    """A real engine compiled from a one-rule policy, under the bundle the metrics report."""
    (tmp_path / "p.yaml").write_text(
        "apiVersion: pdp/v1\nkind: ResourcePolicy\nmetadata: {id: notes}\n"
        "spec:\n  resource: note\n  actions: {read: {}}\n"
        "  rules:\n    - {id: r, actions: [read], effect: allow, roles: [reader]}\n"
    )
    policies = compile_policy_set(load_policy_dir(tmp_path))
    return Engine(policies, BundleInfo("platform", "1.4.0", "abc123"))


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    out.extend(m.data.data_points)
    return out


def test_span_joins_the_callers_trace_with_real_times(
    make_obs: ObsFactory, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    sink = MemorySink()
    observer = TelemetryObserver(sinks=[sink], tracer=provider.get_tracer("pdp"))
    obs = make_obs(start_time=1_700_000_000.25, latency_s=0.003)
    observer.on_check(obs)
    observer.close()
    (span,) = exporter.get_finished_spans()
    assert span.name == "pdp.Check"
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert span.start_time == 1_700_000_000_250_000_000
    assert span.end_time == span.start_time + 3_000_000
    attrs = dict(span.attributes or {})
    assert attrs["pdp.decision_id"] == "dec-1"
    assert attrs["pdp.bundle.revision"] == "abc123"
    assert attrs["pdp.decisions.allow"] == 2 and attrs["pdp.decisions.deny"] == 1
    assert TOKEN not in repr(attrs)
    (record,) = sink.records
    assert record["trace_id"] == TRACE_ID
    assert record["span_id"] == format(span.context.span_id, "016x")


def test_without_tracing_the_record_keeps_the_callers_trace_id(make_obs: ObsFactory) -> None:
    sink = MemorySink()
    observer = TelemetryObserver(sinks=[sink])
    observer.on_check(make_obs())
    observer.close()
    assert sink.records[0]["trace_id"] == TRACE_ID


def test_metrics(
    make_obs: ObsFactory, metrics: tuple[Metrics, InMemoryMetricReader], tmp_path: Path
) -> None:
    m, reader = metrics
    holder = EngineHolder()
    observer = TelemetryObserver(metrics=m)
    observer.watch_holder(holder)
    holder.swap(real_engine(tmp_path))
    observer.record_bundle_failure("signature does not verify")
    holder.record_failure("refused bundle from x: tests fail")  # seen through the holder
    for i in range(3):
        observer.on_check(make_obs(decision_id=f"d{i}"))
    observer.close()

    decisions = {
        (p.attributes["effect"], p.attributes["reason"]): p.value
        for p in points(reader, "pdp.decisions")
    }
    assert decisions == {("allow", "reader"): 6, ("deny", "missing_scope"): 3}
    (latency,) = points(reader, "pdp.decision.duration")
    assert latency.count == 3 and latency.sum == pytest.approx(3 * 0.00042)
    # pdp's own buckets (decisions take microseconds, not the SDK default's seconds).
    assert tuple(latency.explicit_bounds) == LATENCY_BUCKETS_S
    assert latency.bucket_counts[LATENCY_BUCKETS_S.index(0.0005)] == 3  # 0.00042 <= 0.0005
    assert dict(latency.attributes) == {"outcome": "ok"}
    (batch,) = points(reader, "pdp.check.batch_size")
    assert batch.count == 3 and batch.sum == 9
    assert tuple(batch.explicit_bounds) == BATCH_BUCKETS
    (activations,) = points(reader, "pdp.bundle.activations")
    assert activations.value == 1 and activations.attributes["bundle.revision"] == "abc123"
    (failures,) = points(reader, "pdp.bundle.failures")
    assert failures.value == 2
    assert holder.status.last_error == "refused bundle from x: tests fail"  # still recorded
    (active,) = points(reader, "pdp.bundle.active")
    assert active.value == 1
    assert dict(active.attributes) == {
        "bundle.name": "platform",
        "bundle.version": "1.4.0",
        "bundle.revision": "abc123",
    }


class BlockingSink(MemorySink):
    """Holds the writer inside `write` until released, so the queue fills."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.entered.set()
        self.release.wait(60)  # a cap for a broken test; every test releases it
        super().write(records)


def test_full_queue_drops_and_counts_without_blocking(
    make_obs: ObsFactory,
    metrics: tuple[Metrics, InMemoryMetricReader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    m, reader = metrics
    sink = BlockingSink()
    observer = TelemetryObserver(sinks=[sink], metrics=m, queue_size=2)
    obs = make_obs()
    observer.on_check(obs)
    assert sink.entered.wait(5)  # the writer holds the first record and is stuck
    for _ in range(1000):
        observer.on_check(obs)
    # 2 queued, the rest dropped, and every call returned while the writer is still stuck in
    # its first write (nothing written yet): the blocked writer never held up a caller.
    assert observer.dropped == 998
    assert (sink.records, sink.release.is_set()) == ([], False)
    sink.release.set()
    with caplog.at_level(logging.WARNING, logger="pdp.telemetry"):
        observer.close()
    assert len(sink.records) == 3
    (dropped,) = points(reader, "pdp.decision_log.dropped")
    assert dropped.value == 998 and dropped.attributes["reason"] == "queue_full"
    assert any("dropped 998 records" in r.getMessage() for r in caplog.records)


def test_drop_warning_is_periodic(
    make_obs: ObsFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(observer_module, "DROP_WARNING_INTERVAL_S", 3600.0)
    sink = BlockingSink()
    observer = TelemetryObserver(sinks=[sink], queue_size=1)
    with caplog.at_level(logging.WARNING, logger="pdp.telemetry"):
        observer.on_check(make_obs())
        assert sink.entered.wait(5)
        for _ in range(10):
            observer.on_check(make_obs())
        sink.release.set()
        deadline = time.monotonic() + 5
        while not any("dropped" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no drop warning"
            time.sleep(0.01)
        for _ in range(5):
            observer.on_check(make_obs())  # while the writer drains: some may still drop
        time.sleep(max(0.15, 3 * observer_module.POLL_INTERVAL_S))
        warnings_before_close = [r for r in caplog.records if "dropped" in r.getMessage()]
        observer.close()
    # One warning in the first interval, however many drops followed it.
    assert len(warnings_before_close) == 1


def test_close_flushes_everything_queued(make_obs: ObsFactory) -> None:
    sink = MemorySink()
    observer = TelemetryObserver(sinks=[sink], queue_size=100_000)
    n = 5000
    threads = [
        threading.Thread(
            target=lambda k=k: [
                observer.on_check(make_obs(decision_id=f"{k}-{i}")) for i in range(n // 5)
            ]
        )
        for k in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    observer.close()
    assert sink.closed
    assert observer.dropped == 0
    ids = {r["decision_id"] for r in sink.records}
    assert len(ids) == n
    # After close, intake stops (and is counted), nothing raises.
    observer.on_check(make_obs())
    assert observer.dropped == 1


def test_failing_sink_costs_records_not_the_writer(
    make_obs: ObsFactory, metrics: tuple[Metrics, InMemoryMetricReader]
) -> None:
    m, reader = metrics

    class Broken(MemorySink):
        def write(self, records: Sequence[dict[str, Any]]) -> None:
            raise OSError("disk full")

    good = MemorySink()
    observer = TelemetryObserver(sinks=[Broken(), good], metrics=m, masker=Masker())
    observer.on_check(make_obs())
    observer.close()
    assert len(good.records) == 1
    (dropped,) = points(reader, "pdp.decision_log.dropped")
    assert dropped.attributes["reason"] == "sink_error"


def test_telemetry_observer_satisfies_the_servers_observer_protocol(make_obs: ObsFactory) -> None:
    from pdp.server.hooks import Observer as ServerObserver

    observer: ServerObserver = TelemetryObserver()  # checked by mypy; at run time, by shape
    observer.on_check(make_obs())
    observer.close()
    assert observer.dropped == 0


def test_without_a_span_exporter_records_still_carry_trace_and_span_ids(
    make_obs: ObsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    sink = MemorySink()
    observer = build_observer(TelemetryOptions(otel=True, extra_sinks=(sink,)))
    observer.on_check(make_obs())
    observer.close()
    (record,) = sink.records
    assert record["trace_id"] == TRACE_ID  # the caller's trace, kept
    assert len(record["span_id"]) == 16 and record["span_id"] != PARENT_SPAN_ID


def test_the_configured_sampler_decides(
    make_obs: ObsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    otel = setup_otel(span_exporters=[exporter], metrics=False)
    sink = MemorySink()
    observer = TelemetryObserver(sinks=[sink], tracer=otel.tracer, otel=otel)
    observer.on_check(make_obs())
    observer.close()
    assert exporter.get_finished_spans() == ()  # sampled out: no span exported
    assert sink.records[0]["trace_id"] == TRACE_ID

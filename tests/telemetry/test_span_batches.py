"""The encoded-span batch processor against a real OTLP/gRPC receiver on loopback: batch
sizes, the timed export, the bounded queue, SDK spans, shutdown, the OTEL_BSP_* variables."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pdp.telemetry import span_batches
from pdp.telemetry.otel import make_resource
from pdp.telemetry.otlp_spans import EXPORT_METHOD, FastOTLPSpanExporter, _RawTraceClient
from pdp.telemetry.span_batches import DEFAULT_MAX_EXPORT_BATCH_SIZE, EncodedSpanProcessor


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[list[Span]] = []
        self.scopes: list[str] = []

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            spans = []
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.scopes.append(ss.scope.name)
                    spans.extend(ss.spans)
            self.requests.append(spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def names(self) -> list[str]:
        with self.lock:
            return [s.name for spans in self.requests for s in spans]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


SCOPE = InstrumentationScope("pdp")


def span(name: str) -> bytes:
    return Span(name=name, trace_id=b"\x01" * 16, span_id=b"\x02" * 8).SerializeToString()


def processor(endpoint: str, **kwargs: Any) -> EncodedSpanProcessor:
    exporter = FastOTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)
    return EncodedSpanProcessor(exporter, **kwargs)


def test_spans_go_out_in_requests_of_the_batch_size(receiver: tuple[Receiver, str]) -> None:
    rec, endpoint = receiver
    p = processor(endpoint, schedule_delay_ms=60_000, max_export_batch_size=3)
    try:
        p.add(make_resource(), SCOPE, [span(f"a{i}") for i in range(4)])
        p.add(make_resource(), SCOPE, [span(f"b{i}") for i in range(3)])
        assert p.force_flush()
        assert [len(r) for r in rec.requests] == [3, 3, 1]
        assert rec.names() == [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(3)]
        assert set(rec.scopes) == {"pdp"}
    finally:
        p.shutdown()


def test_a_full_batch_is_sent_without_waiting_for_the_delay(
    receiver: tuple[Receiver, str],
) -> None:
    rec, endpoint = receiver
    p = processor(endpoint, schedule_delay_ms=60_000, max_export_batch_size=5)
    try:
        p.add(make_resource(), SCOPE, [span("x")] * 4)
        time.sleep(0.3)
        assert rec.requests == []  # below a batch: waits for the delay
        p.add(make_resource(), SCOPE, [span("y")])
        deadline = time.monotonic() + 10
        while not rec.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [len(r) for r in rec.requests] == [5]
    finally:
        p.shutdown()


def test_spans_below_a_batch_go_out_after_the_delay(receiver: tuple[Receiver, str]) -> None:
    rec, endpoint = receiver
    p = processor(endpoint, schedule_delay_ms=50)
    try:
        p.add(make_resource(), SCOPE, [span("late")])
        deadline = time.monotonic() + 10
        while not rec.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rec.names() == ["late"]
    finally:
        p.shutdown()


def test_a_burst_beyond_the_queue_waits_for_the_exporter_and_loses_nothing(
    receiver: tuple[Receiver, str],
) -> None:
    rec, endpoint = receiver
    p = processor(endpoint, schedule_delay_ms=60_000, max_queue_size=4, max_export_batch_size=2)
    try:
        for batch in range(5):  # write batches arriving faster than one export
            p.add(make_resource(), SCOPE, [span(f"{batch}-{i}") for i in range(4)])
        p.force_flush()
        assert p.dropped == 0
        assert rec.names() == [f"{b}-{i}" for b in range(5) for i in range(4)]
    finally:
        p.shutdown()


class SlowReceiver(Receiver):
    """A collector that holds each export until released, or refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.refuse = False

    def Export(self, request: Any, context: Any) -> Any:
        if self.refuse:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused")
        self.release.wait(10)
        return super().Export(request, context)


def test_a_full_queue_waits_briefly_then_drops_counts_and_warns(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(slow, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    exporter = FastOTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    p = EncodedSpanProcessor(
        exporter, schedule_delay_ms=60_000, max_queue_size=4, max_export_batch_size=4
    )
    try:
        with caplog.at_level(logging.WARNING, logger="pdp.telemetry"):
            p.add(make_resource(), SCOPE, [span("s")] * 4)  # a full batch: exported at once
            wait_for(lambda: p._queued == 0)  # ... and held by the collector
            p.add(make_resource(), SCOPE, [span("t")] * 4)  # fills the queue
            t0 = time.monotonic()
            p.add(make_resource(), SCOPE, [span("u")] * 4)
            waited = time.monotonic() - t0
        # It waited for room (the full ADD_WAIT_S: the collector held the batch), then dropped
        # the excess. A lower bound only: a loaded machine can make the wait longer, not shorter.
        assert waited >= span_batches.ADD_WAIT_S
        assert p.dropped == 4 and "dropped 4 spans" in caplog.text
        slow.release.set()
        p.force_flush()
        assert slow.names() == ["s"] * 4 + ["t"] * 4

        slow.refuse = True  # the collector now fails every export
        p.add(make_resource(), SCOPE, [span("v")] * 4)
        wait_for(lambda: not p._healthy)
        slow.refuse, slow.release = False, threading.Event()
        p.add(make_resource(), SCOPE, [span("w")] * 4)
        wait_for(lambda: p._queued == 0)  # held by the collector
        p.add(make_resource(), SCOPE, [span("x")] * 4)  # fills the queue
        # The last export failed: no waiting at all. With an hour's wait for room, a call that
        # waited would hang the test (pytest-timeout) instead of returning with the drop.
        monkeypatch.setattr(span_batches, "ADD_WAIT_S", 3600.0)
        p.add(make_resource(), SCOPE, [span("y")] * 4)
        assert p.dropped == 8
        slow.release.set()
    finally:
        p.shutdown()
        server.stop(grace=None)


def wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_shutdown_sends_everything_queued_and_then_refuses(
    receiver: tuple[Receiver, str],
) -> None:
    rec, endpoint = receiver
    p = processor(endpoint, schedule_delay_ms=60_000, max_export_batch_size=10)
    p.add(make_resource(), SCOPE, [span(f"q{i}") for i in range(25)])
    p.shutdown()
    assert [len(r) for r in rec.requests] == [10, 10, 5]
    p.add(make_resource(), SCOPE, [span("after")])
    assert p.dropped == 1 and len(rec.names()) == 25


def test_sdk_spans_are_exported_as_the_sdk_encodes_them(receiver: tuple[Receiver, str]) -> None:
    rec, endpoint = receiver
    provider = TracerProvider(resource=make_resource())
    p = processor(endpoint, schedule_delay_ms=60_000)
    provider.add_span_processor(p)
    tracer = provider.get_tracer("pdp")
    with tracer.start_as_current_span("sdk-span", attributes={"k": "v", "n": 3}):
        pass
    provider.force_flush()
    ((got,),) = rec.requests
    provider.shutdown()
    assert got.name == "sdk-span"
    # The same message the SDK's own encoder makes of that span.
    assert got == _encode_span(provider_spans(got, tracer))


def provider_spans(got: Span, tracer: Any) -> Any:
    """An SDK span equal to the exported one, re-made with the same ids to compare encodings."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    ctx = SpanContext(
        int.from_bytes(got.trace_id, "big"),
        int.from_bytes(got.span_id, "big"),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return ReadableSpan(
        name="sdk-span",
        context=ctx,
        kind=SpanKind.INTERNAL,
        attributes={"k": "v", "n": 3},
        start_time=got.start_time_unix_nano,
        end_time=got.end_time_unix_nano,
        resource=tracer.resource,
        instrumentation_scope=tracer._instrumentation_scope,
    )


def test_the_otel_bsp_variables_are_read(
    receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, endpoint = receiver
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")
    p = processor(endpoint)
    try:
        p.add(make_resource(), SCOPE, [span("e")] * 5)
        p.force_flush()
        assert [len(r) for r in rec.requests] == [2, 2, 1]
    finally:
        p.shutdown()


def test_a_malformed_variable_falls_back_to_the_default(
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _rec, endpoint = receiver
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "lots")
    with caplog.at_level(logging.WARNING, logger="pdp.telemetry"):
        p = processor(endpoint)
    p.shutdown()
    assert p._max_batch == DEFAULT_MAX_EXPORT_BATCH_SIZE
    assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in caplog.text


def test_the_raw_client_survives_a_reconnect(receiver: tuple[Receiver, str]) -> None:
    rec, endpoint = receiver
    exporter = FastOTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)
    # What the SDK does on UNAVAILABLE: a new channel and client.
    exporter._initialize_channel_and_stub()
    assert isinstance(exporter._client, _RawTraceClient)
    p = EncodedSpanProcessor(exporter, schedule_delay_ms=60_000)
    p.add(make_resource(), SCOPE, [span("after-reconnect")])
    p.shutdown()
    assert rec.names() == ["after-reconnect"]
    service = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"]
    assert f"/{service.full_name}/Export" == EXPORT_METHOD

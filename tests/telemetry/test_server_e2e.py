"""A real gRPC server with the telemetry observer: a Check over the wire lands in the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pdp.model.request import CheckRequest
from pdp.server import ServerConfig, build_server
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.telemetry import MASKED, Masker, RotatingFileSink, TelemetryObserver
from pdp.telemetry.otel import setup_otel

from .conftest import (
    BUNDLE,
    PARENT_SPAN_ID,
    TOKEN,
    TRACE_ID,
    TRACEPARENT,
    request_dict,
    response_for,
)


class StubEngine:
    """Answers like the engine would; the server and telemetry are what is under test."""

    bundle = BUNDLE

    def check(self, request: CheckRequest) -> Any:
        return response_for(request, decision_id=f"dec-{request.request_id}")


class StubHolder:
    def __init__(self) -> None:
        self.current = StubEngine()
        self.status = None

    def require(self) -> StubEngine:
        return self.current

    def on_swap(self, listener: Any) -> None:
        pass


def test_check_over_grpc_is_logged_traced_and_masked(tmp_path: Path) -> None:
    log_file = tmp_path / "decisions.jsonl"
    spans = InMemorySpanExporter()
    otel = setup_otel(metrics=False, span_exporters=[spans])
    observer = TelemetryObserver(
        sinks=[RotatingFileSink(log_file)],
        masker=Masker(["resources[*].attr.ssn"]),
        tracer=otel.tracer,
        otel=otel,
    )
    holder = StubHolder()
    server = build_server(
        holder,  # type: ignore[arg-type]
        ServerConfig(listen=("127.0.0.1:0",), threads=2),
        observer=observer,
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            message = json_format.ParseDict(request_dict(request_id="e2e-1"), pb.CheckRequest())
            reply = stub.Check(
                message,
                metadata=(("traceparent", TRACEPARENT), ("authorization", f"Bearer {TOKEN}")),
                timeout=10,
            )
            assert reply.decision_id == "dec-e2e-1"
            bad = pb.CheckRequest(request_id="e2e-2")  # no principal: INVALID_ARGUMENT
            try:
                stub.Check(bad, timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=5)  # closes the observer: flushes the queue, the file, the spans

    text = log_file.read_text()
    assert TOKEN not in text and "123-45-6789" not in text and "authorization" not in text.lower()
    ok, failed = [json.loads(line) for line in text.splitlines()]
    assert ok["decision_id"] == "dec-e2e-1"
    assert ok["rpc"] == "/pdp.v1.DecisionService/Check"
    assert ok["caller"]["address"].startswith("ipv4:127.0.0.1:")
    assert ok["trace_id"] == TRACE_ID
    assert ok["request"]["resources"][0]["attr"]["ssn"] == MASKED
    assert ok["effects"] == {"allow": 2, "deny": 1}
    assert failed["error"]["code"] == "INVALID_ARGUMENT" and "request" not in failed
    (span, _failed_span) = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert format(span.context.span_id, "016x") == ok["span_id"]

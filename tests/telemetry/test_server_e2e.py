"""A real gRPC server with the telemetry observer: a Check over the wire lands in the file."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.loader import load_policy_dir
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
)

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: document}
spec:
  resource: document
  actions:
    read: {scopes: ["docs:read"]}
    delete: {scopes: ["docs:delete"]}
  rules:
    - id: readers
      actions: [read]
      effect: allow
      roles: [editor]
      obligations: {watermark: true}
"""


def real_holder(root: Path) -> EngineHolder:
    """A real engine over a one-policy tree: editors read; nobody here holds `docs:delete`."""
    (root / "document.yaml").write_text(POLICY)
    return EngineHolder(Engine(compile_policy_set(load_policy_dir(root)), BUNDLE))


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
    policies = tmp_path / "policies"
    policies.mkdir()
    holder = real_holder(policies)
    server = build_server(
        holder,
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
            assert reply.request_id == "e2e-1" and len(reply.decision_id) == 32
            bad = pb.CheckRequest(request_id="e2e-2")  # no principal: INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as caught:
                stub.Check(bad, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(grace=5)  # closes the observer: flushes the queue, the file, the spans

    text = log_file.read_text()
    assert TOKEN not in text and "123-45-6789" not in text and "authorization" not in text.lower()
    ok, failed = [json.loads(line) for line in text.splitlines()]
    assert ok["decision_id"] == reply.decision_id
    assert ok["rpc"] == "/pdp.v1.DecisionService/Check"
    assert ok["caller"]["address"].startswith("ipv4:127.0.0.1:")
    assert ok["trace_id"] == TRACE_ID
    assert ok["request"]["resources"][0]["attr"]["ssn"] == MASKED
    assert ok["effects"] == {"allow": 2, "deny": 1}
    assert failed["error"]["code"] == "INVALID_ARGUMENT" and "request" not in failed
    (span, _failed_span) = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert format(span.context.span_id, "016x") == ok["span_id"]

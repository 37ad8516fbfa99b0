"""A real OTLP/gRPC receiver on loopback gets the spans and decision logs pdp exports."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from pdp.telemetry import TelemetryOptions, build_observer

from .conftest import PARENT_SPAN_ID, TOKEN, TRACE_ID, ObsFactory


class Receiver(
    trace_service_pb2_grpc.TraceServiceServicer, logs_service_pb2_grpc.LogsServiceServicer
):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[Any] = []
        self.logs: list[Any] = []
        self.resources: list[dict[str, str]] = []

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                for rs in request.resource_spans:
                    self.resources.append(
                        {a.key: a.value.string_value for a in rs.resource.attributes}
                    )
                    for ss in rs.scope_spans:
                        self.spans.extend(ss.spans)
                return trace_service_pb2.ExportTraceServiceResponse()
            for rl in request.resource_logs:
                for sl in rl.scope_logs:
                    self.logs.extend(sl.log_records)
            return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "pdp-under-test")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    yield servicer
    server.stop(grace=None)


def test_spans_and_decision_logs_reach_a_real_otlp_receiver(
    receiver: Receiver, make_obs: ObsFactory
) -> None:
    observer = build_observer(
        TelemetryOptions(decision_log=("otlp",), mask=("principal.attr.email",), otel=True)
    )
    for i in range(3):
        observer.on_check(make_obs(decision_id=f"dec-{i}"))
    observer.close()  # flushes the span batch and the log export

    assert len(receiver.spans) == 3
    assert receiver.resources[0]["service.name"] == "pdp-under-test"
    for span in receiver.spans:
        assert span.name == "pdp.Check"
        assert span.trace_id.hex() == TRACE_ID
        assert span.parent_span_id.hex() == PARENT_SPAN_ID
    decision_ids = {
        a.value.string_value
        for s in receiver.spans
        for a in s.attributes
        if a.key == "pdp.decision_id"
    }
    assert decision_ids == {"dec-0", "dec-1", "dec-2"}

    assert len(receiver.logs) == 3
    for log in receiver.logs:
        body = log.body.string_value
        assert TOKEN not in body and "alice@acme.example" not in body
        record = json.loads(body)
        assert log.trace_id.hex() == TRACE_ID == record["trace_id"]
        assert log.span_id.hex() == record["span_id"]
        assert record["request"]["principal"]["id"] == "alice"

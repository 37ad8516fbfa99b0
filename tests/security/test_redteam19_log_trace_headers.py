"""Trace headers count against the decision-log queue's byte budget, over HTTP and gRPC.

The queue between the serving threads and the decision-log writer bounds large requests by
bytes (pdp.telemetry.intake). It counted the request body only, not what the record keeps of
the call's headers or metadata for the log record and the span: `traceparent`, `tracestate`
and `baggage` of up to 8 KB each over HTTP. A caller sending a small body with ~24 KB of trace
headers while the sink stalls was bounded by count alone: 240 MB over 10,000 queued calls.
Here the queue is a real server's observer that nobody drains (a stalled sink).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.http.api import HttpApi
from pdp.http.server import HttpServer
from pdp.model.loader import load_policy_dir
from pdp.model.request import Limits
from pdp.server import ServerConfig, build_server
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.server.wire import check_item
from pdp.telemetry.intake import SMALL_RECORD_BYTES, Intake, request_size

POLICIES = Path(__file__).resolve().parents[2] / "policies"
BUDGET = 256 * 1024  # the queue's byte budget under test
CALLS = 40


def _request(pad: int = 0) -> dict:
    return {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"],
                      "scopes": ["docs:read"], "attr": {"pad": "p" * pad}},
        "resources": [{"kind": "document", "id": "d1", "tenant": "acme",
                       "attr": {"owner": "alice", "classification": "internal"},
                       "actions": ["read"]}],
        "context": {"ip": "10.20.30.40"},
    }  # fmt: skip


def _trace_headers(i: int, each: int) -> dict[str, str]:
    """The three headers kept for the record and the span, `each` characters long: pdp keeps
    them as sent, a malformed `traceparent` too."""
    return {
        "traceparent": f"00-{i + 1:032x}-{i + 1:016x}-01".ljust(each, "f"),
        "tracestate": "v=" + "t" * (each - 2),
        "baggage": "k=" + "b" * (each - 2),
    }


@pytest.fixture(scope="module")
def holder() -> EngineHolder:
    return EngineHolder(Engine(compile_policy_set(load_policy_dir(POLICIES))))


class _Stalled(Intake):
    """The queue both observers are built on, which nobody drains: a stalled sink."""

    def close(self) -> None:
        pass


@pytest.fixture()
def stalled() -> Intake:
    return _Stalled(queue_size=10_000, max_bytes=BUDGET)


@pytest.fixture()
def http_port(holder: EngineHolder, stalled: Intake) -> Iterator[int]:
    server = HttpServer(HttpApi(holder, Limits(), 1 << 20, stalled), ("127.0.0.1:0",), grace=1.0)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


def test_http_trace_headers_count_against_the_budget(http_port: int, stalled: Intake) -> None:
    body = json.dumps(_request()).encode()
    assert len(body) < 1024  # the body alone is far below the large-request threshold
    connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
    try:
        for i in range(CALLS):
            headers = {"Content-Type": "application/json", **_trace_headers(i, 8000)}
            connection.request("POST", "/v1/check", body, headers=headers)
            reply = connection.getresponse()
            answer = json.loads(reply.read())
            assert reply.status == 200, answer
            assert answer["results"][0]["actions"]["read"]["effect"] == "EFFECT_ALLOW", answer
    finally:
        connection.close()
    # Every call decided; past the budget its record was dropped and counted.
    assert stalled.dropped > 0, "trace headers were queued by count only"
    assert stalled.pending + stalled.dropped == CALLS
    assert stalled.pending <= BUDGET // 24_000 + 1, stalled.pending


def test_grpc_metadata_counts_against_the_budget(holder: EngineHolder, stalled: Intake) -> None:
    # A 1 KB request is below the size a record is charged at least; with 7 KB of trace
    # metadata beside it (gRPC refuses more than 8 KB of metadata by default) the call is above.
    message = json_format.ParseDict(_request(pad=1_000), pb.CheckRequest())
    assert message.ByteSize() < SMALL_RECORD_BYTES
    server = build_server(holder, ServerConfig(listen=("127.0.0.1:0",)), observer=stalled)
    server.start()
    try:
        with grpc.insecure_channel(server.addresses[0]) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for i in range(CALLS):
                metadata = tuple(_trace_headers(i, 2300).items())
                reply = stub.Check(message, metadata=metadata, timeout=60)
                assert reply.results[0].actions["read"].effect == pb.EFFECT_ALLOW
    finally:
        server.stop(0)
    assert stalled.dropped > 0, "trace metadata was queued by count only"
    assert stalled.pending + stalled.dropped == CALLS
    assert stalled.pending <= BUDGET // (SMALL_RECORD_BYTES + 1_000 + 6_900) + 1, stalled.pending


def test_a_wire_item_counts_its_propagation_entries() -> None:
    """What a writer process is fed (`--telemetry-writer process`) carries only the trace
    entries of the metadata: those count, and the same on the way out as on the way in."""
    propagated = tuple(_trace_headers(0, 8000).items())
    item = check_item("/pdp.v1.DecisionService/Check", b"r" * 100, None, "", "", "ipv4:x", "",
                      propagated, 0.0, 0.0)  # fmt: skip
    assert request_size(item) >= 100 + 16_000
    queue = Intake(queue_size=10, max_bytes=BUDGET)
    queue.on_check(item)  # type: ignore[arg-type]
    assert queue._bytes == request_size(item)
    queue._popleft()
    assert queue._bytes == 0

"""Every decision-log record counts against the queue's byte budget, whatever its size.

The queue between the serving threads and the decision-log writer (pdp.telemetry.intake)
counted a record's bytes only from 16 KiB up: below that the count alone bounded it, so
10,000 queued calls of just under 16 KiB held ~160 MB while a sink stalled, and a small
request's reply (a batch with `explain`: 40 KB for a 2.5 KB request here) was counted for
nothing, ~400 MB over 10,000 calls. Now each record counts at least 4 KiB, one at or above it
its request, reply and trace headers, and past the budget a record is dropped and counted as
when the count was full. Here the queue is a real gRPC server's observer that nobody drains
(a stalled sink), both as the writer thread takes observations and as the writer process
takes wire items.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.server import ServerConfig, build_server
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.telemetry.intake import SMALL_RECORD_BYTES, Intake

POLICIES = Path(__file__).resolve().parents[2] / "policies"
BUDGET = 256 * 1024  # the queue's byte budget under test
CALLS = 60


class _Stalled(Intake):
    """The queue both observers are built on, which nobody drains: a stalled sink."""

    def close(self) -> None:
        pass


class _StalledWire(_Stalled):
    """The same, handed wire items as the writer-process observer is (`--telemetry-writer
    process`, the default on a multi-core machine)."""

    wire_only = True
    on_wire = Intake.on_check


@pytest.fixture(scope="module")
def holder() -> EngineHolder:
    return EngineHolder(Engine(compile_policy_set(load_policy_dir(POLICIES))))


@pytest.fixture(params=["object", "wire"])
def stalled(request: pytest.FixtureRequest) -> Intake:
    kind = _StalledWire if request.param == "wire" else _Stalled
    return kind(queue_size=10_000, max_bytes=BUDGET)


@pytest.fixture()
def stub(holder: EngineHolder, stalled: Intake) -> Iterator[pb_grpc.DecisionServiceStub]:
    # No decision cache: every call is decided afresh, as distinct calls would be.
    config = ServerConfig(listen=("127.0.0.1:0",), decision_cache=0)
    server = build_server(holder, config, observer=stalled)
    server.start()
    try:
        with grpc.insecure_channel(server.addresses[0]) as channel:
            yield pb_grpc.DecisionServiceStub(channel)
    finally:
        server.stop(0)


def _request(pad: int = 0, resources: int = 1, explain: bool = False) -> pb.CheckRequest:
    body: dict[str, Any] = {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"],
                      "scopes": ["docs:read"], "attr": {"pad": "p" * pad}},
        "resources": [{"kind": "document", "id": f"d{i}", "tenant": "acme",
                       "attr": {"owner": "bob"}, "actions": ["read", "write", "delete"]}
                      for i in range(resources)],
        "context": {"ip": "10.20.30.40"},
        "explain": explain,
    }  # fmt: skip
    return json_format.ParseDict(body, pb.CheckRequest())


def _call_all(stub: pb_grpc.DecisionServiceStub, message: pb.CheckRequest, n: int = CALLS) -> int:
    """Every call decided (the log's queue never fails one); the reply's size."""
    size = 0
    for i in range(n):
        message.request_id = f"r{i}"
        reply = stub.Check(message, timeout=60)
        assert reply.results[0].actions["read"].effect in (pb.EFFECT_ALLOW, pb.EFFECT_DENY)
        size = reply.ByteSize()
    return size


def test_requests_below_16_kib_are_bounded_by_bytes(stub, stalled: Intake) -> None:
    message = _request(pad=8_000)  # ~8 KB: counted by the queue's length alone before
    assert SMALL_RECORD_BYTES < message.ByteSize() < 16 * 1024
    _call_all(stub, message)
    assert stalled.dropped > 0, "8 KB requests were queued by count only"
    assert stalled.pending + stalled.dropped == CALLS
    assert stalled.pending <= BUDGET // (SMALL_RECORD_BYTES + 8_000) + 1, stalled.pending


def test_a_small_request_counts_its_reply(stub, stalled: Intake) -> None:
    message = _request(resources=40, explain=True)
    assert message.ByteSize() < SMALL_RECORD_BYTES
    reply = _call_all(stub, message)
    assert reply > 10 * message.ByteSize()  # what the record keeps of the call is the reply
    assert stalled.dropped > 0, "replies were queued for nothing"
    assert stalled.pending + stalled.dropped == CALLS
    assert stalled.pending <= BUDGET // reply + 1, stalled.pending


def test_the_smallest_records_count_too(stub, stalled: Intake) -> None:
    message = _request()
    assert message.ByteSize() < 1024
    _call_all(stub, message, 100)
    # Each counts SMALL_RECORD_BYTES: the budget holds 64 of them, not the 10,000 of the count.
    assert stalled.pending == BUDGET // SMALL_RECORD_BYTES, stalled.pending
    assert stalled.dropped == 100 - stalled.pending


def test_the_budget_is_given_back_as_records_leave() -> None:
    queue = Intake(queue_size=100, max_bytes=8 * SMALL_RECORD_BYTES)

    class Obs:  # what an observation object says of its size
        def __init__(self, size: int) -> None:
            self.request_size = size
            self.metadata = ()

    for _ in range(20):
        queue.on_check(Obs(10))  # type: ignore[arg-type]
    assert (queue.pending, queue.dropped) == (8, 12)
    while queue.pending:
        queue._popleft()
    large = 5 * SMALL_RECORD_BYTES
    queue.on_check(Obs(large))  # type: ignore[arg-type]  # 1 + 5 of 8 units
    queue.on_check(Obs(large))  # type: ignore[arg-type]  # 2 + 10 > 8: dropped
    assert (queue.pending, queue.dropped, queue._bytes) == (1, 13, large)
    queue._popleft()
    assert queue._bytes == 0
    for _ in range(8):
        queue.on_check(Obs(10))  # type: ignore[arg-type]
    assert (queue.pending, queue.dropped) == (8, 13)  # all of the budget back

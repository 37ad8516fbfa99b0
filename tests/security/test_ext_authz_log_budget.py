"""Envoy ext_authz decisions and the decision log's byte budget, over a real gRPC server.

The telemetry queue counts the bytes of a large Check request against its budget
(pdp.telemetry.intake), so a caller sending huge requests while the sink stalls cannot make
the server hold gigabytes. ext_authz observations said nothing of their size: they were
queued by count only, whatever Envoy sent (hundreds of headers, a path of 8 KiB). Now they
count their bytes as a Check does. The record of such a call stays small (only what the route
mapping decides on enters it) and still says what was decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from pdp.engine import EngineHolder
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from pdp.gateway.servicer import add_ext_authz
from pdp.server.hooks import Observer
from pdp.telemetry.intake import SMALL_RECORD_BYTES, Intake
from pdp.telemetry.observer import TelemetryObserver
from pdp.telemetry.sinks import RotatingFileSink
from tests.decision_logs import complete_records
from tests.gateway.test_servicer import KEYS, _request, _token, real_engine

HEADERS = 200  # of 1 KiB each
BUDGET = 1 << 20  # the queue's byte budget under test
CALLS = 30  # of ~210 KiB each: six times the budget


def _huge(tag: str) -> ext.CheckRequest:
    """An allowed read with 200 KiB of headers the mapping never reads and a path of ~8 KiB."""
    path = f"/v1/tenants/acme/kb/k1/docs/{tag}?pad=" + "p" * 8000
    req = _request(path, _token(KEYS))
    for i in range(HEADERS):
        req.attributes.request.http.headers[f"x-filler-{i}"] = f"{tag}-" + "h" * 1024
    return req


@contextmanager
def _gateway(tmp_path: Path, observer: Observer) -> Iterator[ext_grpc.AuthorizationStub]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    add_ext_authz(server, EngineHolder(real_engine(tmp_path)), observer=observer)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield ext_grpc.AuthorizationStub(channel)
    finally:
        server.stop(grace=None)


def test_huge_ext_authz_calls_count_against_the_queue_budget(tmp_path: Path) -> None:
    """The queue both observers are built on, with nobody draining it (a stalled sink): past
    the budget, observations of huge calls are dropped and counted; every call is decided."""
    queue = Intake(queue_size=10_000, max_bytes=BUDGET)
    size = _huge("d0").ByteSize()
    assert size > 200 * 1024 > SMALL_RECORD_BYTES
    with _gateway(tmp_path, queue) as stub:
        codes = [stub.Check(_huge(f"d{i}"), timeout=30).status.code for i in range(CALLS)]
    assert codes == [0] * CALLS  # allowed, every one
    assert queue.dropped > 0, "huge ext_authz calls were queued by count only"
    assert queue.pending + queue.dropped == CALLS
    assert queue.pending <= BUDGET // size + 1, queue.pending


@pytest.mark.parametrize("allowed", [True, False])
def test_the_record_of_a_huge_call_is_small_and_says_what_was_decided(
    tmp_path: Path, allowed: bool
) -> None:
    log = tmp_path / "decisions.jsonl"
    observer = TelemetryObserver(sinks=[RotatingFileSink(log)])
    request = _huge("d1")
    if not allowed:
        request.attributes.request.http.method = "DELETE"  # admins only
    try:
        with _gateway(tmp_path, observer) as stub:
            reply = stub.Check(request, timeout=30)
    finally:
        observer.close()
    assert reply.status.code == (0 if allowed else 7)
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    (record,) = complete_records(log)
    # Small beside the call, which no field of it repeats.
    assert len(lines[0]) < request.ByteSize() // 10, len(lines[0])
    assert "x-filler" not in lines[0] and "h" * 1024 not in lines[0]
    (decision,) = record["decisions"]
    action = "read" if allowed else "delete"
    assert (decision["kind"], decision["id"]) == ("document", "d1")
    assert decision["actions"][action]["effect"] == ("allow" if allowed else "deny")
    if allowed:
        assert decision["actions"]["read"]["rule"] == "member-read"
    assert record["effects"] == ({"allow": 1, "deny": 0} if allowed else {"allow": 0, "deny": 1})
    assert json.loads(lines[0])["rpc"] == record["rpc"]

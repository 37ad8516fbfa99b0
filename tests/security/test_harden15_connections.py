"""Connections and calls a caller can pile up on one `pdp serve` are bounded.

`--max-connections N`: each gRPC and HTTP listening address keeps N connections open; one more
is closed as soon as it is accepted, the N still get decisions, and once some close new ones
are admitted again. `--max-concurrent-rpcs N`: N gRPC calls run or wait at once; one more is
answered RESOURCE_EXHAUSTED at once instead of queueing, and the N are decided. Real servers
on loopback ports; every wait is for an event under a generous cap.
"""

from __future__ import annotations

import http.client
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server.conftest import ALICE, DOC, free_port

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .serving import CHECK, heavy_request, pdp_serve, wait_serving, write_heavy_policies
from .test_redteam_http_protocol import BODY, _connect, _read_until_closed

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp
from authzen.support import pdp_serve as pdp_serve_http

CAP = 3
WAIT_CAP = 60.0
REQUEST = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None).SerializeToString()
EVALUATION = "/access/v1/evaluation"


def _eventually(attempt: Callable[[], object], what: str) -> object:
    """`attempt()`'s first result that is not None, trying again until the cap."""
    end = time.monotonic() + WAIT_CAP
    while True:
        result = attempt()
        if result is not None:
            return result
        assert time.monotonic() < end, f"never {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve_http("--max-connections", str(CAP)) as p:
        yield p


# -- gRPC ----------------------------------------------------------------------------------------


def _channel(pdp: Pdp) -> grpc.Channel:
    # A subchannel pool of its own: one connection per channel, not one shared by all.
    return grpc.insecure_channel(pdp.grpc_address, options=[("grpc.use_local_subchannel_pool", 1)])


def _decide(ch: grpc.Channel) -> pb.CheckResponse | grpc.RpcError:
    try:
        return pb.CheckResponse.FromString(ch.unary_unary(CHECK)(REQUEST, timeout=10))
    except grpc.RpcError as err:
        return err


def _admitted_channel(pdp: Pdp) -> grpc.Channel | None:
    ch = _channel(pdp)
    if isinstance(_decide(ch), pb.CheckResponse):
        return ch
    ch.close()
    return None


def test_grpc_closes_connections_past_the_cap_and_admits_again(pdp: Pdp) -> None:
    held = [_eventually(lambda: _admitted_channel(pdp), "admitted") for _ in range(CAP)]
    try:
        for _ in range(2):
            extra = _channel(pdp)
            refused = _decide(extra)
            extra.close()
            assert isinstance(refused, grpc.RpcError), "a connection past the cap was decided"
            assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused
        host, port = pdp.grpc_address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=WAIT_CAP) as raw:
            assert _read_until_closed(raw) == b""  # closed before a byte is read or sent
        for ch in held:  # the first ones still get decisions
            reply = _decide(ch)
            assert isinstance(reply, pb.CheckResponse) and len(reply.results) == 1, reply
        held.pop().close()
        held.append(_eventually(lambda: _admitted_channel(pdp), "admitted after one closed"))
    finally:
        for ch in held:
            ch.close()


# -- HTTP ----------------------------------------------------------------------------------------


def _evaluate(conn: http.client.HTTPConnection) -> int:
    conn.request("POST", EVALUATION, body=BODY, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _admitted_http(pdp: Pdp) -> http.client.HTTPConnection | None:
    conn = pdp.connection()
    try:
        if _evaluate(conn) == 200:
            return conn  # kept open (keep-alive)
    except (ConnectionError, http.client.HTTPException):
        pass
    conn.close()
    return None


def test_http_closes_connections_past_the_cap_and_admits_again(pdp: Pdp) -> None:
    held = [_eventually(lambda: _admitted_http(pdp), "admitted") for _ in range(CAP)]
    try:
        for _ in range(2):
            with _connect(pdp) as raw:
                assert _read_until_closed(raw) == b""  # closed before it is read
        extra = pdp.connection()
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _evaluate(extra)
        extra.close()
        for conn in held:  # the first ones still get decisions, on their open connections
            assert _evaluate(conn) == 200
        held.pop().close()
        held.append(_eventually(lambda: _admitted_http(pdp), "admitted after one closed"))
        # Logged (at most once a minute); a reader thread copies the server's stderr, so wait.
        _eventually(lambda: True if "--max-connections" in "".join(pdp.stderr) else None, "logged")
    finally:
        for conn in held:
            conn.close()


# -- concurrent gRPC calls -----------------------------------------------------------------------


def _health(ch: grpc.Channel) -> health_pb2.HealthCheckResponse | grpc.RpcError:
    try:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
    except grpc.RpcError as err:
        return err


def test_calls_past_max_concurrent_rpcs_are_resource_exhausted(tmp_path: Path) -> None:
    policies = write_heavy_policies(tmp_path)
    port = free_port()
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--no-ext-authz"]
    with pdp_serve(*args, "--max-concurrent-rpcs", "2") as served:
        wait_serving(port, served)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            check = ch.unary_unary(CHECK)
            # Three calls of about a second of work each (a thousand times the gap between
            # their arrivals), sent at once on one connection: the server holds two and
            # refuses the third instead of queueing it. Which one is the third is the wire's
            # order (a health probe sent after two calls could overtake one of them, so the
            # probe is not the third call here).
            calls = [check.future(heavy_request(10, f"slow{i}"), timeout=300) for i in range(3)]
            errors = [f.exception(timeout=300) for f in calls]
            refused = [e for e in errors if e is not None]
            assert len(refused) == 1, refused
            assert refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused[0]
            for f, e in zip(calls, errors, strict=True):  # the two held are decided
                if e is None:
                    reply = pb.CheckResponse.FromString(f.result())
                    assert len(reply.results) == 10
                    assert all(r.actions["read"].effect == pb.EFFECT_ALLOW for r in reply.results)

            def served_again() -> health_pb2.HealthCheckResponse | None:
                got = _health(ch)
                return got if isinstance(got, health_pb2.HealthCheckResponse) else None

            _eventually(served_again, "served once the slow calls ended")
            light = pb.CheckResponse.FromString(check(heavy_request(1, "after"), timeout=120))
            assert light.results[0].actions["read"].effect == pb.EFFECT_ALLOW


def test_idle_grpc_connections_are_closed_and_calls_in_flight_are_not(tmp_path: Path) -> None:
    # With the connection cap, a connection nobody uses must not keep its slot for ever.
    # `--grpc-idle-timeout 1`: one that never completes its handshake, and one whose calls are
    # done, are closed; a call that runs for longer than that is not cut.
    policies = write_heavy_policies(tmp_path)
    with pdp_serve_http("--grpc-idle-timeout", "1", policies=policies) as p:
        host, port = p.grpc_address.rsplit(":", 1)
        silent = socket.create_connection((host, int(port)), timeout=WAIT_CAP)
        with silent:
            _read_until_closed(silent)  # grpc's own handshake timeout is 120 s

        ch = _channel(p)
        states: list[grpc.ChannelConnectivity] = []
        ch.subscribe(states.append)
        with ch:
            # ~2 s of deciding (20 heavy resources), twice the idle timeout.
            reply = pb.CheckResponse.FromString(
                ch.unary_unary(CHECK)(heavy_request(20, "idle"), timeout=WAIT_CAP)
            )
            assert len(reply.results) == 20
            assert all(r.actions["read"].effect == pb.EFFECT_ALLOW for r in reply.results)
            # Then idle: the server's GOAWAY takes the channel from READY back to IDLE.
            ready = states.index(grpc.ChannelConnectivity.READY)
            _eventually(
                lambda: True if grpc.ChannelConnectivity.IDLE in states[ready:] else None,
                "closed the idle connection",
            )

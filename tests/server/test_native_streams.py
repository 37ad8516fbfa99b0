"""The native transport's streaming calls and the grpcio behaviours callers rely on, each
against a real grpcio server where they can be compared: reflection (grpcurl list/describe
without -proto), health Watch through the drain and stop, compressed requests (gzip,
deflate, and every way they go wrong), a reset call's `is_active()` and callbacks, and the
order of `invocation_metadata()`. (Hostile streams: tests/security/test_native_streams.py.)"""

from __future__ import annotations

import gzip
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security.native_h2 import HEADERS, raw_call

from pdp.engine import Engine, EngineHolder
from pdp.server import PdpServer

from .conftest import running, running_native
from .test_server import grpcurl_binary

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native.server import NativeServer

HEALTH = "/grpc.health.v1.Health/Check"
HEALTH_HEADERS = [(n, HEALTH if n == ":path" else v) for n, v in HEADERS]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def native(engine: Engine) -> Iterator[NativeServer]:
    with running_native(EngineHolder(engine)) as server:
        yield server


@pytest.fixture(scope="module")
def grpcio(engine: Engine) -> Iterator[PdpServer]:
    with running(EngineHolder(engine)) as s:
        yield s


def _grpcurl(port: int, *args: str) -> str:
    done = subprocess.run(
        [grpcurl_binary(), "-plaintext", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpcurl_lists_and_describes_through_reflection(
    native: NativeServer, grpcio: PdpServer
) -> None:
    """The README's tour without -proto: the same services and descriptions as on grpcio."""
    listed = _grpcurl(native.port, "list")
    assert listed == _grpcurl(grpcio.port, "list")
    assert "pdp.v1.DecisionService" in listed and "grpc.health.v1.Health" in listed
    for symbol in ("pdp.v1.DecisionService", "pdp.v1.CheckRequest", "grpc.health.v1.Health"):
        assert _grpcurl(native.port, "describe", symbol) == _grpcurl(
            grpcio.port, "describe", symbol
        )


def _reflect(port: int, requests: list[reflection_pb2.ServerReflectionRequest]) -> list[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        return list(stub.ServerReflectionInfo(iter(requests), timeout=30))


def test_reflection_answers_as_on_grpcio(native: NativeServer, grpcio: PdpServer) -> None:
    """One stream, several requests (a known symbol, an unknown one, a file by name), the
    same responses in the same order."""
    R = reflection_pb2.ServerReflectionRequest
    requests = [
        R(list_services=""),
        R(file_containing_symbol="pdp.v1.DecisionService"),
        R(file_containing_symbol="no.such.Symbol"),
        R(file_by_filename="grpc/health/v1/health.proto"),
    ]
    ours = _reflect(native.port, requests)
    assert len(ours) == len(requests)
    assert ours == _reflect(grpcio.port, requests)


def _watch(port: int, service: str = "") -> tuple[list[Any], threading.Thread, Any]:
    """A Watch read on a thread: each status, then (code, details) when it ends."""
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    stream = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=service))
    seen: list[Any] = []

    def read() -> None:
        try:
            for reply in stream:
                seen.append(reply.status)
        except grpc.RpcError as exc:
            seen.append((exc.code(), exc.details()))
        finally:
            ch.close()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return seen, thread, stream


def _until(check: Any, what: str, cap: float = 30) -> None:
    end = time.monotonic() + cap
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.01)


def test_health_watch_of_an_unknown_service_and_its_end(native: NativeServer) -> None:
    """SERVICE_UNKNOWN as grpc_health says it; a watcher the client cancels is gone from the
    server (its slot given back, no call left open)."""
    seen, thread, stream = _watch(native.port, "no.such.Service")
    _until(lambda: seen, "the first status")
    assert seen == [health_pb2.HealthCheckResponse.SERVICE_UNKNOWN]
    stream.cancel()
    thread.join(30)
    _until(lambda: native._streams.open_calls() == 0, "the cancelled watcher forgotten")


def _framed(flag: int, body: bytes) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(body)) + body


HEALTH_REQUEST = health_pb2.HealthCheckRequest(service="").SerializeToString()
BOMB = gzip.compress(b"\x0a" + b"\x00" * (8 << 20))  # 8 MiB of zeros in ~8 KB


def _compressed_cases() -> dict[str, tuple[list[tuple[str, str]], bytes]]:
    gz = gzip.compress(HEALTH_REQUEST)
    return {
        "gzip": ([("grpc-encoding", "gzip")], _framed(1, gz)),
        "deflate": ([("grpc-encoding", "deflate")], _framed(1, zlib.compress(HEALTH_REQUEST))),
        "gzip header, not compressed": ([("grpc-encoding", "gzip")], _framed(0, HEALTH_REQUEST)),
        "compressed flag, identity": ([("grpc-encoding", "identity")], _framed(1, HEALTH_REQUEST)),
        "compressed flag, no encoding": ([], _framed(1, HEALTH_REQUEST)),
        "unknown encoding": ([("grpc-encoding", "br")], _framed(1, HEALTH_REQUEST)),
        "unknown encoding, not compressed": ([("grpc-encoding", "snappy")], _framed(0, HEALTH_REQUEST)),
        "gzip bomb": ([("grpc-encoding", "gzip")], _framed(1, BOMB)),
        "gzip cut short": ([("grpc-encoding", "gzip")], _framed(1, gz[:-6])),
        "not gzip": ([("grpc-encoding", "gzip")], _framed(1, b"not gzip at all")),
        "raw deflate": ([("grpc-encoding", "deflate")], _framed(1, zlib.compress(HEALTH_REQUEST)[2:-4])),
    }  # fmt: skip


def _answer(port: int, extra: list[tuple[str, str]], body: bytes) -> tuple[str | None, ...]:
    got = raw_call(port, HEALTH_HEADERS + extra, [body])
    return got.get("grpc-status"), got.get("grpc-accept-encoding")


def test_compressed_requests_answer_as_on_grpcio(native: NativeServer, grpcio: PdpServer) -> None:
    """gzip and deflate accepted, grpc-accept-encoding advertised, and the same status for
    every way compression goes wrong (a bomb is RESOURCE_EXHAUSTED at --max-message-bytes,
    an unknown encoding or a compressed flag without one INTERNAL)."""
    cases = _compressed_cases()
    ours = {name: _answer(native.port, extra, body) for name, (extra, body) in cases.items()}
    theirs = {name: _answer(grpcio.port, extra, body) for name, (extra, body) in cases.items()}
    assert ours == theirs
    # grpcio answers OK to a flag byte neither 0 nor 1 (and hands its servicer something);
    # the native transport refuses the malformed message instead.
    assert _answer(native.port, [], _framed(2, HEALTH_REQUEST))[0] == "13"
    assert ours["gzip"] == ("0", "identity, deflate, gzip")
    assert ours["gzip bomb"][0] == "8"
    assert ours["unknown encoding"][0] == ours["compressed flag, identity"][0] == "13"
    # and through a grpc client's own compression
    for server in (native, grpcio):
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            reply = stub.Check(health_pb2.HealthCheckRequest(), compression=grpc.Compression.Gzip)
            assert reply.status == SERVING


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=40),
    squeeze=st.booleans(),
    cut=st.integers(min_value=0, max_value=8),
    encoding=st.sampled_from(["gzip", "deflate", "identity", "x-zip", ""]),
    flag=st.integers(min_value=0, max_value=1),  # 2..255: see above
)
def test_random_compressed_requests_get_grpcios_status(
    native: NativeServer,
    grpcio: PdpServer,
    data: bytes,
    squeeze: bool,
    cut: int,
    encoding: str,
    flag: int,
) -> None:
    body = data
    if squeeze:
        body = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    body = body[: max(0, len(body) - cut)]
    extra = [("grpc-encoding", encoding)] if encoding else []
    framed = _framed(flag, body)
    assert _answer(native.port, extra, framed)[0] == _answer(grpcio.port, extra, framed)[0]


def test_a_reset_call_is_no_longer_active_and_its_callbacks_run(native: NativeServer) -> None:
    """A client resets a Check while it is decided: the servicer's context.is_active() turns
    False (what DecisionService reads while draining) and its add_callback callbacks run then,
    while the decision still runs, as on grpcio."""
    deciding, seen = threading.Event(), []
    original = native._methods[0]

    def slow(body: bytes, context: Any) -> bytes:
        assert context.add_callback(lambda: seen.append("callback"))
        deciding.set()
        end = time.monotonic() + 30
        while context.is_active() and time.monotonic() < end:
            time.sleep(0.01)
        seen.append(context.is_active())
        while "callback" not in seen and time.monotonic() < end:  # at the reset, not after
            time.sleep(0.01)
        seen.append("decided")
        assert not context.add_callback(lambda: None)  # the call has ended, as grpcio says
        return original(body, context)

    native._methods[0] = slow
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        with socket.create_connection(("127.0.0.1", native.port), timeout=30) as sock:
            conn.initiate_connection()
            conn.send_headers(1, HEADERS)
            conn.send_data(1, _framed(0, b""), end_stream=True)
            sock.sendall(conn.data_to_send())
            assert deciding.wait(30)
            conn.reset_stream(1)
            sock.sendall(conn.data_to_send())
            _until(lambda: "decided" in seen, "the call to end")
    finally:
        native._methods[0] = original
    # the callback ran at the reset, before the decision ended (in either order with the
    # servicer's look at is_active())
    assert sorted(map(str, seen[:2])) == ["False", "callback"] and seen[2:] == ["decided"]


def _metadata_order(
    server: Any, monkeypatch: pytest.MonkeyPatch, headers: list[tuple[str, str]]
) -> Any:
    seen: list[Any] = []
    decide = server.decisions._decide

    def spying(data: bytes, observed: bool, context: Any) -> Any:
        seen.append(tuple((k, v) for k, v in context.invocation_metadata()))
        return decide(data, observed, context)

    monkeypatch.setattr(server.decisions, "_decide", spying)
    raw_call(server.port, HEADERS + headers, [_framed(0, b"")])
    monkeypatch.undo()
    assert len(seen) == 1
    return seen[0]


def test_invocation_metadata_in_grpcios_order(
    native: NativeServer, grpcio: PdpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grpcio puts user-agent first, the rest as sent (repeated keys in place)."""
    headers = [("x-one", "1"), ("user-agent", "probe/1"), ("x-two", "2"), ("x-one", "3")]
    ours = _metadata_order(native, monkeypatch, headers)
    assert ours == _metadata_order(grpcio, monkeypatch, headers)
    assert ours == (("user-agent", "probe/1"), ("x-one", "1"), ("x-two", "2"), ("x-one", "3"))


def _pings(port: int, calls_between: bool) -> list[Any]:
    """Eight PINGs 50 ms apart (a Health Check between each if `calls_between`): what came
    back after each, up to the first GOAWAY (its error code and debug data)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    seen: list[Any] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        conn.initiate_connection()
        for i in range(8):
            if calls_between:
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, HEALTH_HEADERS)
                conn.send_data(sid, _framed(0, b""), end_stream=True)
            conn.ping(struct.pack(">Q", i))
            sock.sendall(conn.data_to_send())
            acked = False
            while not acked:
                data = sock.recv(65536)
                if not data:
                    return [*seen, "closed"]
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.PingAckReceived):
                        acked = True
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        seen.append((i, ev.error_code, ev.additional_data))
                        return seen
            seen.append(i)
            time.sleep(0.05)
    return seen


def test_too_many_pings_get_grpcios_goaway(native: NativeServer, grpcio: PdpServer) -> None:
    """grpcio's ping policy: on a connection with no calls, the fourth PING in quick
    succession is GOAWAY ENHANCE_YOUR_CALM "too_many_pings"; replies sent between PINGs
    clear the strikes."""
    ours, theirs = _pings(native.port, False), _pings(grpcio.port, False)
    assert ours[-1] == theirs[-1] == (3, 11, b"too_many_pings")
    assert _pings(native.port, True) == _pings(grpcio.port, True) == list(range(8))

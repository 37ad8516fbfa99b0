"""`pdp serve --transport native`: C parsing network input, attacked through a real server.

Every hostile request gets its gRPC status (or its stream reset, or its connection closed),
none a decision, and the server keeps answering: oversized messages, compression, other
paths, methods and content types, zero, two or truncated messages, huge header blocks,
HTTP/1.1 bytes, clients gone mid-call, and random bytes after the connection preface. Then
the drain (SIGTERM), the options the transport refuses, and `--workers 2`.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server.conftest import ALICE, DOC, free_port, write_policies

from pdp.cli.main import main
from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .native_h2 import CHECK, HEADERS, frame, raw_call, raw_calls, with_header
from .real_pdp import Served, pdp_serve
from .serving import (
    HEAVY_PRINCIPAL,
    health,
    heavy_request,
    heavy_resources,
    wait_serving,
    write_heavy_policies,
)
from .serving import pdp_serve as pdp_serve_raw

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

MAX_MESSAGE = 64 * 1024
MAX_CALLS = 3  # --max-concurrent-rpcs
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
PLAN = CHECK.replace("/Check", "/Plan")
GOOD = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}]).SerializeToString()


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_heavy_policies(write_policies(tmp_path_factory.mktemp("native-sec")))


@pytest.fixture(scope="module")
def served(policies: Path) -> Iterator[Served]:
    # One decision thread: calls are answered in the order taken, so a call answered means
    # every earlier one is (several threads: test_native_threads.py).
    flags = ["--transport", "native", "--workers", "1", "--max-message-bytes", str(MAX_MESSAGE),
             "--max-string-length", "100", "--grpc-idle-timeout", "1",
             "--max-concurrent-rpcs", str(MAX_CALLS), "--threads", "1"]  # fmt: skip
    with pdp_serve(policies, *flags, "--no-rate-limit-service") as s:
        yield s


def _slow(n: int, tag: str) -> bytes:
    """A call that takes a while to decide (the heavy policy), within --max-string-length."""
    principal = {**HEAVY_PRINCIPAL, "attr": {**HEAVY_PRINCIPAL["attr"], "text": "a" * 100}}
    return request_to_proto(principal, heavy_resources(n, tag)).SerializeToString()


def _port(s: Served) -> int:
    return int(s.address.rsplit(":", 1)[1])


def _grpc(port: int, payload: bytes, path: str = CHECK, **kw: object) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            ch.unary_unary(path)(payload, timeout=30, **kw)
            return "0"
        except grpc.RpcError as exc:
            return str(exc.code().value[0])


def _status(port: int, headers: list[tuple[str, str]], chunks: list[bytes]) -> str:
    got = raw_call(port, headers, chunks)
    return "reset" if "reset" in got else got.get("grpc-status", "none")


def _still_answers(s: Served) -> None:
    assert s.proc.poll() is None, "".join(s.log)
    assert _grpc(_port(s), GOOD) == "0"


def test_hostile_requests_each_get_their_status(served: Served) -> None:
    port, framed = _port(served), frame(GOOD)
    cases = {
        "message over --max-message-bytes": ("8", lambda: _grpc(port, b"\x0a" * (MAX_MESSAGE + 1))),
        "gzip": ("0", lambda: _grpc(port, GOOD, compression=grpc.Compression.Gzip)),
        "not protobuf": ("3", lambda: _grpc(port, b"\xff\xff\xff")),
        "another path": ("12", lambda: _status(port, with_header(":path", "/x.Y/Z"), [framed])),
        "GET": ("12", lambda: _status(port, with_header(":method", "GET"), [])),
        "text/plain": ("12", lambda: _status(port, with_header("content-type", "text/plain"), [framed])),
        "grpc-encoding: br": ("13", lambda: _status(port, [*HEADERS, ("grpc-encoding", "br")], [framed])),
        "two messages": ("13", lambda: _status(port, HEADERS, [framed + framed])),
        "no message": ("13", lambda: _status(port, HEADERS, [])),
        "3 bytes": ("13", lambda: _status(port, HEADERS, [framed[:3]])),
        "length too long": ("13", lambda: _status(port, HEADERS, [framed[:-1]])),
        "length over the limit": ("8", lambda: _status(port, HEADERS, [b"\x00\xff\xff\xff\xff" + GOOD])),
        "compressed flag": ("13", lambda: _status(port, HEADERS, [b"\x01" + framed[1:]])),
        "20 KB header": ("reset", lambda: _status(port, [*HEADERS, ("x-a", "a" * 20_000)], [framed])),
        "300 headers": ("reset", lambda: _status(port, HEADERS + [(f"x-{i}", "a" * 60) for i in range(300)], [framed])),
        "split frames": ("0", lambda: _status(port, HEADERS, [framed[:2], framed[2:9], framed[9:]])),
    }  # fmt: skip
    got = {name: run() for name, (_want, run) in cases.items()}
    assert got == {name: want for name, (want, _run) in cases.items()}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        while sock.recv(65536):  # the server's SETTINGS, its GOAWAY, then the close
            pass
    _still_answers(served)


def test_services_turned_off_are_unimplemented(served: Served) -> None:
    """--no-ext-authz and --no-rate-limit-service leave their paths out, as on grpcio."""
    for path in (
        "/envoy.service.auth.v3.Authorization/Check",
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    ):
        assert _grpc(_port(served), b"", path=path) == "12", path


def test_the_grpc_message_is_percent_encoded(served: Served) -> None:
    """pdp's error text may hold any character; in a header it travels percent-encoded."""
    msg = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}])
    msg.principal.attr["é%\n"] = "x" * 101  # over --max-string-length: the key is named
    got = raw_call(_port(served), HEADERS, [frame(msg.SerializeToString())])
    assert got["grpc-status"] == "8", got
    assert "principal.attr.%C3%A9%25%0A: string longer than 100" in got["grpc-message"], got
    assert got.get("grpc-status-details-bin")


def test_clients_gone_mid_call(served: Served) -> None:
    """Connections cut at every stage: before the preface ends, inside a header block, inside
    a message, and while a slow decision runs (reset by SO_LINGER 0)."""
    port = _port(served)
    import h2.connection

    slow = _slow(10, "gone")
    for cut in ("preface", "headers", "message", "deciding"):
        conn = h2.connection.H2Connection()
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, HEADERS)
        conn.send_data(sid, frame(slow), end_stream=True)
        data = conn.data_to_send()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            upto = {"preface": 10, "headers": 40, "message": len(data) - 20}.get(cut, len(data))
            sock.sendall(data[:upto])
    _still_answers(served)


def test_calls_past_max_concurrent_rpcs_are_refused(served: Served) -> None:
    """A slow call and five more, in one write: the first three are queued or deciding
    (--max-concurrent-rpcs 3), the other three RESOURCE_EXHAUSTED at once."""
    _still_answers(served)  # answered in order: nothing an earlier test sent is left queued
    slow = _slow(5, "max-calls")
    got = raw_calls(_port(served), [slow] + [GOOD] * 5)
    assert got == ["0"] * MAX_CALLS + ["8"] * 3
    _still_answers(served)


def test_a_silent_connection_is_closed(served: Served) -> None:
    """--grpc-idle-timeout also bounds a handshake: a client that connects and sends nothing
    is closed (the read below ends), and so is one that stops mid-request."""
    port = _port(served)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(2)]
    socks[1].sendall(PREFACE[:10])
    for sock in socks:  # both idle at once: one wait
        with sock:
            while sock.recv(65536):  # the server's SETTINGS, its GOAWAY, then the close
                pass
    _still_answers(served)


# A connection whose socket another descriptor still shares when the server closes it: what
# a fork (git at start-up) or `--workers`' connection dealing (which dups every socket) does.
_SHARED_SOCKET = """
import os, socket, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdp.engine import EngineHolder
from pdp.server import ServerConfig
from pdp.server.native.server import NativeServer

server = NativeServer(EngineHolder(), ServerConfig(listen=("127.0.0.1:0",)))
server.start()
client = socket.create_connection(("127.0.0.1", server.port))
settings = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty SETTINGS frame
client.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + settings)
held = None
while held is None:
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:
            continue
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            continue
        try:
            mine = s.getpeername() == client.getsockname()
        except OSError:
            mine = False
        if mine:
            held = s
            break
        s.close()
client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\0\\0\\0\\0\\0\\0\\0")
client.close()  # the server closes its descriptor; `held` keeps the socket open
time.sleep(0.5)
for _ in range(20):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
held.close()
server.stop(0)
print("ok")
"""


def test_a_closed_connection_whose_socket_is_shared_is_forgotten() -> None:
    """The I/O thread takes a connection out of its epoll set before closing it: closed
    while a dup held the socket, its registration stayed, and epoll reported events for the
    freed connection (workers crashed at start under load, while git ran in a fork)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SHARED_SOCKET], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


_frames = st.builds(
    lambda length, kind, flags, sid, payload: (
        struct.pack(">I", length)[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload
    ),
    st.integers(0, 200),
    st.integers(0, 12),
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=200),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(st.binary(max_size=600), st.lists(_frames, max_size=6).map(b"".join)))
def test_random_bytes_after_the_preface(served: Served, tail: bytes) -> None:
    with socket.create_connection(("127.0.0.1", _port(served)), timeout=30) as sock:
        sock.sendall(PREFACE + tail)
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    assert served.proc.poll() is None, "".join(served.log)


def test_still_answering_after_the_random_bytes(served: Served) -> None:
    _still_answers(served)


def test_the_transport_variable_is_read_and_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], policies: Path
) -> None:
    monkeypatch.setenv("PDP_TRANSPORT", "native")
    assert main(["serve", "--policies", str(policies), "--print-config"]) == 0
    shown = capsys.readouterr().out
    assert 'transport: "native"' in shown and "threads: 4  # default for" in shown, shown
    monkeypatch.setenv("PDP_TRANSPORT", "quic")
    assert main(["serve", "--policies", str(policies)]) == 2
    assert "PDP_TRANSPORT" in capsys.readouterr().err


def test_sigterm_drains(policies: Path) -> None:
    """SIGTERM: health NOT_SERVING, a new Check or Plan UNAVAILABLE, the call in flight answered, exit 0.
    The call is known to be in flight when a health call (answered by the same decision thread,
    after it: --threads 1) times out."""
    port = free_port()
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--transport",
            "native", "--workers", "1", "--grace", "60", "--threads", "1"]  # fmt: skip
    with pdp_serve_raw(*argv) as served:
        wait_serving(port, served)
        result: list[str] = []
        slow = heavy_request(20, "drain")
        worker = threading.Thread(target=lambda: result.append(_grpc(port, slow)))
        worker.start()
        while health(port, timeout=0.5) is not None:  # answered: the slow call is not in yet
            assert worker.is_alive(), result
        served.proc.send_signal(signal.SIGTERM)
        served.wait_for("draining")
        assert _grpc(port, GOOD) == str(grpc.StatusCode.UNAVAILABLE.value[0])
        plan = pb.PlanRequest(resource_kind="document", action="read").SerializeToString()
        assert _grpc(port, plan, path=PLAN) == str(grpc.StatusCode.UNAVAILABLE.value[0])
        assert health(port, timeout=60) == health_pb2.HealthCheckResponse.NOT_SERVING
        worker.join(120)
        assert result == ["0"]
        assert served.exit_code() == 0, served.output()


@pytest.mark.slow
def test_two_workers_serve_and_stop(policies: Path) -> None:
    """Two workers, each on both ports (SO_REUSEPORT; the round-robin deal per port)."""
    port, other = free_port(), free_port()
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--listen",
            f"127.0.0.1:{other}", "--transport", "native", "--workers", "2"]  # fmt: skip
    with pdp_serve_raw(*argv) as served:
        wait_serving(port, served)
        served.wait_for("listening on", count=4)
        assert [_grpc(port, GOOD) for _ in range(8)] == ["0"] * 8  # new connections, both workers
        assert [_grpc(other, GOOD) for _ in range(8)] == ["0"] * 8
        served.proc.send_signal(signal.SIGTERM)
        assert served.exit_code() == 0, served.output()

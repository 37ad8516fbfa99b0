"""`pdp serve --transport native` on several listeners at once, two TCP and a Unix socket,
against hostile input on the Unix socket (whose sessions make nghttp2's header checks in
`_h2.c`, to let grpc-go's :authority through: see relaxed_header_ok), and the socket file's
life as grpcio leads it (a stale socket replaced, any other file refused, removed at exit).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server.conftest import ALICE, DOC, free_port, write_policies

from pdp.cli.main import main
from pdp.client._convert import request_to_proto

from .native_h2 import CHECK, HEADERS, frame, raw_call, with_header
from .serving import Served, wait_serving
from .serving import pdp_serve as pdp_serve_raw

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

GOOD = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}]).SerializeToString()
SERVING = health_pb2.HealthCheckResponse.SERVING
CAP_S = 120.0


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies(tmp_path_factory.mktemp("native-unix"))


def _stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a server killed before its stop leaves it."""
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))


def _health(target: str) -> int | None:
    with grpc.insecure_channel(target) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return None
        return reply.status


def _check(target: str) -> str:
    with grpc.insecure_channel(target) as ch:
        try:
            ch.unary_unary(CHECK)(GOOD, timeout=30)
            return "0"
        except grpc.RpcError as exc:
            return str(exc.code().value[0])


@pytest.fixture(scope="module")
def served(
    policies: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Served, list[str], str]]:
    sock = tmp_path_factory.mktemp("unix") / "pdp.sock"
    _stale_socket(sock)
    ports = [free_port(), free_port()]
    argv = ["--policies", str(policies), "--transport", "native", "--workers", "1",
            "--listen", f"127.0.0.1:{ports[0]}", "--listen", f"127.0.0.1:{ports[1]}",
            "--unix", str(sock)]  # fmt: skip
    with pdp_serve_raw(*argv) as s:
        wait_serving(ports[0], s)
        yield s, [f"127.0.0.1:{p}" for p in ports] + [f"unix:{sock}"], str(sock)


def test_every_listener_answers(served: tuple[Served, list[str], str]) -> None:
    s, targets, _ = served
    s.wait_for("listening on", count=3)
    assert [(_health(t), _check(t)) for t in targets] == [(SERVING, "0")] * 3


def _status(where: int | str, headers: list[tuple[str, str]]) -> str:
    got = raw_call(where, headers, [frame(GOOD)], as_given=True)
    return "reset" if "reset" in got else got.get("grpc-status", got.get("closed", "none"))


HOSTILE = {
    "an upper-case name": [*HEADERS, ("X-Upper", "1")],
    "a connection header": [*HEADERS, ("connection", "keep-alive")],
    "transfer-encoding": [*HEADERS, ("transfer-encoding", "chunked")],
    "te: gzip": with_header("te", "gzip"),
    "an unknown pseudo-header": [(":protocol", "x"), *HEADERS],
    "a control character in a value": [*HEADERS, ("x-a", "a\x01b")],
    "a newline in a value": [*HEADERS, ("x-a", "a\r\nx-b: c")],
    "a space in a name": [*HEADERS, ("x a", "1")],
    "no :path": [h for h in HEADERS if h[0] != ":path"],
    "GET": with_header(":method", "GET"),
    "a path in other letters": with_header(":path", CHECK.upper()),
    "a percent-encoded path": with_header(":path", CHECK.replace("/Check", "/%43heck")),
    "a path with a query": with_header(":path", CHECK + "?x=1"),
    "20 KB of header": [*HEADERS, ("x-a", "a" * 20_000)],
    "the same header twice": [*HEADERS, ("x-a", "1"), ("x-a", "2")],
    "a second :path": [*HEADERS, (":path", "/x.Y/Z")],
}


def test_hostile_headers_on_the_unix_socket_fare_as_on_tcp(
    served: tuple[Served, list[str], str],
) -> None:
    """Each refused (or answered) on the Unix socket as nghttp2's own checks answer it on TCP;
    only the :authority grpc-go gives a Unix socket (its path) is taken there."""
    s, targets, path = served
    port = int(targets[0].rsplit(":", 1)[1])
    tcp = {name: _status(port, headers) for name, headers in HOSTILE.items()}
    unix = {name: _status(path, headers) for name, headers in HOSTILE.items()}
    refused = {name for name, got in tcp.items() if got != "0"}
    assert refused >= set(HOSTILE) - {"the same header twice"}, tcp
    assert {n: g != "0" for n, g in unix.items()} == {n: g != "0" for n, g in tcp.items()}, unix
    go_style = with_header(":authority", path)
    assert (_status(path, go_style), _status(port, go_style)) == ("0", "reset")
    assert s.proc.poll() is None and _check(targets[2]) == "0"


_field = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(st.one_of(_field, st.sampled_from([":path", ":x", "te", "Te"])), _field),
        max_size=5,
    )
)
def test_any_header_fields_on_the_unix_socket_get_an_answer(
    served: tuple[Served, list[str], str], extra: list[tuple[str, str]]
) -> None:
    """The checks `_h2.c` makes there in nghttp2's place, against any names and values: each
    call is answered or its stream reset, and the server goes on."""
    s, _, path = served
    got = _status(path, [*HEADERS, *extra])
    assert got in {"0", "reset", "12", "13", "closed"} or got.isdigit(), got
    assert s.proc.poll() is None, s.output()


def test_a_file_that_is_no_socket_is_refused_not_replaced(
    policies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.txt"
    path.write_text("keep me")
    argv = ["serve", "--policies", str(policies), "--transport", "native", "--workers", "1",
            "--unix", str(path)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--unix" in err[0] and str(path) in err[0], err
    assert path.read_text() == "keep me"


def test_a_unix_socket_alone_and_its_file_removed_at_exit(policies: Path, tmp_path: Path) -> None:
    path = tmp_path / "alone.sock"
    _stale_socket(path)
    argv = ["--policies", str(policies), "--transport", "native", "--workers", "1",
            "--unix", str(path)]  # fmt: skip
    with pdp_serve_raw(*argv) as s:
        end = time.monotonic() + CAP_S
        while _health(f"unix:{path}") != SERVING:
            assert s.proc.poll() is None and time.monotonic() < end, s.output()
            time.sleep(0.1)
        assert _check(f"unix:{path}") == "0"
        s.proc.send_signal(signal.SIGTERM)
        assert s.exit_code() == 0, s.output()
    assert not os.path.exists(path)

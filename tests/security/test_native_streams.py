"""Hostile streaming calls and compressed messages against the native transport (a real server
on 127.0.0.1): more watchers than the bound, streams that hold a slot without a request, a
reflection stream sending thousands of requests, clients that never read, half-closed and
reset streams, deadlines, and broken compression on streams (a gzip bomb, a cut stream, a
wrong grpc-encoding, the compressed flag with identity). Each must end in a clear status or
a reset, with every bound given back and the server still answering."""

from __future__ import annotations

import gzip
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from pdp.engine import EngineHolder
from pdp.server import ServerConfig

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native import server as native_server
from pdp.server.native.server import NativeServer
from pdp.server.streams import MAX_WATCHERS

WATCH = "/grpc.health.v1.Health/Watch"
REFLECT = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
MAX_MESSAGE = 64 << 10
OUT_CAP = 256 << 10
R = reflection_pb2.ServerReflectionRequest
LIST = R(list_services="").SerializeToString()
BIG = R(file_containing_symbol="pdp.v1.DecisionService").SerializeToString()
WATCH_ALL = health_pb2.HealthCheckRequest(service="").SerializeToString()


@pytest.fixture(scope="module")
def native() -> Iterator[NativeServer]:
    saved = native_server.STREAM_OUT_CAP
    native_server.STREAM_OUT_CAP = OUT_CAP  # read at start: a small cap, quickly reached
    server = NativeServer(
        EngineHolder(), ServerConfig(listen=("127.0.0.1:0",), max_message_bytes=MAX_MESSAGE)
    )
    try:
        server.start()
        server.set_serving(True)
        yield server
    finally:
        native_server.STREAM_OUT_CAP = saved
        server.stop(0)


def _framed(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(message)) + message


class Conn:
    """A raw HTTP/2 client connection for streaming calls: what each stream received."""

    def __init__(self, port: int, window: int | None = None) -> None:
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if window is not None:  # a client that never opens its window: it reads nothing
            self.h2.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self.h2.initiate_connection()
        self.flush()
        self.data: dict[int, bytes] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}

    def flush(self) -> None:
        if out := self.h2.data_to_send():
            self.sock.sendall(out)

    def open(self, path: str, messages: list[bytes] = (), end: bool = True, extra: Any = ()) -> int:
        sid = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "127.0.0.1"),
            (":path", path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
        self.h2.send_headers(sid, headers, end_stream=end and not messages)
        if messages:
            self.send(sid, b"".join(messages), end)
        self.flush()
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        """`data` in frames as its flow-control window allows (reading meanwhile)."""
        if not data and end:
            self.h2.end_stream(sid)
        while data:
            room = min(self.h2.local_flow_control_window(sid), 16384, len(data))
            if room <= 0:
                self.flush()
                self.pump(lambda: self.h2.local_flow_control_window(sid) > 0)
                continue
            chunk, data = data[:room], data[room:]
            self.h2.send_data(sid, chunk, end_stream=end and not data)
        self.flush()

    def pump(self, until: Any, cap: float = 30, read: bool = True) -> None:
        """Reads until `until()` holds (or fails after `cap` seconds)."""
        end = time.monotonic() + cap
        while not until():
            assert time.monotonic() < end, "the server did not answer"
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            chunk = self.sock.recv(65536)
            assert chunk, "the connection closed"
            for ev in self.h2.receive_data(chunk):
                sid = getattr(ev, "stream_id", 0)
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    self.headers.setdefault(sid, {}).update(dict(ev.headers))
                elif isinstance(ev, h2.events.DataReceived):
                    self.data[sid] = self.data.get(sid, b"") + ev.data
                    if read:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.ended.add(sid)
                elif isinstance(ev, h2.events.StreamReset):
                    self.reset[sid] = ev.error_code
            self.flush()

    def status(self, sid: int) -> str | None:
        return self.headers.get(sid, {}).get("grpc-status")

    def messages(self, sid: int) -> list[bytes]:
        out, buf = [], self.data.get(sid, b"")
        while len(buf) >= 5:
            (n,) = struct.unpack(">I", buf[1:5])
            out.append(buf[5 : 5 + n])
            buf = buf[5 + n :]
        return out

    def close(self) -> None:
        self.sock.close()


def _until(check: Any, what: str, cap: float = 30) -> None:
    end = time.monotonic() + cap
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.01)


def _settled(native: NativeServer) -> None:
    """Every streaming call has ended on the server (slots and threads given back)."""
    _until(lambda: native._streams.open_calls() == 0, "a streaming call left open")
    _until(lambda: not native.health._send_response_callbacks.get(""), "a watcher left behind")


def _answers(native: NativeServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{native.port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_watchers_beyond_the_bound_are_refused_and_slots_come_back(native: NativeServer) -> None:
    """MAX_WATCHERS watchers hear SERVING; one more is RESOURCE_EXHAUSTED (grpcio's
    BoundedHealth words); once a connection closes its watchers' slots are free again."""
    a, b = Conn(native.port), Conn(native.port)
    try:
        first = [a.open(WATCH, [_framed(WATCH_ALL)]) for _ in range(60)]
        second = [b.open(WATCH, [_framed(WATCH_ALL)]) for _ in range(MAX_WATCHERS - 60)]
        a.pump(lambda: all(a.messages(s) for s in first))
        b.pump(lambda: all(b.messages(s) for s in second))
        one_more = b.open(WATCH, [_framed(WATCH_ALL)])
        b.pump(lambda: one_more in b.ended)
        assert b.status(one_more) == "8"
        assert "health Watch streams are open" in b.headers[one_more]["grpc-message"]
        a.close()
        _until(lambda: native._streams.open_calls() == MAX_WATCHERS - 60, "slots given back")
        again = b.open(WATCH, [_framed(WATCH_ALL)])
        b.pump(lambda: b.messages(again))
        assert health_pb2.HealthCheckResponse.FromString(b.messages(again)[0]).status == 1
    finally:
        a.close()
        b.close()
    _settled(native)
    _answers(native)


def test_streams_that_never_send_their_request_hold_a_bounded_number_of_slots(
    native: NativeServer,
) -> None:
    """Watch streams opened without their request message stay open (as on grpcio), but
    only so many: past the C side's bound a streaming call is RESOURCE_EXHAUSTED; unary
    calls still answer; closing the connections frees them all."""
    bound = native._max_streams_open
    conns = [Conn(native.port) for _ in range(bound // 90 + 1)]
    try:
        for i in range(bound):
            conns[i // 90].open(WATCH, end=False)
        _until(lambda: native._streams.open_calls() == bound, "every stream open")
        last = conns[-1]
        refused = last.open(WATCH, [_framed(WATCH_ALL)])
        last.pump(lambda: refused in last.ended)
        assert last.status(refused) == "8"
        assert "too many streaming calls open" in last.headers[refused]["grpc-message"]
        _answers(native)
    finally:
        for c in conns:
            c.close()
    _settled(native)


def test_a_reflection_stream_sending_thousands_of_requests(native: NativeServer) -> None:
    """20,000 requests on one stream, written at once: answered in order, or (when they
    arrive faster than its handler reads them) RESOURCE_EXHAUSTED; either way the stream
    ends, its slot comes back, and the server answers."""
    c = Conn(native.port)
    try:
        sid = c.open(REFLECT, [_framed(LIST)] * 20_000)
        c.pump(lambda: sid in c.ended or sid in c.reset, cap=120)
        status = c.status(sid)
        if status == "0":
            assert len(c.messages(sid)) == 20_000
        else:
            assert status == "8", c.headers.get(sid)
            assert "faster than the server reads" in c.headers[sid]["grpc-message"]
    finally:
        c.close()
    _settled(native)
    _answers(native)


def test_a_reflection_client_that_never_reads_is_reset(native: NativeServer) -> None:
    """A client whose flow-control window stays shut asks for large descriptors: the server
    queues at most STREAM_OUT_CAP bytes for it, then resets the stream (ENHANCE_YOUR_CALM)
    and ends the handler, instead of buffering without bound."""
    c = Conn(native.port, window=0)
    try:
        sid = c.open(REFLECT, [_framed(BIG)] * (OUT_CAP // 1000 + 10), end=False)
        c.pump(lambda: sid in c.reset, read=False)
        assert c.reset[sid] == 11  # ENHANCE_YOUR_CALM
    finally:
        c.close()
    _settled(native)


def test_a_watcher_that_never_reads_is_reset(native: NativeServer) -> None:
    """Health flapping while a watcher's window stays shut: its queue reaches the cap and
    the stream is reset; the watcher is removed from grpc_health's table."""
    c = Conn(native.port, window=0)
    try:
        sid = c.open(WATCH, [_framed(WATCH_ALL)])
        _until(lambda: native._streams.open_calls() == 1, "the watcher open")
        for i in range(OUT_CAP // 7 + 1000):
            native.set_serving(i % 2 == 0)
            if i % 5000 == 0 and sid in c.reset:
                break
        native.set_serving(True)
        c.pump(lambda: sid in c.reset, read=False)
        assert c.reset[sid] == 11
    finally:
        c.close()
    _settled(native)


def test_half_closed_and_reset_streams(native: NativeServer) -> None:
    """A Watch without its request message, or with two, is INTERNAL; a reflection stream
    half-closed at once ends OK with nothing sent; a reflection stream or a watcher the
    client resets ends its handler (the slot and the watcher are given back)."""
    c = Conn(native.port)
    try:
        none = c.open(WATCH, [])
        two = c.open(WATCH, [_framed(WATCH_ALL), _framed(WATCH_ALL)])
        empty = c.open(REFLECT, [])
        c.pump(lambda: {none, two, empty} <= c.ended)
        assert (c.status(none), c.status(two), c.status(empty)) == ("13", "13", "0")
        assert c.messages(empty) == []
        for path, request in ((REFLECT, _framed(LIST)), (WATCH, _framed(WATCH_ALL))):
            sid = c.open(path, [request], end=path == WATCH)
            c.pump(lambda sid=sid: c.messages(sid))
            c.h2.reset_stream(sid)
            c.flush()
            _settled(native)
        # both reflection slots still there
        sids = [c.open(REFLECT, [_framed(LIST)]) for _ in range(2)]
        c.pump(lambda: set(sids) <= c.ended)
        assert [c.status(s) for s in sids] == ["0", "0"]
    finally:
        c.close()
    _settled(native)


def test_a_watch_deadline_ends_it_deadline_exceeded(native: NativeServer) -> None:
    c = Conn(native.port)
    try:
        sid = c.open(WATCH, [_framed(WATCH_ALL)], extra=[("grpc-timeout", "200m")])
        c.pump(lambda: sid in c.ended)
        assert c.status(sid) == "4" and len(c.messages(sid)) == 1
    finally:
        c.close()
    _settled(native)


def _gz(n: int) -> bytes:
    return gzip.compress(R(list_services="x" * n).SerializeToString())


@pytest.mark.parametrize(
    ("extra", "message", "want"),
    [
        ([("grpc-encoding", "gzip")], _framed(_gz(10), 1), "0"),
        ([("grpc-encoding", "gzip")], _framed(gzip.compress(b"\x00" * (8 << 20)), 1), "8"),
        ([("grpc-encoding", "gzip")], _framed(_gz(MAX_MESSAGE + 1), 1), "8"),
        ([("grpc-encoding", "gzip")], _framed(_gz(MAX_MESSAGE - 10), 1), "0"),
        ([("grpc-encoding", "gzip")], _framed(_gz(1000)[:-9], 1), "13"),
        ([("grpc-encoding", "br")], _framed(LIST), "13"),
        ([("grpc-encoding", "identity")], _framed(LIST, 1), "13"),
        ([], _framed(LIST, 1), "13"),
        ([], _framed(LIST, 7), "13"),
    ],
    ids=[
        "gzip",
        "gzip bomb",
        "one byte over the max",
        "under the max",
        "gzip cut short",
        "wrong encoding",
        "compressed flag, identity",
        "compressed flag, no encoding",
        "flag 7",
    ],
)
def test_compressed_messages_on_a_stream(
    native: NativeServer, extra: list[tuple[str, str]], message: bytes, want: str
) -> None:
    """A reflection stream's messages are read as a unary call's: decompressed within
    --max-message-bytes (a bomb stops there: RESOURCE_EXHAUSTED), anything malformed
    INTERNAL, as grpcio."""
    c = Conn(native.port)
    try:
        sid = c.open(REFLECT, [message], extra=extra)
        c.pump(lambda: sid in c.ended)
        assert c.status(sid) == want, c.headers.get(sid)
    finally:
        c.close()
    _settled(native)
    _answers(native)


def test_a_gzip_bomb_on_a_unary_call(native: NativeServer) -> None:
    """32 MiB of zeros in 32 KB: decompression stops at --max-message-bytes."""
    c = Conn(native.port)
    try:
        bomb = _framed(gzip.compress(b"\x0a\x00" + b"\x00" * (32 << 20)), 1)
        sid = c.open("/grpc.health.v1.Health/Check", [bomb], extra=[("grpc-encoding", "gzip")])
        c.pump(lambda: sid in c.ended)
        assert c.status(sid) == "8" and "larger than max" in c.headers[sid]["grpc-message"]
    finally:
        c.close()
    _answers(native)

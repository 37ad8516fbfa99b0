"""Red team, session 26: the native HTTP/2 + gRPC transport attacked at the wire.

A real `pdp serve --transport native` (and, for the differential, `--transport grpcio`) on
127.0.0.1. What a hostile client tries: to hold the server's request-byte budget with requests
it never finishes (one connection stalled every other client: fixed, the bytes are taken back
from the oldest), to reach another method by spelling a path, to lie in gRPC's framing, to
make replies cross streams or connections, to flood HTTP/2's control frames, and to leave
replies unread. Memory is the server's RSS (`/proc/PID/status`), with generous caps.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from server.conftest import ALICE, DOC, write_policies

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .native_h2 import CHECK, HEADERS, frame, raw_call, with_header
from .real_pdp import Served, pdp_serve

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
h2_connection = pytest.importorskip("h2.connection")
import h2.config  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import h2.settings  # noqa: E402
import hpack  # noqa: E402

MAX_MESSAGE = 4 << 20  # the default --max-message-bytes: the budget is the 64 MiB floor
WATCH = "/grpc.health.v1.Health/Watch"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GOOD = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}]).SerializeToString()
ENHANCE_YOUR_CALM = 11


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies(tmp_path_factory.mktemp("redteam26"))


@pytest.fixture(scope="module")
def unix_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("redteam26-sock") / "pdp.sock")


@pytest.fixture(scope="module")
def native(policies: Path, unix_path: str) -> Iterator[Served]:
    flags = ["--transport", "native", "--workers", "1", "--threads", "2", "--unix", unix_path]
    with pdp_serve(policies, *flags, "--no-rate-limit-service") as s:
        yield s


@pytest.fixture(scope="module")
def grpcio(policies: Path) -> Iterator[Served]:
    flags = ["--transport", "grpcio", "--workers", "1"]
    with pdp_serve(policies, *flags, "--no-rate-limit-service") as s:
        yield s


def _port(s: Served) -> int:
    return int(s.address.rsplit(":", 1)[1])


def _rss_mib(s: Served) -> int:
    for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def _status(port: int | str, headers: list[tuple[str, str]], chunks: list[bytes]) -> str:
    got = raw_call(port, headers, chunks, as_given=True)
    if "reset" in got:
        return "reset"
    return got.get("grpc-status", "closed" if "closed" in got else "none")


def _answers(s: Served) -> None:
    assert s.proc.poll() is None, "".join(s.log)
    assert _status(_port(s), HEADERS, [frame(GOOD)]) == "0"


class _Holder:
    """One client connection that opens streams and sends each a request's first bytes, never
    its last, as fast as the server's flow control lets it (it reads the WINDOW_UPDATEs)."""

    def __init__(self, port: int) -> None:
        self.conn = h2_connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(self.conn.data_to_send())
        self.resets: dict[int, int] = {}
        self.last = 0

    def _read(self) -> None:
        for ev in self.conn.receive_data(self.sock.recv(1 << 20)):
            if isinstance(ev, h2.events.StreamReset):
                self.resets[ev.stream_id] = ev.error_code

    def hold(self, headers: list[tuple[str, str]], body: bytes) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers)
        off = 0
        while off < len(body):
            room = min(self.conn.local_flow_control_window(sid), 16384, len(body) - off)
            if room > 0:
                self.conn.send_data(sid, body[off : off + room])
                off += room
                continue
            self.sock.sendall(self.conn.data_to_send())
            self._read()
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def call(self, message: bytes) -> dict[int, str]:
        """A Check on this connection: the grpc-status of every stream answered meanwhile
        (headers or trailers carrying one), once this call's has come."""
        self.last = sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, HEADERS)
        self.conn.send_data(sid, message, end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        answers: dict[int, str] = {}
        while sid not in answers:
            for ev in self.conn.receive_data(self.sock.recv(1 << 20)):
                headers = getattr(ev, "headers", None) or ()
                if (code := dict(headers).get("grpc-status")) is not None:
                    answers[ev.stream_id] = code
            self.sock.sendall(self.conn.data_to_send())
        return answers

    def settle(self) -> None:
        """What the server sent meanwhile (its resets), read until it goes quiet."""
        self.sock.settimeout(0.5)
        try:
            while True:
                self._read()
        except TimeoutError:
            pass
        self.sock.settimeout(30)

    def close(self) -> None:
        self.sock.close()


# A message declaring the maximum, cut at half of it and a byte: its buffer doubled to the
# maximum, 4 MiB of the 64 MiB budget held for 2 MiB sent. 17 hold more than the budget.
_UNFINISHED = b"\x00" + struct.pack(">I", MAX_MESSAGE) + b"\x0a" * (MAX_MESSAGE // 2 - 4)
_HOLDERS = 17


@pytest.mark.parametrize("path", [CHECK, WATCH])
def test_requests_never_finished_lock_no_other_client_out(native: Served, path: str) -> None:
    """One connection sends 17 requests' first halves (unary Checks, or health Watch streams'
    request messages) and never their ends: 64 MiB of request buffers. Until session 26 that
    was the whole server's budget, and every other client's call was refused
    RESOURCE_EXHAUSTED "server busy" for as long as the connection lived (grpcio serves on).
    Now the bytes are taken back from the oldest unfinished requests: each reset
    ENHANCE_YOUR_CALM, and the other clients answered. The client ending a reclaimed request
    anyway (it may not have read the reset) gets no second answer, and its connection serves
    on."""
    port = _port(native)
    before = _rss_mib(native)
    holder = _Holder(port)
    try:
        sids = [holder.hold(with_header(":path", path), _UNFINISHED) for _ in range(_HOLDERS)]
        for _ in range(3):  # a client on another connection is answered, again and again
            assert _status(port, HEADERS, [frame(GOOD)]) == "0", native.log[-5:]
        holder.settle()
        assert holder.resets, "no unfinished request was reset"
        assert set(holder.resets.values()) == {ENHANCE_YOUR_CALM}, holder.resets
        # Oldest first: the reset streams are the first opened, the last ones still held.
        assert sorted(holder.resets) == sids[: len(holder.resets)], (holder.resets, sids)
        assert sids[-1] not in holder.resets
        assert _rss_mib(native) - before < 400  # the budget (64 MiB), allocator slack
        with pytest.raises(h2.exceptions.StreamClosedError):  # h2 knows it reset
            holder.conn.send_data(sids[0], b"\x0a", end_stream=True)
        # Sent anyway, as raw bytes: the message's last byte and END_STREAM.
        end = struct.pack(">I", 1)[1:] + bytes([0, 1]) + struct.pack(">I", sids[0]) + b"\x0a"
        holder.sock.sendall(end)
        assert holder.call(frame(GOOD)) == {holder.last: "0"}
    finally:
        holder.close()
    _answers(native)


# -- paths: exactly the method named, or UNIMPLEMENTED ------------------------------------------

_PATHS = [
    "//pdp.v1.DecisionService/Check",
    "/pdp.v1.DecisionService//Check",
    "/pdp.v1.DecisionService/Check/",
    "/pdp.v1.DecisionService/Check?x=1",
    "/pdp.v1.DecisionService/Check#x",
    "/pdp.v1.DecisionService/check",
    "/PDP.v1.DecisionService/Check",
    "/pdp.v1.DecisionService/%43heck",
    "/pdp.v1.DecisionService/Check%00",
    "/./pdp.v1.DecisionService/Check",
    "/pdp.v1.DecisionService/../pdp.v1.DecisionService/Check",
    "/pdp.v1.DecisionService/Check;x",
    "/grpc.health.v1.Health/Check/",
    "/grpc.health.v1.Health/check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo/",
    "/envoy.service.auth.v3.Authorization/Check",
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    "/pdp.v1.DecisionService/",
    "/",
]


def test_paths_spelled_otherwise_reach_no_method(native: Served, grpcio: Served) -> None:
    """A Check body sent to the Check path spelled otherwise (double slashes, a query, a
    fragment, a trailing slash, case, percent-encoding, dot segments), or to services left
    out: UNIMPLEMENTED on both transports, never decided by another method."""
    framed = [frame(GOOD)]
    got = {
        p: (_status(_port(native), with_header(":path", p), framed),
            _status(_port(grpcio), with_header(":path", p), framed))
        for p in _PATHS
    }  # fmt: skip
    assert got == {p: ("12", "12") for p in _PATHS}
    # The exact paths still answer, each its own method (a Check body to Health is no Check).
    health = with_header(":path", "/grpc.health.v1.Health/Check")
    assert _status(_port(native), health, [frame(b"")]) == "0"
    assert raw_call(_port(native), HEADERS, framed)["grpc-status"] == "0"


# -- gRPC framing that lies: never an answer where grpcio refuses ----------------------------------

_BOMB = gzip.compress(b"\x00" * (MAX_MESSAGE + 1), mtime=0)
_GZIP = [*HEADERS, ("grpc-encoding", "gzip")]
_FRAMED = frame(GOOD)
# name -> (headers, DATA chunks): what both transports refuse, each with a status.
_LIES: dict[str, tuple[list[tuple[str, str]], list[bytes]]] = {
    "gzip bomb": (_GZIP, [b"\x01" + struct.pack(">I", len(_BOMB)) + _BOMB]),
    "compressed flag, no encoding": (HEADERS, [b"\x01" + _FRAMED[1:]]),
    "compressed flag, identity": ([*HEADERS, ("grpc-encoding", "identity")], [b"\x01" + _FRAMED[1:]]),
    "unknown encoding": ([*HEADERS, ("grpc-encoding", "snappy")], [_FRAMED]),
    "encoding in capitals": ([*HEADERS, ("grpc-encoding", "GZIP")], [_FRAMED]),
    "cut-short gzip": (_GZIP, [b"\x01" + struct.pack(">I", 20) + gzip.compress(GOOD, mtime=0)[:20]]),
    "length bigger than the data": (HEADERS, [b"\x00" + struct.pack(">I", len(GOOD) + 10) + GOOD]),
    "no message": (HEADERS, [b""]),
    "timeout negative": ([*HEADERS, ("grpc-timeout", "-1S")], [_FRAMED]),
    "timeout bad unit": ([*HEADERS, ("grpc-timeout", "1x")], [_FRAMED]),
    "timeout fractional": ([*HEADERS, ("grpc-timeout", "1.5S")], [_FRAMED]),
    "timeout no digits": ([*HEADERS, ("grpc-timeout", "S")], [_FRAMED]),
    "timeout no unit": ([*HEADERS, ("grpc-timeout", "1")], [_FRAMED]),
    "timeout 0n": ([*HEADERS, ("grpc-timeout", "0n")], [_FRAMED]),
    "timeout 0S": ([*HEADERS, ("grpc-timeout", "0S")], [_FRAMED]),
    "-bin not base64": ([*HEADERS, ("x-a-bin", "!!!")], [_FRAMED]),
    "-bin one character": ([*HEADERS, ("x-a-bin", "Q")], [_FRAMED]),
    "GET": (with_header(":method", "GET"), [_FRAMED]),
    "no :authority": ([h for h in HEADERS if h[0] != ":authority"], [_FRAMED]),
    "an upper-case header name": ([*HEADERS, ("X-Up", "1")], [_FRAMED]),
}  # fmt: skip
# Where the native transport refuses and grpcio answers (docs/NATIVE.md): fail closed.
_STRICTER: dict[str, tuple[list[tuple[str, str]], list[bytes]]] = {
    "two messages": (HEADERS, [_FRAMED + _FRAMED]),
    "length smaller than the data": (HEADERS, [b"\x00" + struct.pack(">I", len(GOOD) - 10) + GOOD]),
    "flag byte 2": (HEADERS, [b"\x02" + _FRAMED[1:]]),
    "timeout of 9 digits": ([*HEADERS, ("grpc-timeout", "123456789S")], [_FRAMED]),
    "timeout 1n": ([*HEADERS, ("grpc-timeout", "1n")], [_FRAMED]),
    "content-type garbage": (with_header("content-type", "garbage"), [_FRAMED]),
    "content-type missing": ([h for h in HEADERS if h[0] != "content-type"], [_FRAMED]),
    "two :path": ([*HEADERS[:3], (":path", "/grpc.health.v1.Health/Check"), *HEADERS[3:]], [_FRAMED]),
    "connection header": ([*HEADERS, ("connection", "close")], [_FRAMED]),
}  # fmt: skip


def test_framing_lies_get_grpcios_class_of_refusal(native: Served, grpcio: Served) -> None:
    """Lengths that lie, compression flags without an encoding, a gzip bomb, malformed
    grpc-timeout and -bin values, a GET: refused on both transports (a status other than OK,
    or the stream reset), never decided on one side only; and where the native transport is
    the stricter (two messages, a flag byte of 2, a grpc-timeout of 9 digits or 1 ns, no
    grpc content-type, two :path), it refuses what grpcio decides, never the reverse."""

    def ok(s: str) -> bool:
        return s == "0"

    both = {
        name: (_status(_port(native), h, c), _status(_port(grpcio), h, c))
        for name, (h, c) in _LIES.items()
    }
    assert {n: ok(a) or ok(b) for n, (a, b) in both.items()} == dict.fromkeys(_LIES, False), both
    assert both["gzip bomb"] == ("8", "8")
    stricter = {name: _status(_port(native), h, c) for name, (h, c) in _STRICTER.items()}
    assert not [n for n, s in stricter.items() if ok(s)], stricter
    _answers(native)


# -- replies: each to its own stream and connection --------------------------------------------


def _many_calls(port: int, tag: str, n: int, out: dict[str, list[str]]) -> None:
    """`n` Checks on one connection, all written at once, each with its own request id and
    resource id: the (request id, resource id) of every reply, by the request id sent."""
    conn = h2_connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sent: dict[int, str] = {}
    for i in range(n):
        rid = f"{tag}-{i}"
        msg = request_to_proto(ALICE, [{**DOC, "id": f"res-{rid}", "actions": ["read"]}])
        msg.request_id = rid
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, HEADERS)
        conn.send_data(sid, frame(msg.SerializeToString()), end_stream=True)
        sent[sid] = rid
    bodies: dict[int, bytes] = {}
    done: set[int] = set()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(conn.data_to_send())
        while len(done) < n and (data := sock.recv(1 << 20)):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                    done.add(ev.stream_id)
            sock.sendall(conn.data_to_send())
    for sid, rid in sent.items():
        reply = pb.CheckResponse.FromString(bodies.get(sid, b"\0\0\0\0\0")[5:])
        out[rid] = [reply.request_id, *(r.id for r in reply.results)]


def test_replies_never_cross_streams_or_connections(native: Served) -> None:
    """Two connections, 90 calls each at once, every call naming its own request and
    resource: each reply carries exactly its own call's ids (a reply crossing to another
    stream or connection would carry another's)."""
    port, n = _port(native), 90
    got: dict[str, list[str]] = {}
    threads = [threading.Thread(target=_many_calls, args=(port, tag, n, got)) for tag in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    want = {f"{t}-{i}": [f"{t}-{i}", f"res-{t}-{i}"] for t in ("a", "b") for i in range(n)}
    assert got == want


# -- HTTP/2 abuse -------------------------------------------------------------------------------


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", sid)
        + payload
    )


def _goaway_codes(data: bytes) -> list[int]:
    codes, i = [], 0
    while i + 9 <= len(data):
        length, kind = int.from_bytes(data[i : i + 3], "big"), data[i + 3]
        if kind == 7 and i + 17 <= len(data):
            codes.append(int.from_bytes(data[i + 13 : i + 17], "big"))
        i += 9 + length
    return codes


def _send_all(port: int, data: bytes, *, read: bool = True) -> list[int]:
    """The preface, an empty SETTINGS and `data`, then the client's end; the GOAWAY codes the
    server sent before it closed the connection (`read`; else the client reads nothing)."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(PREFACE + _frame(4, 0, 0, b"") + data)
            if read:
                sock.shutdown(socket.SHUT_WR)  # then the server closes, if it has not already
            while read and (chunk := sock.recv(1 << 16)):
                got += chunk
        except OSError:  # reset, or closed before the client's end: as good
            pass
    return _goaway_codes(got)


def test_http2_floods_end_the_connection_and_memory_stays_bounded(native: Served) -> None:
    """Rapid reset (CVE-2023-44487), a CONTINUATION flood (CVE-2024-28182), SETTINGS floods
    from a client that never reads, PRIORITY for 50,000 streams, WINDOW_UPDATE past 2^31-1,
    HPACK table-size updates the server never allowed, stream ids going backwards or reused:
    each connection gets its GOAWAY or is closed, the server's memory stays within a
    generous cap, and it answers the next call."""
    port = _port(native)
    before = _rss_mib(native)
    block = hpack.Encoder().encode(HEADERS)
    rst = struct.pack(">I", 8)  # CANCEL
    floods = {
        # nghttp2's stream reset rate limit: GOAWAY before 5,000 calls are made (not asserted:
        # the client, its bytes unread, may see the close as a TCP reset first)
        "rapid reset": (b"".join(_frame(1, 4, 2 * i + 1, block) + _frame(3, 0, 2 * i + 1, rst) for i in range(5000)), True),
        "rapid reset of whole calls": (b"".join(
            _frame(1, 4, 2 * i + 1, block) + _frame(0, 1, 2 * i + 1, frame(GOOD)) + _frame(3, 0, 2 * i + 1, rst)
            for i in range(5000)), True),
        "CONTINUATION flood": (_frame(1, 0, 1, block) + b"".join(
            _frame(9, 0, 1, hpack.Encoder().encode([(f"x-{i}", "a")])) for i in range(20000)), True),
        "empty CONTINUATION flood": (_frame(1, 0, 1, block) + _frame(9, 0, 1, b"") * 20000, True),
        "SETTINGS flood, never read": (_frame(4, 0, 0, b"") * 100_000, False),
        "PING flood, never read": (_frame(6, 0, 0, b"\0" * 8) * 100_000, False),
        "PRIORITY flood": (b"".join(_frame(2, 0, 2 * i + 1, struct.pack(">IB", 2 * i + 3, 16)) for i in range(50_000)), True),
        "WINDOW_UPDATE overflow": (_frame(8, 0, 0, struct.pack(">I", 2**31 - 1)) * 2, True),
        "HPACK size update over the limit": (_frame(1, 5, 1, b"\x3f\xe1\xff\x03" + block), True),
        "HPACK size update mid-block": (_frame(1, 5, 1, block[:5] + b"\x20" + block[5:]), True),
        "stream id reused": (_frame(1, 5, 1, block) + _frame(1, 5, 1, block), True),
        "stream id even": (_frame(1, 5, 2, block), True),
    }  # fmt: skip
    got = {name: _send_all(port, data, read=read) for name, (data, read) in floods.items()}
    assert got["WINDOW_UPDATE overflow"] == [3], got  # FLOW_CONTROL_ERROR
    assert got["HPACK size update over the limit"] == [9], got  # COMPRESSION_ERROR
    assert got["stream id reused"] and got["stream id even"], got
    _answers(native)
    assert _rss_mib(native) - before < 200


def test_trailers_cannot_change_the_call(native: Served) -> None:
    """Trailers are counted, never read: a :path in them resets the stream (nghttp2), a
    grpc-timeout of 0n or a grpc-encoding in them changes nothing."""
    port = _port(native)
    block = hpack.Encoder().encode(HEADERS)
    for trailer, want in (
        ([(":path", "/grpc.health.v1.Health/Check")], "reset"),
        ([("grpc-timeout", "0n")], "0"),
        ([("grpc-encoding", "gzip")], "0"),
    ):
        data = (
            _frame(1, 4, 1, block)
            + _frame(0, 0, 1, frame(GOOD))
            + _frame(1, 5, 1, hpack.Encoder().encode(trailer))
        )
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(PREFACE + _frame(4, 0, 0, b"") + data)
            status = _read_status(sock)
        assert status == want, trailer
    _answers(native)


def _frames_seen(data: bytes) -> list[tuple[int, int]]:
    """(type, stream id) of each frame in `data`, the server's bytes from its first."""
    seen, i = [], 0
    while i + 9 <= len(data):
        seen.append((data[i + 3], int.from_bytes(data[i + 5 : i + 9], "big")))
        i += 9 + int.from_bytes(data[i : i + 3], "big")
    return seen


def _read_status(sock: socket.socket) -> str:
    """Stream 1's grpc-status from the server's frames (every header block decoded, in
    order), "reset" for its RST_STREAM, "closed" if the connection ends first."""
    decoder, buf = hpack.Decoder(), b""
    while chunk := sock.recv(1 << 16):
        buf += chunk
        while len(buf) >= 9 and len(buf) >= 9 + (length := int.from_bytes(buf[:3], "big")):
            kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big")
            payload, buf = buf[9 : 9 + length], buf[9 + length :]
            if kind == 3 and sid == 1:
                return "reset"
            if kind == 1:
                fields = dict(decoder.decode(payload))
                if sid == 1 and flags & 1 and "grpc-status" in fields:
                    return fields["grpc-status"]
    return "closed"


def test_a_client_that_never_reads_its_replies(native: Served) -> None:
    """A connection whose window is 0 sends 100 calls with large replies (explain: about 12
    times their request) and never reads: the replies wait, bounded by the connection's 100
    streams; a 101st stream is refused (nghttp2: GOAWAY PROTOCOL_ERROR, the connection and
    its replies gone), and other clients are answered."""
    port = _port(native)
    before = _rss_mib(native)
    msg = request_to_proto(
        ALICE, [{**DOC, "id": f"d{i}", "actions": ["read", "write", "delete"]} for i in range(50)]
    )
    msg.explain = True
    body = frame(msg.SerializeToString())
    conn = h2_connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    raw = b""  # all the server sent, from its first byte (parsed for stream 201's reset)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(conn.data_to_send())
        for _ in range(100):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, HEADERS)
            off = 0
            while off < len(body):
                room = min(conn.local_flow_control_window(sid), len(body) - off)
                if room:
                    conn.send_data(sid, body[off : off + room], end_stream=off + room == len(body))
                    off += room
                    continue
                sock.sendall(conn.data_to_send())
                raw += (chunk := sock.recv(1 << 20))
                conn.receive_data(chunk)
            sock.sendall(conn.data_to_send())
        # A 101st stream, past SETTINGS_MAX_CONCURRENT_STREAMS: written raw (h2 would refuse).
        sock.sendall(_frame(1, 5, 201, hpack.Encoder().encode(HEADERS)))
        sock.settimeout(2)
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(1 << 20):
                raw += chunk
        seen = _frames_seen(raw)  # its stream reset, or (nghttp2) GOAWAY and the close
        assert (3, 201) in seen or (7, 0) in seen, "the 101st stream was not refused"
        _answers(native)
        assert _rss_mib(native) - before < 200


# -- a Unix socket: the header checks _h2.c makes in nghttp2's place ------------------------------

_HEALTH = "/grpc.health.v1.Health/Check"
_PSEUDO_TWICE = {
    "a :path of Health, then one of Check": [*HEADERS[:3], (":path", _HEALTH), *HEADERS[3:]],
    "a :path of Check, then one of Health": [*HEADERS, (":path", _HEALTH)],
    ":method GET, then POST": [(":method", "GET"), *HEADERS],
    ":path after a regular field": [*HEADERS[:3], *HEADERS[4:], (":path", CHECK)],
    "two :authority": [*HEADERS, (":authority", "elsewhere")],
}


def test_pseudo_headers_twice_on_the_unix_socket_are_refused_as_on_tcp(
    native: Served, unix_path: str
) -> None:
    """On a Unix socket nghttp2's HTTP checks are off (grpc-go's :authority) and _h2.c makes
    them: it took a pseudo-header twice, the last one winning, so a :path of Health followed
    by one of Check was decided as a Check (a filter reading the first saw a health check),
    and a :method GET followed by POST was served. Now each is reset, as nghttp2 resets it on
    TCP; so is a pseudo-header in trailers."""
    framed = [frame(GOOD)]
    unix = {n: _status(unix_path, h, framed) for n, h in _PSEUDO_TWICE.items()}
    tcp = {n: _status(_port(native), h, framed) for n, h in _PSEUDO_TWICE.items()}
    assert unix == tcp == dict.fromkeys(_PSEUDO_TWICE, "reset")
    block = hpack.Encoder().encode(HEADERS)
    trailers = hpack.Encoder().encode([(":path", _HEALTH)])
    data = _frame(1, 4, 1, block) + _frame(0, 0, 1, frame(GOOD)) + _frame(1, 5, 1, trailers)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(unix_path)
        sock.sendall(PREFACE + _frame(4, 0, 0, b"") + data)
        assert _read_status(sock) == "reset"
    assert _status(unix_path, HEADERS, framed) == "0"

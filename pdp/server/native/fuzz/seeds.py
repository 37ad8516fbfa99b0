"""Writes the fuzz harness's seed corpus (corpus/): what clients send, one connection per
file, from a connection preface on: good calls (Check, Health, Plan, ServerInfo, with
metadata and deadlines), the hostile requests of tests/security/test_native_transport.py,
and calls cut into rounds (h2_fuzz.c's "|pdp-next|") so a reset or a GOAWAY reaches a call
still deciding, and the drain ("|pdp-drain|"). Then streaming calls (health Watch, a
reflection stream) and calls answered early (reply()), with scripts of the Python side's
calls ("|pdp-py|": h2_fuzz.c's ops) between the client's frames: sends, finishes, resets,
GOAWAY, windows closed and opened. Needs `h2` (a test dependency).

    .venv/bin/python pdp/server/native/fuzz/seeds.py      # rewrites corpus/
"""

from __future__ import annotations

import gzip
import shutil
import struct
import zlib
from pathlib import Path

import h2.config
import h2.connection
import h2.settings
from grpc_health.v1 import health_pb2

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

CORPUS = Path(__file__).resolve().parent / "corpus"
NEXT, DRAIN, CLOSE = b"|pdp-next|", b"|pdp-drain|", b"|pdp-close|"
UNIX = b"|pdp-unix|"  # first: a Unix socket's session, its header checks made by _h2.c
PY = b"|pdp-py|"  # a length byte, then a script of that many bytes (h2_fuzz.c's ops)
# h2_fuzz.c's ops, in its order (each a byte, then its arguments).
TAKE, REPLY, ANSWER, ASK, PICKUP, SEND, STAKE, SSEND, SFINISH, SOPS, SWEEP = range(11)
# REPLY's kinds (the byte modulo 5; with bit 8: ERROR's details not base64, MALFORMED's
# message an int).
ECHO, SIZED, ERROR, NONE, MALFORMED = range(5)
ERROR_BAD_DETAILS, MALFORMED_INT = 12, 9
MAX_MESSAGE = 16384  # h2_fuzz.c's
SERVICE = "/pdp.v1.DecisionService"
HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "127.0.0.1"),
    (":path", f"{SERVICE}/Check"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
ALICE = {"id": "alice", "roles": ["user"], "attr": {"department": "eng"}}
DOC = {"kind": "document", "id": "doc1", "attr": {"owner": "alice"}, "actions": ["read"]}
CHECK = request_to_proto(ALICE, [DOC]).SerializeToString()
PLAN = pb.PlanRequest(resource_kind="document", action="read").SerializeToString()
HEALTH = health_pb2.HealthCheckRequest(service="pdp.v1.DecisionService").SerializeToString()


# The server's SETTINGS (INITIAL_WINDOW_SIZE 1 MiB) and a connection WINDOW_UPDATE, as a
# client would have read them: its flow control then lets it send more than 64 KiB.
SERVER_WINDOWS = (
    b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + struct.pack(">HI", 4, 1 << 20)
    + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + struct.pack(">I", 1 << 20)
)  # fmt: skip


def frame(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(message)) + message


def with_header(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in HEADERS]


class Client:
    """An h2 client connection whose bytes are kept, not sent."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.out = bytearray(self.conn.data_to_send())

    def call(
        self, headers: list[tuple[str, str]] = HEADERS, chunks: tuple[bytes, ...] = (frame(CHECK),)
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=not chunks)
        for i, chunk in enumerate(chunks):
            self.conn.send_data(sid, chunk, end_stream=i == len(chunks) - 1)
        self.flush()
        return sid

    def flush(self) -> None:
        self.out += self.conn.data_to_send()

    def mark(self, marker: bytes = NEXT) -> None:
        self.flush()
        self.out += marker

    def py(self, *ops: bytes | int) -> None:
        """The Python side's calls, here between the client's frames."""
        self.flush()
        self.out += script(*ops)

    def open(self, headers: list[tuple[str, str]], *messages: bytes, end: bool = False) -> int:
        """A stream with its headers and messages (each its own DATA frame)."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=end and not messages)
        for i, message in enumerate(messages):
            self.conn.send_data(sid, message, end_stream=end and i == len(messages) - 1)
        self.flush()
        return sid

    def window(self, sid: int, increment: int) -> None:
        """WINDOW_UPDATE for a stream and the connection: the client reads again."""
        self.conn.increment_flow_control_window(increment, sid)
        self.conn.increment_flow_control_window(increment)
        self.flush()


def take() -> bytes:
    return bytes([TAKE])


def reply(i: int, kind: int, *args: int) -> bytes:
    """reply(i, r): SIZED takes (size // 2) as two bytes; ERROR a code (-128..127)."""
    return bytes([REPLY, i, kind]) + b"".join(bytes([a & 0xFF]) for a in args)


def sized(i: int, size: int) -> bytes:
    return reply(i, SIZED, size // 2 >> 8, size // 2)


def answer(bad: bool = False) -> bytes:
    return bytes([ANSWER, int(bad)])


def ask(i: int) -> bytes:
    return bytes([ASK, i])


def ssend(k: int, size: int) -> bytes:
    return bytes([SSEND, k, size >> 8 & 0x3F, size & 0xFF])


def sfinish(k: int, code: int, message: bytes = b"") -> bytes:
    return bytes([SFINISH, k, code & 0xFF, len(message)]) + message


def script(*ops: bytes | int) -> bytes:
    body = b"".join(op if isinstance(op, bytes) else bytes([op]) for op in ops)
    assert len(body) < 256, body
    return PY + bytes([len(body)]) + body


def _one(headers: list[tuple[str, str]] = HEADERS, *chunks: bytes) -> bytes:
    c = Client()
    c.call(headers, chunks)
    return bytes(c.out)


def _split(data: bytes, size: int = 16384) -> list[bytes]:
    """DATA frames within the default SETTINGS_MAX_FRAME_SIZE."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def seeds() -> dict[str, bytes]:
    framed = frame(CHECK)
    out = {
        "check": _one(HEADERS, framed),
        "health": _one(with_header(":path", "/grpc.health.v1.Health/Check"), frame(HEALTH)),
        "plan": _one(with_header(":path", f"{SERVICE}/Plan"), frame(PLAN)),
        "serverinfo": _one(with_header(":path", f"{SERVICE}/ServerInfo"), frame(b"")),
        "check-metadata": _one(
            [
                *HEADERS,
                ("grpc-timeout", "5S"),
                ("user-agent", "grpc-python/1.0"),
                ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                ("x-id-bin", "AAEC"),
                ("x-v", "caf\u00e9"),
            ],
            framed,
        ),
        "gzip-flag": _one(HEADERS, frame(CHECK, flag=1)),
        "check-gzip": _one(
            [*HEADERS, ("grpc-encoding", "gzip")], frame(gzip.compress(CHECK, mtime=0), 1)
        ),
        "check-deflate": _one(
            [*HEADERS, ("grpc-encoding", "deflate")], frame(zlib.compress(CHECK), 1)
        ),
        "check-bad-encoding-no-message": _one([*HEADERS, ("grpc-encoding", "br")]),
        "another-path": _one(with_header(":path", "/x.Y/Z"), framed),
        "get": _one(with_header(":method", "GET")),
        "text-plain": _one(with_header("content-type", "text/plain"), framed),
        "content-type-params": _one(with_header("content-type", "application/grpc+proto"), framed),
        "grpc-encoding-br": _one([*HEADERS, ("grpc-encoding", "br")], framed),
        "two-messages": _one(HEADERS, framed + framed),
        "no-message": _one(HEADERS),
        "three-bytes": _one(HEADERS, framed[:3]),
        "length-too-long": _one(HEADERS, framed[:-1]),
        "length-over-limit": _one(HEADERS, b"\x00\xff\xff\xff\xff" + CHECK),
        "message-over-limit": _one(HEADERS, *_split(frame(b"\x0a" * (MAX_MESSAGE + 1)))),
        "header-20k": _one([*HEADERS, ("x-a", "a" * 20_000)], framed),
        "headers-300": _one(HEADERS + [(f"x-{i}", "a" * 60) for i in range(300)], framed),
        "bad-bin": _one([*HEADERS, ("x-id-bin", "A!==")], framed),
        "bad-timeout": _one([*HEADERS, ("grpc-timeout", "12x")], framed),
        "timeout-1n": _one([*HEADERS, ("grpc-timeout", "1n")], framed),
        "split-frames": _one(HEADERS, framed[:2], framed[2:9], framed[9:]),
        "http1": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4,
    }
    c = Client()  # a message cut across rounds
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, HEADERS)
    c.mark()
    c.conn.send_data(sid, framed[:7])
    c.mark()
    c.conn.send_data(sid, framed[7:], end_stream=True)
    c.flush()
    out["split-rounds"] = bytes(c.out)
    c = Client()  # reset while deciding
    sid = c.call()
    c.mark()
    c.conn.reset_stream(sid)
    c.mark()
    out["reset-deciding"] = bytes(c.out)
    c = Client()  # reset while queued: taken next round, already cancelled
    sid = c.call()
    c.conn.reset_stream(sid)
    c.mark()
    out["reset-queued"] = bytes(c.out)
    c = Client()  # GOAWAY with calls deciding, then more bytes
    for _ in range(3):
        c.call()
    c.mark()
    c.conn.close_connection()
    c.mark()
    out["goaway-deciding"] = bytes(c.out)
    c = Client()  # a burst past the harness's 8 calls outstanding, one reset in between
    sids = [c.call(chunks=(frame(CHECK + b"\x00" * i),)) for i in range(20)]
    c.conn.reset_stream(sids[3])
    c.mark()
    out["burst"] = bytes(c.out)
    c = Client()  # the drain: a call in flight, then a Check, a Plan and a Health refused or not
    c.call()
    c.mark(DRAIN)
    c.call()
    c.call(with_header(":path", f"{SERVICE}/Plan"), (frame(PLAN),))
    c.call(with_header(":path", "/grpc.health.v1.Health/Check"), (frame(HEALTH),))
    c.mark()
    out["drain"] = bytes(c.out)
    c = Client()  # the client gone with calls deciding and queued
    c.call()
    c.mark()
    c.call()
    c.mark(CLOSE)
    out["close-deciding"] = bytes(c.out)
    c = Client()  # a message longer than it declared, past --max-message-bytes in its DATA
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, HEADERS)
    c.conn.send_data(sid, frame(b"\x0a" * (MAX_MESSAGE - 5)))
    c.conn.send_data(sid, b"\x0a" * 10, end_stream=True)
    c.flush()
    out["longer-than-declared"] = bytes(c.out)
    # The request-byte budget (h2_fuzz.c: 4 messages of the maximum): streams left open with
    # large metadata, then with large unfinished messages, while a good call is made.
    for name, headers, chunk in (
        ("budget-metadata", [*HEADERS, ("x-a", "a" * 16_000)], b""),
        ("budget-messages", HEADERS, frame(b"\x0a" * (MAX_MESSAGE - 5))[:-1]),
    ):
        c = Client()
        c.conn.update_settings({h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20})
        c.conn.receive_data(SERVER_WINDOWS)  # what the server grants (nghttp2 tops it up)
        for _ in range(6):
            sid = c.conn.get_next_available_stream_id()
            c.conn.send_headers(sid, headers)
            if chunk:
                c.conn.send_data(sid, chunk)
        c.call()
        c.mark()
        out[name] = bytes(c.out)
    # On a Unix socket's session _h2.c checks the header fields itself (relaxed_header_ok).
    for name in ("check", "check-metadata", "headers-300", "health", "plan", "another-path",
                 "get", "text-plain", "bad-bin"):  # fmt: skip
        out[f"unix-{name}"] = UNIX + out[name]
    go = [(k, "/tmp/pdp.sock" if k == ":authority" else v) for k, v in HEADERS]
    out["unix-authority-path"] = UNIX + _one(go, frame(b""))
    # Pseudo-headers twice, after a regular field, or in trailers (relaxed_order_ok): reset.
    health = "/grpc.health.v1.Health/Check"
    for name, fields, trailers in (
        ("two-paths", [*HEADERS[:3], (":path", health), *HEADERS[3:]], None),
        ("pseudo-after-regular", [*HEADERS[:3], *HEADERS[4:], (":path", health)], None),
        ("pseudo-in-trailers", HEADERS, [(":path", health)]),
    ):
        c = Client()
        c.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                      validate_outbound_headers=False,
                                      normalize_outbound_headers=False)
        )  # fmt: skip
        c.conn.initiate_connection()
        c.out = bytearray(c.conn.data_to_send())
        sid = c.open(fields, frame(CHECK), end=trailers is None)
        if trailers:
            c.conn.send_headers(sid, trailers, end_stream=True)
        c.call()
        c.mark()
        out[f"unix-{name}"] = UNIX + bytes(c.out)
    out.update(streaming())
    out.update(early_replies())
    return out


WATCH = with_header(":path", "/grpc.health.v1.Health/Watch")
REFLECT = with_header(":path", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
LIST_SERVICES = b"\x3a\x00"  # ServerReflectionRequest(list_services="")


def streaming() -> dict[str, bytes]:
    """Streaming calls (_h2_stream.c), the stream pump played by scripts: h2_fuzz.c serves
    the Watch and reflection paths, 4 calls open at most, 8 KiB queued for a client at most."""
    out = {}
    watch = frame(HEALTH)
    c = Client()  # Watch as grpcio's clients make it: the pump echoes, finishes at the half-close
    c.open(WATCH, watch, end=True)
    c.mark()
    out["watch"] = bytes(c.out)
    c = Client()  # open, messages sent by the pump in rounds, finished, then the half-close
    sid = c.open(WATCH, watch)
    c.py(STAKE, ssend(0, 20), SOPS, SEND, ssend(0, 3000), ssend(0, 0), SOPS, SEND)
    c.mark()
    c.py(sfinish(0, 0), SOPS, SEND, STAKE)
    c.conn.end_stream(sid)
    c.mark()
    out["watch-sends"] = bytes(c.out)
    c = Client()  # reset with sends queued, not yet picked up by the I/O thread
    sid = c.open(WATCH, watch)
    c.py(STAKE, ssend(0, 100), ssend(0, 200), sfinish(0, 5, b"gone"))
    c.conn.reset_stream(sid)
    c.py(SOPS, SEND, STAKE, ssend(0, 10), SOPS)
    c.mark()
    out["watch-reset-ops-queued"] = bytes(c.out)
    c = Client()  # a client that reads nothing: its window closed, the sends pile up to the cap
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    sid = c.open(WATCH, watch)
    c.py(STAKE, ssend(0, 1000), SOPS, SEND, ssend(0, 4000), SOPS, SEND, ssend(0, 4000), SOPS,
         SEND, STAKE, ssend(0, 5), SOPS)  # fmt: skip
    c.window(sid, 1 << 16)
    c.mark()
    out["watch-window-cap"] = bytes(c.out)
    c = Client()  # finished while its messages wait for the window: trailers after them
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16})
    sid = c.open(WATCH, watch)
    c.py(STAKE, ssend(0, 100), ssend(0, 50), sfinish(0, 9, b"later \xe9"), SOPS, SEND)
    c.window(sid, 60)
    c.py(SEND)
    c.window(sid, 1000)
    c.mark()
    out["watch-window-finish"] = bytes(c.out)
    c = Client()  # one message larger than the cap at once
    c.open(WATCH, watch)
    c.py(STAKE, ssend(0, 9000), SOPS, SEND, STAKE)
    c.mark()
    out["watch-over-cap"] = bytes(c.out)
    c = Client()  # GOAWAY from the client with two calls open, then sends to both
    c.open(WATCH, watch)
    c.open(REFLECT, frame(LIST_SERVICES))
    c.py(STAKE, ssend(0, 30), SOPS)
    c.conn.close_connection()
    c.py(ssend(0, 40), ssend(1, 50), sfinish(1, 0), SOPS, SEND, STAKE)
    c.mark()
    out["watch-goaway"] = bytes(c.out)
    c = Client()  # the client gone with sends queued and a call opened but not yet taken
    c.open(WATCH, watch)
    c.py(STAKE, ssend(0, 30), SOPS, ssend(0, 40))
    c.open(REFLECT, frame(LIST_SERVICES))
    c.mark(CLOSE)
    out["watch-close"] = bytes(c.out)
    c = Client()  # more calls than may be open: RESOURCE_EXHAUSTED; one finished, one more opens
    for _ in range(6):
        c.open(WATCH, watch)
    c.py(STAKE, sfinish(1, 0), SOPS, SEND)
    c.open(WATCH, watch)
    c.mark()
    out["watch-too-many"] = bytes(c.out)
    c = Client()  # refused at the open, as a unary call would be; then one with a deadline
    for headers in (
        [(n, "GET" if n == ":method" else v) for n, v in WATCH],
        [(n, "text/plain" if n == "content-type" else v) for n, v in WATCH],
        [*WATCH, ("grpc-encoding", "br")],
        [*WATCH, ("grpc-timeout", "12x")],
        [*WATCH, ("grpc-timeout", "1n"), ("x-id-bin", "AAEC")],
    ):
        c.open(headers, watch, end=True)
    c.mark()
    out["watch-refused"] = bytes(c.out)
    c = Client()  # finishes with codes out of range, a message with a NUL, calls that are none
    c.open(WATCH, watch)
    c.open(WATCH, watch)
    c.py(STAKE, sfinish(0, -1, b"minus"), sfinish(1, 17, b"a\x00b"), sfinish(255, 3, b"none"),
         ssend(255, 7), SOPS, SEND, sfinish(1, 16, b"\xff%"), SOPS, SEND)  # fmt: skip
    c.mark()
    out["watch-finish-codes"] = bytes(c.out)
    c = Client()  # pings while a call is open: strikes, then GOAWAY too_many_pings
    c.open(WATCH, watch)
    c.py(STAKE)
    for i in range(4):
        c.conn.ping(bytes([i]) * 8)
    c.py(ssend(0, 10), SOPS, SEND)
    c.mark()
    out["watch-pings"] = bytes(c.out)
    # A reflection stream: messages split across frames, two in a frame, one gzip-compressed.
    c = Client()
    sid = c.open([*REFLECT, ("grpc-encoding", "gzip")])
    m = frame(LIST_SERVICES)
    for chunk in (m[:3], m[3:] + m, frame(gzip.compress(LIST_SERVICES * 50, mtime=0), flag=1)):
        c.conn.send_data(sid, chunk)
        c.py(STAKE, ssend(0, 60), SOPS, SEND)
    c.mark()
    c.conn.send_data(sid, m, end_stream=True)
    c.py(STAKE, ssend(0, 70), sfinish(0, 16, b"done"), SOPS, SEND)
    c.mark()
    out["reflection-messages"] = bytes(c.out)
    for name, headers, body in (
        # malformed gzip after a reply went out: trailers INTERNAL after the data
        ("reflection-bad-gzip", [*REFLECT, ("grpc-encoding", "gzip")], frame(b"\x1f\x8bxx", flag=1)),
        ("reflection-deflate-bomb", [*REFLECT, ("grpc-encoding", "deflate")],
         frame(zlib.compress(b"\x00" * 40_000), flag=1)),
        ("reflection-flag-2", REFLECT, frame(LIST_SERVICES, flag=2)),
        ("reflection-over-limit", REFLECT, b"\x00\x00\x01\x00\x00" + b"\x0a" * 100),
    ):  # fmt: skip
        c = Client()
        sid = c.open(headers, m)
        c.py(STAKE, ssend(0, 10), SOPS, SEND)
        c.conn.send_data(sid, body)
        c.py(STAKE, ssend(0, 10), SOPS, SEND)
        c.mark()
        out[name] = bytes(c.out)
    c = Client()  # a message cut short by the half-close
    sid = c.open(REFLECT, m + m[:4])
    c.conn.end_stream(sid)
    c.mark()
    out["reflection-cut-short"] = bytes(c.out)
    c = Client()  # streams holding unfinished messages: the request-byte budget
    c.conn.update_settings({h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 1 << 20})
    c.conn.receive_data(SERVER_WINDOWS)
    for _ in range(4):
        c.open(REFLECT, *_split(frame(b"\x0a" * (MAX_MESSAGE - 5))[:-1]))
    c.call()
    c.mark()
    out["reflection-budget"] = bytes(c.out)
    # The request-byte budget (4 messages of the maximum) held by three unary calls' unfinished
    # messages: a reflection stream's message then finds too little left, as received or as
    # inflated.
    for name, headers, body in (
        ("budget-streams", REFLECT, frame(b"\x0a" * (MAX_MESSAGE - 5))[:-1]),
        ("budget-inflate", [*REFLECT, ("grpc-encoding", "gzip")],
         frame(gzip.compress(b"\x0a" * (MAX_MESSAGE - 100), mtime=0), flag=1)),
    ):  # fmt: skip
        c = Client()
        c.conn.receive_data(SERVER_WINDOWS)
        for _ in range(3):
            c.open(HEADERS, *_split(frame(b"\x0a" * (MAX_MESSAGE - 5))[:-1]))
        for _ in range(2):
            c.open(headers, *_split(body))
        c.py(STAKE, ssend(0, 10), ssend(1, 10), SOPS, SEND)
        c.mark()
        out[name] = bytes(c.out)
    # The budget taken back from the requests holding it longest (_h2.c, budget_claim): a
    # Watch's unfinished message (the oldest) and three unary calls' hold it all; a call, then
    # a compressed one as inflated, take it back, oldest first (each reset); the pump then
    # sends to the reclaimed Watch, and the client ends the reclaimed calls (no answer).
    unfinished = _split(frame(b"\x0a" * (MAX_MESSAGE - 5))[:-1])
    c = Client()
    c.conn.receive_data(SERVER_WINDOWS)
    c.open(WATCH, *unfinished)
    held = [c.open(HEADERS, *unfinished) for _ in range(3)]
    c.call()
    gz = gzip.compress(b"\x0a" * (MAX_MESSAGE - 100), mtime=0)
    c.call([*HEADERS, ("grpc-encoding", "gzip")], (frame(gz, flag=1),))
    c.py(STAKE, ssend(0, 10), SOPS, take(), SEND)
    for sid in held[:2]:
        c.conn.send_data(sid, b"\x0a", end_stream=True)
    c.mark()
    c.py(answer(), PICKUP, SEND)
    c.mark()
    out["budget-reclaimed"] = bytes(c.out)
    c = Client()  # a Watch beside unary calls: a reply early while the pump sends
    sid = c.open(WATCH, watch)
    c.call()
    c.call()
    c.py(STAKE, take(), ssend(0, 10), reply(0, ECHO), PICKUP, SOPS, SEND)
    c.conn.end_stream(sid)
    c.mark()
    out["watch-and-check"] = bytes(c.out)
    # The idle sweep and keepalive PINGs (SWEEP t: as if t * 10 s later): a PING to a Watch's
    # connection after 60 s with nothing read, answered (its ACK, by its opaque data) or not
    # (GOAWAY keepalive_timeout 20 s later), and the idle timeout once nothing is open.
    ack = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00pdp-kalv"  # PING ACK, the server's data
    c = Client()
    sid = c.open(WATCH, watch)
    c.py(STAKE, SWEEP, 7, SEND)
    c.out += ack
    c.py(SWEEP, 3, SWEEP, 7, SEND)  # answered: a PING again, not the GOAWAY
    c.out += ack
    c.conn.reset_stream(sid)
    c.py(SWEEP, 40, SEND, STAKE)  # nothing open: the idle timeout
    c.mark()
    out["keepalive-answered"] = bytes(c.out)
    c = Client()
    c.open(WATCH, watch)
    c.call()
    c.py(STAKE, take(), SWEEP, 7, SEND, SWEEP, 12, SEND, ssend(0, 10), reply(0, ECHO), SOPS,
         PICKUP, SEND, STAKE)  # fmt: skip
    c.mark()
    out["keepalive-timeout"] = bytes(c.out)
    out["unix-watch"] = UNIX + out["watch"]
    out["unix-watch-sends"] = UNIX + out["watch-sends"]
    return out


def early_replies() -> dict[str, bytes]:
    """Calls answered one by one (reply(i, r): _h2.c's early reply path), before their batch
    ends, with the client's frames between."""
    out = {}
    c = Client()  # four calls; replies early, a reset between, an index past the batch
    sids = [c.call(chunks=(frame(CHECK + b"\x00" * i),)) for i in range(4)]
    c.py(take(), reply(0, ECHO), PICKUP, SEND, ask(1), reply(1, ERROR, 7), ask(1))
    c.conn.reset_stream(sids[3])
    c.py(ask(3), sized(2, 40_000), PICKUP, reply(3, NONE), reply(9, ECHO), reply(0, ECHO),
         answer(), PICKUP, SEND)  # fmt: skip
    c.mark()
    out["early-reply"] = bytes(c.out)
    c = Client()  # GOAWAY from the client between a reply and its pick-up
    for _ in range(3):
        c.call()
    c.py(take(), reply(0, ECHO), reply(1, ERROR, 3))
    c.conn.close_connection()
    c.py(PICKUP, SEND, answer(), PICKUP, SEND)
    c.mark()
    out["early-reply-goaway"] = bytes(c.out)
    c = Client()  # a reply larger than the client's window: sent as it opens
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    sid = c.call()
    c.py(take(), sized(0, 20_000), PICKUP, SEND)
    c.window(sid, 5000)
    c.py(SEND)
    c.window(sid, 1 << 16)
    c.mark()
    out["early-reply-window"] = bytes(c.out)
    c = Client()  # the client gone with replies queued, not yet picked up
    for _ in range(3):
        c.call()
    c.py(take(), reply(0, ECHO), reply(2, ERROR, 5))
    c.mark(CLOSE)
    out["early-reply-close"] = bytes(c.out)
    c = Client()  # reset between the reply and its pick-up
    sids = [c.call() for _ in range(2)]
    c.py(take(), reply(1, ECHO))
    c.conn.reset_stream(sids[1])
    c.py(PICKUP, SEND, answer(), PICKUP, SEND)
    c.mark()
    out["early-reply-reset"] = bytes(c.out)
    c = Client()  # answer() given no list: the calls not replied to fail INTERNAL
    for _ in range(3):
        c.call()
    c.py(take(), reply(1, ECHO), answer(bad=True), PICKUP, SEND, take(), answer())
    c.mark()
    out["early-reply-bad-answer"] = bytes(c.out)
    c = Client()  # replies Python got wrong: codes out of range, details not base64, no str
    for _ in range(6):
        c.call()
    c.py(take(), reply(0, ERROR, 0), reply(1, ERROR, 17), reply(2, ERROR_BAD_DETAILS, 3),
         reply(3, MALFORMED), reply(4, MALFORMED_INT), reply(5, ERROR, -5), PICKUP, SEND,
         answer(), PICKUP, SEND)  # fmt: skip
    c.mark()
    out["early-reply-malformed"] = bytes(c.out)
    c = Client()  # the drain begins with a batch out, replies early then
    for _ in range(2):
        c.call()
    c.py(take())
    c.mark(DRAIN)
    c.py(reply(0, ECHO), PICKUP, SEND)
    c.call()
    c.mark()
    out["early-reply-drain"] = bytes(c.out)
    return out


def main() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)
    CORPUS.mkdir()
    for name, data in seeds().items():
        (CORPUS / name).write_bytes(data)
    print(f"{len(seeds())} seeds in {CORPUS}")


if __name__ == "__main__":
    main()

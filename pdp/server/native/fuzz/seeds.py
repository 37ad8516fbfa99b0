"""Writes the fuzz harness's seed corpus (corpus/): what clients send, one connection per
file, from a connection preface on: good calls (Check, Health, Plan, ServerInfo, with
metadata and deadlines), the hostile requests of tests/security/test_native_transport.py,
and calls cut into rounds (h2_fuzz.c's "|pdp-next|") so a reset or a GOAWAY reaches a call
still deciding, and the drain ("|pdp-drain|"). Needs `h2` (a test dependency).

    .venv/bin/python pdp/server/native/fuzz/seeds.py      # rewrites corpus/
"""

from __future__ import annotations

import shutil
import struct
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
    return out


def main() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)
    CORPUS.mkdir()
    for name, data in seeds().items():
        (CORPUS / name).write_bytes(data)
    print(f"{len(seeds())} seeds in {CORPUS}")


if __name__ == "__main__":
    main()

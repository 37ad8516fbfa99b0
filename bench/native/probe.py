"""Hostile requests against the native front end: each must get its gRPC status, none a decision.

    .venv/bin/python bench/native/probe.py PORT      # a running `serve.py` (compare_native runs it)

h2front.c takes network input, so even in a bench it must refuse what it does not handle: a
message over the size limit, compression, another method or content type, anything but one
framed message, oversized headers, and bytes that are not HTTP/2. After all of them, a good
call must still be decided. Raw frames come from `h2` (the `bench` extra).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers import grpcload, workload

CHECK = grpcload.PDP_CHECK
HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "127.0.0.1"),
    (":path", CHECK),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def _with(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in HEADERS]


def raw_call(port: int, headers: list[tuple[str, str]], chunks: list[bytes]) -> str:
    """One stream of `headers` and DATA `chunks`; the grpc-status it ended with, or `reset`."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=not chunks)
        for i, chunk in enumerate(chunks):
            conn.send_data(sid, chunk, end_stream=i == len(chunks) - 1)
        sock.sendall(conn.data_to_send())
        status = "none"
        while data := sock.recv(65536):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    status = dict(ev.headers).get("grpc-status", status)
                if isinstance(ev, h2.events.StreamReset):
                    return "reset"
                if isinstance(ev, h2.events.StreamEnded):
                    return status
            sock.sendall(conn.data_to_send())
    return "closed"


def grpc_call(port: int, payload: bytes, **kw: object) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(CHECK, request_serializer=None, response_deserializer=None)
        try:
            call(payload, timeout=10, **kw)
            return "0"
        except grpc.RpcError as exc:
            return str(exc.code().value[0])


def probe(port: int) -> list[str]:
    """The failures (empty: every probe got its status)."""
    good = grpcload.pdp_payload(workload.generate(1)[0])
    framed = grpcload.frame(good)
    cases: list[tuple[str, str, object]] = [
        ("a good call", "0", lambda: grpc_call(port, good)),
        ("5 MiB message", "8", lambda: grpc_call(port, b"\x0a" + b"x" * (5 << 20))),
        ("gzip", "0", lambda: grpc_call(port, good, compression=grpc.Compression.Gzip)),
        ("not protobuf", "3", lambda: grpc_call(port, b"\xff\xff\xff")),
        ("another path", "12", lambda: raw_call(port, _with(":path", "/x.Y/Z"), [framed])),
        ("GET", "12", lambda: raw_call(port, _with(":method", "GET"), [])),
        ("text/plain", "12", lambda: raw_call(port, _with("content-type", "text/plain"), [framed])),
        ("two messages", "13", lambda: raw_call(port, HEADERS, [framed + framed])),
        ("no message", "13", lambda: raw_call(port, HEADERS, [])),
        ("3 bytes", "13", lambda: raw_call(port, HEADERS, [framed[:3]])),
        ("length too long", "13", lambda: raw_call(port, HEADERS, [framed[:-1]])),
        ("compressed flag", "13", lambda: raw_call(port, HEADERS, [b"\x01" + framed[1:]])),
        (
            "20 KB header",
            "reset",
            lambda: raw_call(port, [*HEADERS, ("x-a", "a" * 20_000)], [framed]),
        ),
        (
            "300 headers",
            "reset",
            lambda: raw_call(port, HEADERS + [(f"x-{i}", "a" * 60) for i in range(300)], [framed]),
        ),
        (
            "split frames",
            "0",
            lambda: raw_call(port, HEADERS, [framed[:2], framed[2:9], framed[9:]]),
        ),
        ("HTTP/1.1 bytes", "closed", lambda: _garbage(port)),
        ("a good call after", "0", lambda: grpc_call(port, good)),
    ]
    failures = []
    for name, want, run in cases:
        got = run()  # type: ignore[operator]
        if got != want:
            failures.append(f"{name}: got {got}, want {want}")
    return failures


def _garbage(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        while sock.recv(65536):  # the server's SETTINGS, then GOAWAY, then close
            pass
    return "closed"


def main() -> int:
    failures = probe(int(sys.argv[1]))
    for f in failures:
        print(f"probe: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

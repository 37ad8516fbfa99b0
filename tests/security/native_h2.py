"""Raw HTTP/2 calls for the native transport's tests (`h2`, a test dependency): what a grpc
client would never send, and the trailers it would hide; a raw TLS ClientHello."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct

CHECK = "/pdp.v1.DecisionService/Check"
HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":authority", "127.0.0.1"),
    (":path", CHECK),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message, uncompressed."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def with_header(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in HEADERS]


def _connect(where: int | str, timeout: float) -> socket.socket:
    """127.0.0.1:`where`, or the Unix socket at the path `where`."""
    if isinstance(where, int):
        return socket.create_connection(("127.0.0.1", where), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(where)
    return sock


def raw_call(
    port: int | str,
    headers: list[tuple[str, str]],
    chunks: list[bytes],
    timeout: float = 30,
    *,
    as_given: bool = False,
) -> dict[str, str]:
    """One stream of `headers` and DATA `chunks` (`port`: a Unix socket's path too): the
    response's headers and trailers merged ({"reset": ...} if the stream was reset, {"closed":
    ""} if the connection ended first). `as_given`: the headers unchecked and unchanged (an
    upper-case name, a control character), as a hostile client sends them."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=not as_given,
            normalize_outbound_headers=not as_given,
            validate_inbound_headers=not as_given,
        )
    )
    got: dict[str, str] = {}
    with _connect(port, timeout) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=not chunks)
        for i, chunk in enumerate(chunks):
            conn.send_data(sid, chunk, end_stream=i == len(chunks) - 1)
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    got.update(dict(ev.headers))
                if isinstance(ev, h2.events.StreamReset):
                    return {"reset": str(ev.error_code)}
                if isinstance(ev, h2.events.StreamEnded):
                    return got
            sock.sendall(conn.data_to_send())
    return {"closed": ""}


def raw_calls(port: int, bodies: list[bytes], timeout: float = 60) -> list[str]:
    """Each body a Check on its own stream of one connection, all in one write: the
    grpc-status of each, in order ("reset" for a reset stream)."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sids = []
    for body in bodies:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, HEADERS)
        conn.send_data(sid, frame(body), end_stream=True)
        sids.append(sid)
    status: dict[int, str] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(conn.data_to_send())
        while len(status) < len(sids) and (data := sock.recv(65536)):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    got = dict(ev.headers).get("grpc-status")
                    if got is not None:
                        status[ev.stream_id] = got
                if isinstance(ev, h2.events.StreamReset):
                    status[ev.stream_id] = "reset"
            sock.sendall(conn.data_to_send())
    return [status.get(sid, "none") for sid in sids]


def client_hello(alpn: tuple[str, ...] = ("h2",)) -> bytes:
    """A real ClientHello's bytes (Python's OpenSSL), without a socket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()

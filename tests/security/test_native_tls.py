"""`pdp serve --transport native` with TLS and mTLS, attacked through a real server: handshakes
that are not TLS, random bytes for a ClientHello, client certificates it must refuse, clients
offering no `h2`, handshakes that stall or drip, clients reset mid-handshake, and many
handshakes at once within --max-connections. Each ends with its connection closed (or its call
refused), and the server keeps answering its real clients.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server.certs import CA, Pair
from server.conftest import ALICE, DOC, free_port, write_policies

from pdp.client._convert import request_to_proto
from pdp.server.service import CHECK_RPC

from .native_h2 import client_hello
from .serving import Served, pdp_serve

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

IDLE_S = 3  # --grpc-idle-timeout: it bounds a handshake too
MAX_CONNS = 12
GOOD = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}]).SerializeToString()
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
WAIT_S = 60  # the cap on waiting for a close: generous, never asserted as a duration


class Tls:
    def __init__(self, root: Path) -> None:
        self.ca = CA()
        self.client = self.ca.issue("gateway", dns=("gateway.internal",), server=False)
        pair = self.ca.issue("pdp", dns=("localhost",), server=True)
        self.files = {}
        for name, data in (("cert", pair.cert), ("key", pair.key), ("ca", self.ca.pem)):
            (root / f"{name}.pem").write_bytes(data)
            self.files[name] = str(root / f"{name}.pem")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("native-tls"))


@pytest.fixture(scope="module")
def served(tls: Tls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, int]]:
    port = free_port()
    policies = write_policies(tmp_path_factory.mktemp("native-tls-policies"))
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--transport", "native",
            "--workers", "1", "--grpc-idle-timeout", str(IDLE_S), "--max-connections", str(MAX_CONNS),
            "--tls-cert", tls.files["cert"], "--tls-key", tls.files["key"],
            "--client-ca", tls.files["ca"], "--allow-identity", "gateway.internal"]  # fmt: skip
    with pdp_serve(*argv) as s:
        end = time.monotonic() + 120
        while _call(port, tls.ca, tls.client, timeout=2) != "OK":
            assert s.proc.poll() is None, s.output()
            assert time.monotonic() < end, f"never served:\n{s.output()}"
            time.sleep(0.1)
        yield s, port


def _call(port: int, ca: CA, client: Pair | None, timeout: float = 30) -> str:
    """A Check over TLS: "OK", or its status code's name."""
    creds = grpc.ssl_channel_credentials(
        ca.pem, client.key if client else None, client.cert if client else None
    )
    opts = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, opts) as ch:
        try:
            ch.unary_unary(CHECK_RPC)(GOOD, timeout=timeout)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name


def _still_answers(served: tuple[Served, int], tls: Tls) -> None:
    s, port = served
    assert s.proc.poll() is None, s.output()
    assert _call(port, tls.ca, tls.client) == "OK"


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts)."""
    sock.settimeout(WAIT_S)
    got = b""
    try:
        while data := sock.recv(65536):
            got += data
    except ConnectionResetError:
        pass
    return got


def test_plaintext_http2_to_the_tls_port(served: tuple[Served, int], tls: Tls) -> None:
    """The preface is no ClientHello: closed, never an HTTP/2 frame; a plaintext grpc client
    fails UNAVAILABLE."""
    _s, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(PREFACE)
        got = _until_closed(sock)
    assert not got or got[0] == 0x15, got  # nothing, or a TLS alert record
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(CHECK_RPC)(GOOD, timeout=5)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    _still_answers(served, tls)


_records = st.builds(
    lambda kind, version, body: bytes([kind]) + version + struct.pack(">H", len(body)) + body,
    st.sampled_from([0x16, 0x15, 0x17, 0x14, 0x80]),
    st.sampled_from([b"\x03\x01", b"\x03\x03", b"\x03\x04", b"\x02\x00"]),
    st.binary(max_size=400),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.lists(_records, max_size=4).map(b"".join),
        st.tuples(st.integers(1, 400), st.binary(max_size=200)).map(
            lambda cut: client_hello()[: cut[0]] + cut[1]
        ),
    )
)
def test_random_bytes_as_a_client_hello(served: tuple[Served, int], hello: bytes) -> None:
    _s, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        with contextlib.suppress(OSError):  # the server may have closed it already
            sock.sendall(hello)
            sock.shutdown(socket.SHUT_WR)
        _until_closed(sock)
    assert served[0].proc.poll() is None, served[0].output()


def test_still_answering_after_the_random_bytes(served: tuple[Served, int], tls: Tls) -> None:
    _still_answers(served, tls)


def test_client_certificates_it_must_refuse(served: tuple[Served, int], tls: Tls) -> None:
    """No certificate, one from another CA, an expired one: the handshake fails (UNAVAILABLE),
    as on grpcio (tests/server/test_tls.py); a certificate the allow-list does not name is
    refused PERMISSION_DENIED."""
    _s, port = served
    cases = {
        "none": None,
        "another CA": CA("rogue CA").issue("gateway", dns=("gateway.internal",), server=False),
        "expired": tls.ca.issue("gateway", dns=("gateway.internal",), server=False, expired=True),
        "not allowed": tls.ca.issue("other", dns=("other.internal",), server=False),
    }
    got = {name: _call(port, tls.ca, pair, timeout=5) for name, pair in cases.items()}
    assert got == {"none": "UNAVAILABLE", "another CA": "UNAVAILABLE", "expired": "UNAVAILABLE",
                   "not allowed": "PERMISSION_DENIED"}  # fmt: skip
    _still_answers(served, tls)


@pytest.mark.parametrize("alpn", [(), ("http/1.1",)])
def test_a_client_offering_no_h2_is_closed(
    served: tuple[Served, int], tls: Tls, alpn: tuple[str, ...], tmp_path: Path
) -> None:
    """As grpc: the handshake completes without a protocol, then the connection closes before
    any HTTP/2 byte (grpcio's own server does the same: checked by hand, session 22)."""
    _s, port = served
    (tmp_path / "c.pem").write_bytes(tls.client.cert)
    (tmp_path / "k.pem").write_bytes(tls.client.key)
    ctx = ssl.create_default_context(cadata=tls.ca.pem.decode())
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        assert sock.selected_alpn_protocol() is None
        with contextlib.suppress(ssl.SSLError, OSError):
            sock.sendall(PREFACE)
        got = b""
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            while data := sock.recv(65536):
                got += data
    assert got == b""  # no SETTINGS: closed before HTTP/2
    _still_answers(served, tls)


def _handshake(port: int, tls: Tls, tmp_path: Path, version: ssl.TLSVersion, ciphers: str) -> str:
    """A Python client's handshake, offering only `version` and `ciphers` (TLS 1.2 and below):
    the protocol agreed, or "refused"."""
    (tmp_path / "c.pem").write_bytes(tls.client.cert)
    (tmp_path / "k.pem").write_bytes(tls.client.key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=tls.ca.pem.decode())
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = version
    ctx.set_ciphers(ciphers)
    ctx.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            return str(sock.version())
    except (ssl.SSLError, OSError):
        return "refused"


def test_tls_versions_and_suites_as_grpcio(
    served: tuple[Served, int], tls: Tls, tmp_path: Path
) -> None:
    """TLS 1.3, and TLS 1.2 with grpc's ECDHE AES-GCM suites; not 1.2 with CBC or ChaCha20
    (grpcio's server refuses both too), nor TLS 1.1."""
    _s, port = served
    v12, v11 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion["TLSv1_1"]
    got = {
        "1.3": _handshake(port, tls, tmp_path, ssl.TLSVersion.TLSv1_3, "DEFAULT"),
        "1.2 GCM": _handshake(port, tls, tmp_path, v12, "ECDHE-ECDSA-AES128-GCM-SHA256"),
        "1.2 CBC": _handshake(port, tls, tmp_path, v12, "ECDHE-ECDSA-AES128-SHA256"),
        "1.2 ChaCha20": _handshake(port, tls, tmp_path, v12, "ECDHE-ECDSA-CHACHA20-POLY1305"),
        "1.1": _handshake(port, tls, tmp_path, v11, "ALL:@SECLEVEL=0"),
    }
    assert got == {"1.3": "TLSv1.3", "1.2 GCM": "TLSv1.2", "1.2 CBC": "refused",
                   "1.2 ChaCha20": "refused", "1.1": "refused"}  # fmt: skip
    _still_answers(served, tls)


def test_stalled_handshakes_are_closed(served: tuple[Served, int], tls: Tls) -> None:
    """A client silent after connecting, one that stops mid-ClientHello, and one dripping its
    ClientHello a byte at a time (which keeps it active, not finished): each closed by the
    idle timeout, counted from the accept."""
    _s, port = served
    hello = client_hello()
    silent = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    half = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    half.sendall(hello[: len(hello) // 2])
    drip = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    closed, end, at = False, time.monotonic() + WAIT_S, 0
    while not closed and time.monotonic() < end and at < len(hello):
        try:
            drip.sendall(hello[at : at + 1])
        except OSError:
            closed = True
            break
        at += 1
        if select.select([drip], [], [], 0.2)[0]:
            closed = _until_closed(drip) == b""
    assert closed, f"still open after {at} of the ClientHello's {len(hello)} bytes"
    for sock in (silent, half, drip):
        with sock:
            assert _until_closed(sock) == b""  # closed without a byte of TLS or HTTP/2
    _still_answers(served, tls)


def test_clients_reset_mid_handshake(served: tuple[Served, int], tls: Tls) -> None:
    """Reset (SO_LINGER 0) after part of the ClientHello, after all of it, and right after
    the server's reply began."""
    _s, port = served
    hello = client_hello()
    for cut in (5, len(hello) // 2, len(hello), -1):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(hello if cut < 0 else hello[:cut])
            if cut < 0:
                sock.recv(1)  # the ServerHello has started
    _still_answers(served, tls)


def test_many_handshakes_at_once(served: tuple[Served, int], tls: Tls) -> None:
    """Ten TLS clients handshaking and calling at once, within --max-connections: all answered.
    (Past it, a new connection is closed at accept: tests/server/test_native_tls.py.)"""
    _s, port = served
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(_call(port, tls.ca, tls.client)))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert results == ["OK"] * 10
    _still_answers(served, tls)

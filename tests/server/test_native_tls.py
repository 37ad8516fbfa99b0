"""TLS and mTLS on the native transport (pdp.server.native, `_tls.c`), beside grpcio's: the same
auth context for the same client (asked of a real grpcio server with pdp's credentials), the
same replies, the allow-list's same refusals, grpcurl over TLS. (Hostile handshakes:
tests/security/test_native_tls.py.)

The extension runs one server per process: each test starts its own, in this process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from security.native_h2 import client_hello

from pdp.client import Client
from pdp.engine import Engine, EngineHolder
from pdp.server import ServerConfig, TlsConfig
from pdp.server.service import CHECK_RPC

from .certs import CA, Pair
from .conftest import ALICE, DOC, running, running_native
from .test_server import Recorder, grpcurl_binary

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native.server import NativeServer

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "spiffe://example.org/ns/edge/sa/gateway"
INTRUDER = "spiffe://example.org/ns/dev/sa/intruder"
ALLOWED = frozenset({GATEWAY, "billing.internal"})
CHECK, SERVER_INFO = 0, 3  # NativeServer's method numbers (SERVED)
# The one property that differs: grpcio's BoringSSL agrees X25519MLKEM768 with a grpcio
# client; Debian 12's OpenSSL 3.0 has no ML-KEM, so the same client gets X25519.
GROUP = "ssl_negotiated_key_exchange_group"


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="module")
def server_pair(ca: CA) -> Pair:
    return ca.issue("pdp", dns=("localhost",), server=True)


def _odd_subject() -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ü+x"),
        ]
    )


CLIENTS: dict[str, Callable[[CA], Pair | None]] = {
    "no client certificate": lambda ca: None,
    "DNS and SPIFFE SANs": lambda ca: ca.issue(
        "client", dns=("billing.internal",), uris=(GATEWAY,), server=False
    ),
    # No CN, an escaped multi-valued subject, e-mail, IPv4/IPv6, two URIs, a registered id.
    "odd names": lambda ca: ca.issue(
        "",
        subject=_odd_subject(),
        uris=("spiffe://x.org/w", "urn:x:y"),
        dns=("Z.example",),
        server=False,
        other_sans=(
            x509.RFC822Name("a@b.c"),
            x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
            x509.IPAddress(ipaddress.ip_address("::1")),
            x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
        ),
    ),
    "through an intermediate CA": lambda ca: CA("inter", parent=ca).issue(
        "leaf", dns=("x.internal",), server=False
    ),
}


def _tls(pair: Pair, ca: CA, mtls: bool) -> TlsConfig:
    return TlsConfig(pair.cert, pair.key, client_ca_pem=ca.pem if mtls else None)


@contextmanager
def native(
    engine: Engine, tls: TlsConfig, observer: Any = None, **kw: Any
) -> Iterator[NativeServer]:
    config = ServerConfig(listen=("127.0.0.1:0",), tls=tls, **kw)
    with running_native(EngineHolder(engine), config, observer=observer) as server:
        yield server


@contextmanager
def grpcio_capture(tls: TlsConfig) -> Iterator[tuple[int, list[Any]]]:
    """A grpcio server with pdp's credentials (pdp.server.server), recording each call's
    (auth_context(), peer_identity_key(), peer_identities())."""
    seen: list[Any] = []

    def handler(_request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(_auth_of(context))
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "x.Y", {"Z": grpc.unary_unary_rpc_method_handler(handler)}
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [(tls.key_pem, tls.cert_pem)],
        root_certificates=tls.client_ca_pem,
        require_client_auth=tls.client_ca_pem is not None,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port, seen
    finally:
        server.stop(0)


def _auth_of(context: Any) -> tuple[dict[str, list[bytes]], str | None, list[bytes] | None]:
    return context.auth_context(), context.peer_identity_key(), context.peer_identities()


def _capture(server: NativeServer, method: int) -> list[Any]:
    """Records what each call of `method` sees of its auth, then answers as before."""
    seen: list[Any] = []
    answer = server._methods[method]

    def recording(body: bytes, context: Any) -> Any:
        seen.append(_auth_of(context))
        return answer(body, context)

    server._methods[method] = recording
    return seen


def _channel(port: int, ca: CA, client: Pair | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        ca.pem, client.key if client else None, client.cert if client else None
    )
    return grpc.secure_channel(
        f"127.0.0.1:{port}", creds, (("grpc.ssl_target_name_override", "localhost"),)
    )


def _check_bytes() -> bytes:
    from pdp.client._convert import request_to_proto

    return request_to_proto(ALICE, [{**DOC, "actions": ["read"]}]).SerializeToString()


@pytest.mark.parametrize("client_kind", CLIENTS)
def test_auth_context_equals_grpcios(
    client_kind: str, ca: CA, server_pair: Pair, engine: Engine
) -> None:
    """Every key and value grpcio's auth_context() has for the same client, in the same order,
    and its peer identity key and identities; the key-exchange group aside (see GROUP)."""
    client = CLIENTS[client_kind](ca)
    tls = _tls(server_pair, ca, mtls=client is not None)
    with grpcio_capture(tls) as (port, want), _channel(port, ca, client) as ch:
        ch.unary_unary("/x.Y/Z")(b"", timeout=10)
    with native(engine, tls) as server, _channel(server.port, ca, client) as ch:
        got = _capture(server, CHECK)
        ch.unary_unary(CHECK_RPC)(_check_bytes(), timeout=10)
    (want_auth, want_key, want_ids), (got_auth, got_key, got_ids) = want[0], got[0]
    assert want_auth.pop(GROUP) and got_auth.pop(GROUP) == [b"X25519"]
    assert got_auth == want_auth
    assert (got_key, got_ids) == (want_key, want_ids)
    if client is not None:
        assert got_auth["x509_pem_cert"] == [client.cert[: client.cert.index(b"-----END") + 26]]


def test_mtls_replies_and_allow_list_as_grpcio(ca: CA, server_pair: Pair, engine: Engine) -> None:
    """With --allow-identity: an allowed caller's Check equal to grpcio's (ids aside) and its
    identity the decision's; another caller refused with grpcio's very status and message,
    Check, ServerInfo and reflection (a stream) alike; health open to it, as on grpcio."""
    tls = _tls(server_pair, ca, mtls=True)
    allowed = ca.issue("gateway", uris=(GATEWAY,), server=False)
    intruder = ca.issue("intruder", uris=(INTRUDER,), server=False)

    def outcomes(port: int) -> list[Any]:
        got: list[Any] = []
        for pair in (allowed, intruder):
            with _channel(port, ca, pair) as ch:
                for path, body in (
                    (CHECK_RPC, _check_bytes()),
                    ("/pdp.v1.DecisionService/ServerInfo", b""),
                ):
                    try:
                        reply = ch.unary_unary(path)(body, timeout=10)
                        got.append(("ok", path, _without_ids(path, reply)))
                    except grpc.RpcError as exc:
                        got.append((exc.code(), exc.details()))
                health = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                got.append(health.status)
                got.append(_reflected(ch))
        return got

    want_seen, got_seen = Recorder(), Recorder()
    with running(
        EngineHolder(engine),
        ServerConfig(listen=("127.0.0.1:0",), tls=tls, allow_identities=ALLOWED),
        observer=want_seen,
    ) as grpcio:
        want = outcomes(grpcio.port)
    with native(engine, tls, observer=got_seen, allow_identities=ALLOWED) as server:
        got = outcomes(server.port)
    assert got == want
    assert want[4] == (grpc.StatusCode.PERMISSION_DENIED, want[4][1]) and INTRUDER in want[4][1]
    assert "pdp.v1.DecisionService" in want[3] and want[7] == want[4]  # reflection
    # Only the allowed caller's Check was decided, observed with its identity.
    assert [r.peer_identity for r in got_seen.records] == [GATEWAY]
    assert [r.peer_identity for r in want_seen.records] == [GATEWAY]


def _reflected(ch: grpc.Channel) -> Any:
    """The services reflection lists, or how the stream was refused."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return sorted(s.name for s in reply.list_services_response.service)


def _without_ids(path: str, reply: bytes) -> bytes:
    from pdp.server._gen.pdp.v1 import decision_pb2 as pb

    if path != CHECK_RPC:
        return b"server info"  # its times and ids are the server's own
    msg = pb.CheckResponse.FromString(reply)
    msg.ClearField("decision_id")
    msg.ClearField("evaluated_at")
    return msg.SerializeToString(deterministic=True)


def test_pdp_client_and_grpcurl_over_tls(
    ca: CA, server_pair: Pair, engine: Engine, tmp_path: Path
) -> None:
    """pdp's own client with a client certificate; grpcurl with -cacert/-cert/-key (without a
    certificate it is refused: tests/security/test_native_tls.py, with a grpc client)."""
    pair = ca.issue("billing", dns=("billing.internal",), server=False)
    for name, data in (("ca.pem", ca.pem), ("c.pem", pair.cert), ("k.pem", pair.key)):
        (tmp_path / name).write_bytes(data)
    with native(engine, _tls(server_pair, ca, mtls=True), allow_identities=ALLOWED) as server:
        with Client(
            f"127.0.0.1:{server.port}",
            ca=ca.pem,
            cert=pair.cert,
            key=pair.key,
            server_name="localhost",
            timeout=10,
        ) as client:
            assert client.is_allowed(ALICE, DOC, "read")
        if not shutil.which(grpcurl_binary()):
            pytest.skip("no grpcurl")
        argv = [
            grpcurl_binary(),
            "-cacert",
            str(tmp_path / "ca.pem"),
            "-authority",
            "localhost",
            "-import-path",
            str(ROOT / "proto"),
            "-proto",
            "pdp/v1/decision.proto",
        ]
        target, method = f"127.0.0.1:{server.port}", "pdp.v1.DecisionService/ServerInfo"
        cert = ["-cert", str(tmp_path / "c.pem"), "-key", str(tmp_path / "k.pem")]
        ok = subprocess.run(
            [*argv, *cert, target, method], capture_output=True, text=True, timeout=60
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["pdpVersion"], ok.stdout


def test_handshakes_past_max_connections_are_closed_at_accept(
    ca: CA, server_pair: Pair, engine: Engine
) -> None:
    """Every slot of --max-connections held by a handshake that stalls: one more connection is
    closed at accept (a whole ClientHello gets no ServerHello). Freed, the slots serve again.
    In this process, so that no other client's connection holds a slot meanwhile."""
    hello, client = client_hello(), ca.issue("c", dns=("billing.internal",), server=False)
    with native(engine, _tls(server_pair, ca, mtls=True), max_connections=3) as server:
        stalled = [
            socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(3)
        ]
        for sock in stalled:
            sock.sendall(hello[:10])
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as extra:
            extra.sendall(hello)
            # Closed at accept (reset: the ClientHello went unread), not answered.
            with contextlib.suppress(ConnectionResetError):
                assert extra.recv(65536) == b""
        for sock in stalled:
            sock.close()
        end, got = time.monotonic() + 60, ""
        while got != "ok" and time.monotonic() < end:
            with _channel(server.port, ca, client) as ch:
                try:
                    ch.unary_unary(CHECK_RPC)(_check_bytes(), timeout=5)
                    got = "ok"
                except grpc.RpcError as exc:
                    got = exc.code().name
        assert got == "ok"


def test_a_large_check_over_tls_equals_grpcios(ca: CA, server_pair: Pair, engine: Engine) -> None:
    """500 resources, each with a 1,000-character attribute (about 0.6 MB in, many TLS records
    each way, more than one read and write turn): the same reply as grpcio's."""
    from pdp.client._convert import request_to_proto

    resources = [
        {**DOC, "id": f"d{i}", "attr": {"owner": "alice", "pad": "x" * 1000}, "actions": ["read"]}
        for i in range(500)
    ]
    body = request_to_proto(ALICE, resources).SerializeToString()
    tls = _tls(server_pair, ca, mtls=False)

    def check(port: int) -> bytes:
        with _channel(port, ca, None) as ch:
            return _without_ids(CHECK_RPC, ch.unary_unary(CHECK_RPC)(body, timeout=60))

    with running(EngineHolder(engine), ServerConfig(listen=("127.0.0.1:0",), tls=tls)) as grpcio:
        want = check(grpcio.port)
    with native(engine, tls) as server:
        got = check(server.port)
    assert got == want and len(body) > 500_000


def test_a_resumed_session_as_grpcio(ca: CA, server_pair: Pair, engine: Engine) -> None:
    """A second channel sharing the first's session cache resumes its TLS session (a ticket)
    on both transports: the same auth context, `ssl_session_reused` true, the client's
    certificate still there."""
    from grpc.experimental.session_cache import ssl_session_cache_lru

    client = CLIENTS["DNS and SPIFFE SANs"](ca)
    assert client is not None
    tls = _tls(server_pair, ca, mtls=True)
    creds = grpc.ssl_channel_credentials(ca.pem, client.key, client.cert)

    def twice(port: int, path: str, body: bytes) -> None:
        cache = ssl_session_cache_lru(8)
        opts = (("grpc.ssl_target_name_override", "localhost"), ("grpc.ssl_session_cache", cache))
        for _ in range(2):
            with grpc.secure_channel(f"127.0.0.1:{port}", creds, opts) as ch:
                ch.unary_unary(path)(body, timeout=10)

    with grpcio_capture(tls) as (port, want):
        twice(port, "/x.Y/Z", b"")
    with native(engine, tls) as server:
        got = _capture(server, CHECK)
        twice(server.port, CHECK_RPC, _check_bytes())
    for seen in (want, got):
        seen[1][0].pop(GROUP)
        assert [s[0]["ssl_session_reused"] for s in seen] == [[b"false"], [b"true"]]
    assert got[1] == want[1]


def test_the_auth_context_is_made_once_per_connection(
    ca: CA, server_pair: Pair, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three calls on one connection and one on another: the C side's properties are unpacked
    once per connection, and every call of a connection reads the same values."""
    from pdp.server.native import auth

    made: list[bytes] = []
    unpack = auth.unpack
    monkeypatch.setattr(auth, "unpack", lambda packed: made.append(packed) or unpack(packed))
    client = CLIENTS["DNS and SPIFFE SANs"](ca)
    with native(engine, _tls(server_pair, ca, mtls=True)) as server:
        seen = _capture(server, CHECK)
        for calls in (3, 1):
            with _channel(server.port, ca, client) as ch:
                for _ in range(calls):
                    ch.unary_unary(CHECK_RPC)(_check_bytes(), timeout=10)
    assert len(made) == 2 and len(seen) == 4
    assert (
        seen[0] == seen[1] == seen[2] and seen[3][0]["x509_pem_cert"] == seen[0][0]["x509_pem_cert"]
    )

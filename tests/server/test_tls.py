"""TLS and mTLS: a required client certificate, and an allow-list of caller identities."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.client import Client
from pdp.engine import Engine, EngineHolder
from pdp.server import PdpServer, ServerConfig, TlsConfig

from .certs import CA
from .conftest import ALICE, DOC, running
from .test_server import Recorder

GATEWAY = "spiffe://example.org/ns/edge/sa/gateway"
INTRUDER = "spiffe://example.org/ns/dev/sa/intruder"


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def mtls_server(ca: CA, engine: Engine, recorder: Recorder) -> Iterator[PdpServer]:
    server_pair = ca.issue("pdp", dns=("localhost",), server=True)
    config = ServerConfig(
        listen=("127.0.0.1:0",),
        tls=TlsConfig(server_pair.cert, server_pair.key, client_ca_pem=ca.pem),
        allow_identities=frozenset({GATEWAY, "billing.internal"}),
    )
    with running(EngineHolder(engine), config, observer=recorder) as server:
        yield server


def mtls_client(server: PdpServer, ca: CA, cert: bytes | None, key: bytes | None) -> Client:
    return Client(
        f"127.0.0.1:{server.port}",
        ca=ca.pem,
        cert=cert,
        key=key,
        server_name="localhost",
        timeout=3,
    )


def test_allowed_spiffe_identity_is_served(
    mtls_server: PdpServer, ca: CA, recorder: Recorder
) -> None:
    pair = ca.issue("gateway", uris=(GATEWAY,), server=False)
    with mtls_client(mtls_server, ca, pair.cert, pair.key) as c:
        assert c.is_allowed(ALICE, DOC, "read")
    assert recorder.records[-1].peer_identity == GATEWAY


def test_allowed_dns_identity_is_served(mtls_server: PdpServer, ca: CA) -> None:
    pair = ca.issue("billing", dns=("billing.internal",), server=False)
    with mtls_client(mtls_server, ca, pair.cert, pair.key) as c:
        assert c.is_allowed(ALICE, DOC, "read")


def test_other_identity_is_refused(mtls_server: PdpServer, ca: CA) -> None:
    pair = ca.issue("intruder", uris=(INTRUDER,), server=False)
    with mtls_client(mtls_server, ca, pair.cert, pair.key) as c:
        with pytest.raises(grpc.RpcError) as info:
            c.check(ALICE, [{**DOC, "actions": ["read"]}])
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert INTRUDER in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            c.server_info()
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Health stays open to any caller with a valid certificate (load balancer probes).
    channel = grpc.secure_channel(
        f"127.0.0.1:{mtls_server.port}",
        grpc.ssl_channel_credentials(ca.pem, pair.key, pair.cert),
        (("grpc.ssl_target_name_override", "localhost"),),
    )
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=3
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_certificate_from_another_ca_is_refused(mtls_server: PdpServer, ca: CA) -> None:
    rogue = CA("rogue CA").issue("gateway", uris=(GATEWAY,), server=False)
    with mtls_client(mtls_server, ca, rogue.cert, rogue.key) as c:
        with pytest.raises(grpc.RpcError) as info:
            c.check(ALICE, [{**DOC, "actions": ["read"]}], timeout=1)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_no_client_certificate_is_refused(mtls_server: PdpServer, ca: CA) -> None:
    with mtls_client(mtls_server, ca, None, None) as c:
        with pytest.raises(grpc.RpcError) as info:
            c.check(ALICE, [{**DOC, "actions": ["read"]}], timeout=1)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_server_tls_without_client_certificates(ca: CA, engine: Engine) -> None:
    pair = ca.issue("pdp", dns=("localhost",), server=True)
    config = ServerConfig(listen=("127.0.0.1:0",), tls=TlsConfig(pair.cert, pair.key))
    with running(EngineHolder(engine), config) as server, mtls_client(server, ca, None, None) as c:
        assert c.is_allowed(ALICE, DOC, "read")

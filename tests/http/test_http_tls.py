"""TLS and mTLS over HTTP: the same flags, certificates and identity allow-list as gRPC."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from authzen.support import Pdp, assert_error, pdp_serve
from server.certs import CA

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

GATEWAY = "spiffe://example.org/ns/edge/sa/gateway"
INTRUDER = "spiffe://example.org/ns/dev/sa/intruder"
BODY = {
    "subject": {
        "type": "user",
        "id": "alice",
        "properties": {"tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
    },
    "action": {"name": "read"},
    "resource": {
        "type": "document",
        "id": "d-100",
        "properties": {"tenant": "acme", "owner": "alice", "classification": "internal"},
    },
}


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="module")
def files(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("certs")
    pairs = {
        "server": ca.issue("pdp", dns=("localhost",), server=True),
        "gateway": ca.issue("gateway", uris=(GATEWAY,), server=False),
        "intruder": ca.issue("intruder", uris=(INTRUDER,), server=False),
    }
    out = {"ca": root / "ca.pem"}
    out["ca"].write_bytes(ca.pem)
    for name, pair in pairs.items():
        out[f"{name}.crt"] = root / f"{name}.crt"
        out[f"{name}.key"] = root / f"{name}.key"
        out[f"{name}.crt"].write_bytes(pair.cert)
        out[f"{name}.key"].write_bytes(pair.key)
    return out


def client_context(files: dict[str, Path], who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(files["ca"]))
    if who is not None:
        ctx.load_cert_chain(str(files[f"{who}.crt"]), str(files[f"{who}.key"]))
    return ctx


def _tls_flags(files: dict[str, Path]) -> list[str]:
    return ["--tls-cert", str(files["server.crt"]), "--tls-key", str(files["server.key"])]


@pytest.fixture(scope="module")
def tls_pdp(files: dict[str, Path]) -> Iterator[Pdp]:
    with pdp_serve(
        *_tls_flags(files), scheme="https", ssl_context=client_context(files, None)
    ) as p:
        yield p


@pytest.fixture(scope="module")
def mtls_pdp(files: dict[str, Path]) -> Iterator[Pdp]:
    flags = [*_tls_flags(files), "--client-ca", str(files["ca"]), "--allow-identity", GATEWAY]
    with pdp_serve(*flags, scheme="https", ssl_context=client_context(files, "gateway")) as p:
        yield p


def test_tls_serves_decisions_over_https(tls_pdp: Pdp) -> None:
    reply = tls_pdp.post("/access/v1/evaluation", BODY)
    assert reply.status == 200
    assert reply.json["decision"] is True
    meta = tls_pdp.get("/.well-known/authzen-configuration").json
    assert meta["policy_decision_point"].startswith("https://")


def test_tls_refuses_plain_http(tls_pdp: Pdp) -> None:
    host, port = tls_pdp.http_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(
            "POST",
            "/access/v1/evaluation",
            body=b"{}",
            headers={"Content-Type": "application/json"},
        )
        status = conn.getresponse().status
    except (ConnectionError, http.client.HTTPException, OSError):
        status = None
    finally:
        conn.close()
    assert status in (None, 400)  # never a decision over cleartext


def test_tls_client_must_trust_the_server(tls_pdp: Pdp, files: dict[str, Path]) -> None:
    strict = ssl.create_default_context()  # the system CAs only
    with pytest.raises(ssl.SSLError):
        tls_pdp.post("/access/v1/evaluation", BODY, ssl_context=strict)
    stranger = ssl.create_default_context(cadata=CA("another CA").pem.decode())
    with pytest.raises(ssl.SSLError):
        tls_pdp.post("/access/v1/evaluation", BODY, ssl_context=stranger)


def test_mtls_allowed_identity_is_served(mtls_pdp: Pdp) -> None:
    reply = mtls_pdp.post("/access/v1/evaluation", BODY)
    assert reply.status == 200
    assert reply.json["decision"] is True


def test_mtls_without_a_client_certificate_fails_the_handshake(
    mtls_pdp: Pdp, files: dict[str, Path]
) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        mtls_pdp.post("/access/v1/evaluation", BODY, ssl_context=client_context(files, None))


def test_mtls_identity_not_on_the_allow_list_is_forbidden(
    mtls_pdp: Pdp, files: dict[str, Path]
) -> None:
    intruder = client_context(files, "intruder")
    for path in ("/access/v1/evaluation", "/v1/check", "/access/v1/search/action"):
        reply = mtls_pdp.post(path, BODY, ssl_context=intruder)
        err = assert_error(reply, 403, "identity")
        assert INTRUDER in err["message"]
        assert b'"decision"' not in reply.body
    assert_error(mtls_pdp.get("/v1/server-info", ssl_context=intruder), 403)
    # Health stays open to any caller that completed the handshake, as gRPC's does.
    assert mtls_pdp.get("/healthz", ssl_context=intruder).status == 200
    assert mtls_pdp.get("/readyz", ssl_context=intruder).status == 200


def test_mtls_grpc_and_http_share_the_allow_list(mtls_pdp: Pdp, files: dict[str, Path]) -> None:
    def channel(who: str) -> grpc.Channel:
        creds = grpc.ssl_channel_credentials(
            files["ca"].read_bytes(),
            files[f"{who}.key"].read_bytes(),
            files[f"{who}.crt"].read_bytes(),
        )
        port = mtls_pdp.grpc_address.rsplit(":", 1)[1]
        return grpc.secure_channel(f"localhost:{port}", creds)

    with channel("gateway") as ch:
        assert (
            pb_grpc.DecisionServiceStub(ch)
            .ServerInfo(pb.ServerInfoRequest(), timeout=10)
            .pdp_version
        )
    with channel("intruder") as ch, pytest.raises(grpc.RpcError) as info:
        pb_grpc.DecisionServiceStub(ch).ServerInfo(pb.ServerInfoRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

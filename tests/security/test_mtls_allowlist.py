"""The mTLS allow-list matches each entry against SANs of its own type only.

Real certificates (tests/server/certs.py) over a real mTLS connection to a real server: a
client whose DNS SAN spells an allowed SPIFFE id, or whose URI SAN spells an allowed host name,
is refused; the matching type is served.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from server.certs import CA
from server.conftest import ALICE, BUNDLE, DOC, free_port, running, write_policies

from pdp.client import Client
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.server import PdpServer, ServerConfig, TlsConfig
from pdp.server.identity import parse_allow_entry

GATEWAY = "spiffe://example.org/ns/edge/sa/gateway"
BILLING = "billing.internal"
ALLOWED = (GATEWAY, BILLING, "dns:Reports.Internal.", "uri:urn:example:batch")


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    policies = write_policies(tmp_path_factory.mktemp("policies"))
    return Engine(compile_policy_set(load_policy_dir(policies)), BUNDLE)


@contextmanager
def mtls_server(ca: CA, engine: Engine, allowed: tuple[str, ...]) -> Iterator[PdpServer]:
    pair = ca.issue("pdp", dns=("localhost",), server=True)
    config = ServerConfig(
        listen=("127.0.0.1:0",),
        tls=TlsConfig(pair.cert, pair.key, client_ca_pem=ca.pem),
        allow_identities=frozenset(allowed),
    )
    with running(EngineHolder(engine), config) as server:
        yield server


@pytest.fixture(scope="module")
def server(ca: CA, engine: Engine) -> Iterator[PdpServer]:
    with mtls_server(ca, engine, ALLOWED) as s:
        yield s


def call_as(
    server: PdpServer,
    ca: CA,
    *,
    dns: tuple[str, ...] = (),
    uris: tuple[str, ...] = (),
    cn: str = "client",
) -> bool | grpc.StatusCode:
    """The client's outcome: True (allowed and decided) or the refusal's status code."""
    pair = ca.issue(cn, dns=dns, uris=uris, server=False)
    with Client(
        f"127.0.0.1:{server.port}",
        ca=ca.pem,
        cert=pair.cert,
        key=pair.key,
        server_name="localhost",
        timeout=10,
    ) as c:
        try:
            return c.is_allowed(ALICE, DOC, "read")
        except grpc.RpcError as err:
            return err.code()


REFUSED = grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("dns", "uris"),
    [
        ((GATEWAY,), ()),  # the SPIFFE id spelled as a DNS SAN
        ((), (BILLING,)),  # the host name spelled as a URI SAN
        ((), ("reports.internal",)),  # a `dns:` entry as a URI SAN
        (("urn:example:batch",), ()),  # a `uri:` entry as a DNS SAN
        ((), (GATEWAY.upper(),)),  # URIs compare exactly
        ((), (GATEWAY + "/",)),
        (("billing.internal.evil.example",), ()),
        (("evil-billing.internal",), ()),
    ],
)
def test_a_san_of_the_wrong_type_or_value_is_refused(
    server: PdpServer, ca: CA, dns: tuple[str, ...], uris: tuple[str, ...]
) -> None:
    assert call_as(server, ca, dns=dns, uris=uris) == REFUSED


@pytest.mark.parametrize("cn", [BILLING, GATEWAY])
def test_the_common_name_is_no_identity(server: PdpServer, ca: CA, cn: str) -> None:
    assert call_as(server, ca, dns=("unrelated.internal",), cn=cn) == REFUSED


@pytest.mark.parametrize(
    ("dns", "uris"),
    [
        ((), (GATEWAY,)),
        ((BILLING,), ()),
        (("BILLING.internal",), ()),  # DNS names compare case-insensitively
        (("reports.internal",), ()),
        ((), ("urn:example:batch",)),
        (("other.internal",), (GATEWAY,)),  # one matching SAN is enough
    ],
)
def test_a_san_of_the_right_type_is_served(
    server: PdpServer, ca: CA, dns: tuple[str, ...], uris: tuple[str, ...]
) -> None:
    assert call_as(server, ca, dns=dns, uris=uris) is True


@pytest.mark.parametrize(
    ("entry", "typed"),
    [
        (GATEWAY, ("uri", GATEWAY)),
        ("uri:" + GATEWAY, ("uri", GATEWAY)),
        ("uri:urn:example:batch", ("uri", "urn:example:batch")),
        (BILLING, ("dns", BILLING)),
        ("dns:Billing.Internal.", ("dns", BILLING)),
    ],
)
def test_entry_syntax(entry: str, typed: tuple[str, str]) -> None:
    assert parse_allow_entry(entry) == typed


@pytest.mark.parametrize(
    "entry",
    ["urn:example:batch", "dns:" + GATEWAY, "dns:", "uri:", "a b", "dns:a/b", "*.internal", "x:"],
)
def test_ambiguous_or_malformed_entries_are_refused(ca: CA, engine: Engine, entry: str) -> None:
    with pytest.raises(ValueError, match="allowed identity"):
        parse_allow_entry(entry)
    with pytest.raises(ValueError), mtls_server(ca, engine, (entry,)):
        pass


def test_pdp_serve_refuses_an_ambiguous_entry_at_start(ca: CA, tmp_path: Path) -> None:
    pair = ca.issue("pdp", dns=("localhost",), server=True)
    for name, data in (("cert.pem", pair.cert), ("key.pem", pair.key), ("ca.pem", ca.pem)):
        (tmp_path / name).write_bytes(data)
    done = subprocess.run(
        [
            sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(tmp_path),
            "--listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(tmp_path / "cert.pem"),
            "--tls-key", str(tmp_path / "key.pem"), "--client-ca", str(tmp_path / "ca.pem"),
            "--allow-identity", "urn:example:batch",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: --allow-identity: allowed identity `urn:example:batch` is neither a DNS name "
        "nor a `scheme://` URI: write `uri:...` or `dns:...`"
    ]

"""Red team (session 26): client certificates an attacker might present to `pdp serve` with
--client-ca and --allow-identity, sent by a real grpc client to both transports at once —
`--transport native` (its own TLS, `_tls.c`) and `--transport grpcio` (grpc's) — with the same
files: each must be refused (or served) by both, the same way.

Chain validation: a self-signed certificate with the CA's name, a leaf signed by a leaf, an
intermediate whose extensions forbid signing or client authentication, a path-length or name
constraint broken, a certificate not yet valid, a critical extension nobody understands. Name
matching: the allowed name as a wildcard, with a NUL and a suffix, as an e-mail, URI or
common name only, in case and with a final dot, among several SANs.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
from server.conftest import (
    ALICE,
    BUNDLE,
    DOC,
    free_port,
    running,
    running_native,
    write_policies,
)

from pdp.client._convert import request_to_proto
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.http.server import HttpTls, _ssl_context
from pdp.model.loader import load_policy_dir
from pdp.server import ServerConfig, TlsConfig
from pdp.server.service import CHECK_RPC

from .serving import Served, pdp_serve

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

GOOD = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}]).SerializeToString()
HOST = "gateway.internal"
SPIFFE = "spiffe://example.org/ns/edge/sa/gateway"
TRANSPORTS = ("native", "grpcio")
NOW = dt.datetime.now(dt.UTC)
SERVER_AUTH, CLIENT_AUTH = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip
SIGN_ONLY = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def issue(
    cn: str,
    by: Issued | None = None,
    *,
    ca: bool | None = False,
    path_length: int | None = None,
    usage: x509.KeyUsage | None = None,
    eku: tuple[ObjectIdentifier, ...] | None = (CLIENT_AUTH,),
    sans: tuple[x509.GeneralName, ...] = (x509.DNSName(HOST),),
    subject: x509.Name | None = None,
    days: tuple[float, float] = (-1, 1),
    extra: tuple[x509.ExtensionType, ...] = (),
    critical_extra: bool = False,
) -> Issued:
    """A certificate signed by `by` (self-signed without). `ca` None: no basicConstraints at
    all; `eku`/`usage` None: no such extension; `days`: validity from/to, relative to now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = subject or _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(by.cert.subject if by else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext in extra:
        builder = builder.add_extension(ext, critical=critical_extra)
    return Issued(builder.sign(by.key if by else key, hashes.SHA256()), key)


def root(cn: str = "pdp red team CA", **kw: object) -> Issued:
    return issue(cn, ca=True, usage=CA_USAGE, eku=None, sans=(), **kw)  # type: ignore[arg-type]


@dataclass
class Pki:
    root: Issued
    files: dict[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    dir_ = tmp_path_factory.mktemp("redteam26-tls")
    ca = root()
    # 127.0.0.1 too: the HTTPS client connects to it (a minimal Debian has no /etc/hosts, so
    # no `localhost`); the gRPC clients name `localhost` through their target override.
    sans = (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = issue("pdp", ca, eku=(SERVER_AUTH,), sans=sans)
    files = {}
    for name, data in (("cert", server.pem), ("key", server.key_pem), ("ca", ca.pem)):
        (dir_ / f"{name}.pem").write_bytes(data)
        files[name] = str(dir_ / f"{name}.pem")
    return Pki(ca, files)


def _call(port: int, ca_pem: bytes, chain: bytes | None, key: bytes | None) -> str:
    """A Check over TLS: "OK", or its status code's name."""
    creds = grpc.ssl_channel_credentials(ca_pem, key, chain)
    opts = (("grpc.ssl_target_name_override", "localhost"),)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, opts) as ch:
        try:
            ch.unary_unary(CHECK_RPC)(GOOD, timeout=10)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name


def _https(port: int, ca_pem: bytes, chain: bytes, key: bytes, tmp: Path) -> str:
    """A GET of the HTTP listener's AuthZEN metadata (behind the allow-list) with a client
    certificate: "OK" (200), "PERMISSION_DENIED" (403), or "UNAVAILABLE" (the handshake
    failed)."""
    (tmp / "c.pem").write_bytes(chain)
    (tmp / "k.pem").write_bytes(key)
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        conn.request("GET", "/.well-known/authzen-configuration")
        status = conn.getresponse().status
    except (ssl.SSLError, OSError, http.client.HTTPException):
        return "UNAVAILABLE"
    finally:
        conn.close()
    return {200: "OK", 403: "PERMISSION_DENIED"}.get(status, str(status))


@dataclass
class Servers:
    ports: dict[str, int]  # native and grpcio: gRPC; http: the native process's HTTP listener
    tmp: Path


@pytest.fixture(scope="module")
def servers(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Both transports with the same files and allow-list, started together; the native one
    has an HTTP listener too."""
    policies = write_policies(tmp_path_factory.mktemp("redteam26-tls-policies"))
    ports = {t: free_port() for t in (*TRANSPORTS, "http")}
    native_argv = _argv(pki, policies, ports["native"], "native")
    with (
        pdp_serve(*native_argv, "--http-listen", f"127.0.0.1:{ports['http']}") as native,
        pdp_serve(*_argv(pki, policies, ports["grpcio"], "grpcio")) as grpcio,
    ):
        good = issue("gateway", pki.root)
        for t, s in (("native", native), ("grpcio", grpcio)):
            _wait_serving(s, ports[t], pki, good)
        yield Servers(ports, tmp_path_factory.mktemp("redteam26-tls-client"))


def _argv(pki: Pki, policies: Path, port: int, transport: str) -> list[str]:
    return ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--transport", transport,
            "--workers", "1", "--tls-cert", pki.files["cert"], "--tls-key", pki.files["key"],
            "--client-ca", pki.files["ca"], "--allow-identity", HOST,
            "--allow-identity", SPIFFE, "--allow-identity", "dns:Reports.Internal."]  # fmt: skip


def _wait_serving(s: Served, port: int, pki: Pki, good: Issued) -> None:
    end = time.monotonic() + 120
    while _call(port, pki.root.pem, good.pem, good.key_pem) != "OK":
        assert s.proc.poll() is None, s.output()
        assert time.monotonic() < end, f"never served:\n{s.output()}"
        time.sleep(0.1)


def _all(servers: Servers, pki: Pki, leaf: Issued, *chain: Issued) -> dict[str, str]:
    """What each listener makes of the client presenting `leaf` (and `chain`)."""
    pem = leaf.pem + b"".join(c.pem for c in chain)
    got = {t: _call(servers.ports[t], pki.root.pem, pem, leaf.key_pem) for t in TRANSPORTS}
    got["http"] = _https(servers.ports["http"], pki.root.pem, pem, leaf.key_pem, servers.tmp)
    return got


def _everywhere(outcome: str) -> dict[str, str]:
    return {"native": outcome, "grpcio": outcome, "http": outcome}


REFUSED = _everywhere("UNAVAILABLE")  # the handshake fails
DENIED = _everywhere("PERMISSION_DENIED")  # the handshake passes, the allow-list refuses
SERVED = _everywhere("OK")


# ---- chain validation: refused in the handshake by both transports -------------------------


def test_a_self_signed_certificate_with_the_cas_name(servers: Servers, pki: Pki) -> None:
    """The CA's exact subject and the allowed SAN, signed by the attacker's own key, sent
    alone or with a forged CA certificate of the same name."""
    forged_ca = root(pki.root.cert.subject.rfc4514_string().removeprefix("CN="))
    assert forged_ca.cert.subject == pki.root.cert.subject
    leaf = issue("gateway", forged_ca)
    alone = issue("gateway", None, subject=pki.root.cert.subject)
    assert _all(servers, pki, leaf) == REFUSED
    assert _all(servers, pki, leaf, forged_ca) == REFUSED
    assert _all(servers, pki, alone) == REFUSED


def test_a_leaf_signed_by_a_leaf(servers: Servers, pki: Pki) -> None:
    """A genuine client certificate (CA:FALSE, or no basicConstraints and no keyUsage) used as
    an issuer: its holder cannot mint the allowed identity."""
    for ca in (False, None):
        genuine = issue("someone", pki.root, ca=ca, sans=(x509.DNSName("someone.internal"),))
        minted = issue("gateway", genuine)
        assert _all(servers, pki, minted, genuine) == REFUSED


@pytest.mark.parametrize(
    "intermediate",
    [
        {"usage": SIGN_ONLY},  # CA:TRUE, but keyUsage without keyCertSign
        {"eku": (SERVER_AUTH,)},  # an intermediate for servers only
        {"days": (-3, -1)},  # expired
        {"days": (1, 3)},  # not yet valid
    ],
    ids=["no-keyCertSign", "serverAuth-only", "expired", "not-yet-valid"],
)
def test_an_intermediate_that_may_not_issue_client_certificates(
    servers: Servers, pki: Pki, intermediate: dict[str, object]
) -> None:
    kw: dict[str, object] = {"ca": True, "usage": CA_USAGE, "eku": None, "sans": ()}
    sub = issue("sub CA", pki.root, **{**kw, **intermediate})  # type: ignore[arg-type]
    assert _all(servers, pki, issue("gateway", sub), sub) == REFUSED


def test_a_broken_path_length(servers: Servers, pki: Pki) -> None:
    """pathlen:0 on the intermediate: the CA it signed may not issue."""
    sub = issue("sub CA", pki.root, ca=True, path_length=0, usage=CA_USAGE, eku=None, sans=())
    subsub = issue("sub-sub CA", sub, ca=True, usage=CA_USAGE, eku=None, sans=())
    assert _all(servers, pki, issue("gateway", subsub), subsub, sub) == REFUSED


def test_a_name_constrained_intermediate(servers: Servers, pki: Pki) -> None:
    """An intermediate allowed only `.partner.example` names (DNS and URI) issuing the allowed
    host name, or the allowed SPIFFE id: refused; a name inside its constraint is served."""
    constraint = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("partner.example"),
                            x509.UniformResourceIdentifier("partner.example")],
        excluded_subtrees=None,
    )  # fmt: skip
    sub = issue("partner CA", pki.root, ca=True, usage=CA_USAGE, eku=None, sans=(),
                extra=(constraint,), critical_extra=True)  # fmt: skip
    for sans in ((x509.DNSName(HOST),), (x509.UniformResourceIdentifier(SPIFFE),)):
        assert _all(servers, pki, issue("gateway", sub, sans=sans), sub) == REFUSED
    inside = issue("api", sub, sans=(x509.DNSName("api.partner.example"),))
    assert _all(servers, pki, inside, sub) == DENIED  # only the allow-list refuses it


@pytest.mark.parametrize(
    "leaf",
    [
        {"days": (1, 3)},  # not yet valid
        {"eku": (SERVER_AUTH,)},  # a server certificate presented as a client's
        {"extra": (x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),),
         "critical_extra": True},  # a critical extension nobody understands
        {"ca": True, "usage": CA_USAGE, "eku": None},  # a CA certificate as a client's
    ],
    ids=["not-yet-valid", "serverAuth-only", "unknown-critical", "a-CA"],
)  # fmt: skip
def test_a_leaf_it_must_refuse(servers: Servers, pki: Pki, leaf: dict[str, object]) -> None:
    assert _all(servers, pki, issue("gateway", pki.root, **leaf)) == REFUSED  # type: ignore[arg-type]


def test_a_good_chain_through_an_intermediate(servers: Servers, pki: Pki) -> None:
    """The control: a proper intermediate, sent with the leaf, is served by both; the same
    leaf without its intermediate is refused (the server trusts only --client-ca)."""
    sub = issue("sub CA", pki.root, ca=True, usage=CA_USAGE, eku=None, sans=())
    leaf = issue("gateway", sub)
    assert _all(servers, pki, leaf, sub) == SERVED
    assert _all(servers, pki, leaf) == REFUSED


# ---- the allow-list's name matching: the handshake passes, the call is refused -------------


def test_an_ip_san_of_eight_bytes(servers: Servers, pki: Pki) -> None:
    """An IP SAN holding an address and a mask (8 bytes, a name constraint's form): grpc's tsi
    fails the handshake on it, the native transport closes the connection as its auth context
    refuses it (`_tls.c`), and the HTTP listener (Python's ssl reads it as `<invalid>`)
    refuses the call."""
    sans = (x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_network("10.0.0.0/8")))
    got = _all(servers, pki, issue("gateway", pki.root, sans=sans))
    assert got == {"native": "UNAVAILABLE", "grpcio": "UNAVAILABLE", "http": "OK"}


@pytest.mark.parametrize(
    ("sans", "cn", "want"),
    [
        ((x509.DNSName("*.internal"),), "gateway", DENIED),
        ((x509.DNSName("*"),), "gateway", DENIED),
        ((x509.DNSName(HOST + "\0.evil.example"),), "gateway", DENIED),
        ((x509.DNSName(HOST + ".evil.example"),), "gateway", DENIED),
        ((x509.DNSName(HOST + ".."),), "gateway", DENIED),
        ((x509.RFC822Name(HOST),), "gateway", DENIED),
        ((x509.RFC822Name("gateway@" + HOST),), "gateway", DENIED),
        ((x509.UniformResourceIdentifier("dns:" + HOST),), "gateway", DENIED),
        ((x509.UniformResourceIdentifier(SPIFFE + "\0"),), "gateway", DENIED),
        ((x509.UniformResourceIdentifier("spiffe://example.org:443/ns/edge/sa/gateway"),), "gateway", DENIED),
        ((x509.DirectoryName(_name(HOST)),), HOST, DENIED),
        ((), HOST, DENIED),  # no SAN at all: the common name is no identity
        ((x509.DNSName(SPIFFE.removeprefix("spiffe://")),), "gateway", DENIED),
        ((x509.DNSName(SPIFFE),), "gateway", DENIED),  # the SPIFFE id as a DNS SAN
        ((x509.UniformResourceIdentifier(HOST),), "gateway", DENIED),  # the host as a URI SAN
        ((x509.UniformResourceIdentifier("dns:Reports.Internal."),), "r", DENIED),  # an entry's text
        ((x509.DNSName("REPORTS.internal"),), "reports", SERVED),  # what that entry allows
        ((x509.DNSName(HOST.upper() + "."),), "gateway", SERVED),  # case and a final dot
        ((x509.DNSName("a.example"), x509.RFC822Name("x@y"), x509.DNSName(HOST)), "x", SERVED),
        ((x509.UniformResourceIdentifier("spiffe://other.org/x"), x509.UniformResourceIdentifier(SPIFFE)), "x", SERVED),
    ],
    ids=["wildcard", "star", "nul-suffix", "suffix", "two-dots", "email-host", "email",
         "uri-dns", "uri-nul", "spiffe-port", "dirname", "cn-only", "spiffe-as-dns",
         "spiffe-as-dns-san", "host-as-uri-san", "dns-entry", "dns-entry-served",
         "case-dot", "one-of-three", "second-uri"],
)  # fmt: skip
def test_allow_list_names(
    servers: Servers, pki: Pki, sans: tuple[x509.GeneralName, ...], cn: str, want: dict
) -> None:
    assert _all(servers, pki, issue(cn, pki.root, sans=sans)) == want


# ---- a --client-ca file holding only an intermediate CA ------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    policies = write_policies(tmp_path_factory.mktemp("redteam26-tls-engine"))
    return Engine(compile_policy_set(load_policy_dir(policies)), BUNDLE)


def _http_handshake(
    server: ssl.SSLContext, ca_pem: bytes, chain: bytes, key: bytes, tmp: Path
) -> str:
    """The HTTP listener's context (pdp.http.server) against a client, in memory."""
    (tmp / "c.pem").write_bytes(chain)
    (tmp / "k.pem").write_bytes(key)
    client = ssl.create_default_context(cadata=ca_pem.decode())
    client.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    bios = [ssl.MemoryBIO() for _ in range(4)]
    srv = server.wrap_bio(bios[0], bios[1], server_side=True)
    cli = client.wrap_bio(bios[2], bios[3], server_hostname="localhost")
    done = {"srv": False, "cli": False}
    for _ in range(10):
        for name, end in (("cli", cli), ("srv", srv)):
            try:
                end.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return "UNAVAILABLE"
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
        if all(done.values()):
            return "OK"
    return "stalled"


def test_a_client_ca_file_of_one_intermediate(engine: Engine, tmp_path: Path) -> None:
    """--client-ca holding an intermediate CA and not its root: the clients it issued are
    served, with or without the intermediate in their chain; those of a sibling intermediate
    or of the root itself are refused. grpcio's tsi trusts a partial chain (it sets OpenSSL's
    X509_V_FLAG_PARTIAL_CHAIN); the native transport and the HTTP listener refused every
    client before session 26."""
    ca = root()
    sub, sibling = (issue(n, ca, ca=True, usage=CA_USAGE, eku=None, sans=()) for n in "AB")
    server = issue("pdp", ca, eku=(SERVER_AUTH,), sans=(x509.DNSName("localhost"),))
    cases = {
        "leaf": (issue("gateway", sub), ()),
        "leaf+intermediate": (issue("gateway", sub), (sub,)),
        "sibling's": (issue("gateway", sibling), (sibling,)),
        "root's": (issue("gateway", ca), ()),
    }
    want = {"leaf": "OK", "leaf+intermediate": "OK", "sibling's": "UNAVAILABLE",
            "root's": "UNAVAILABLE"}  # fmt: skip
    tls = TlsConfig(server.pem, server.key_pem, client_ca_pem=sub.pem)
    config = ServerConfig(listen=("127.0.0.1:0",), tls=tls)
    for run in (running, running_native):
        with run(EngineHolder(engine), config) as s:
            got = {
                name: _call(s.port, ca.pem, leaf.pem + b"".join(c.pem for c in chain), leaf.key_pem)
                for name, (leaf, chain) in cases.items()
            }
        assert got == want, run.__name__
    http = _ssl_context(HttpTls(server.pem, server.key_pem, sub.pem))
    got = {
        name: _http_handshake(http, ca.pem, leaf.pem + b"".join(c.pem for c in chain), leaf.key_pem, tmp_path)
        for name, (leaf, chain) in cases.items()
    }  # fmt: skip
    assert got == want, "http"


# ---- handshake abuse ------------------------------------------------------------------------


def _renegotiate(port: int, files: Path) -> str:
    """s_client's output (with -msg) for a TLS 1.2 handshake, then `R` once it is done, up to
    the server's answer to the renegotiation (an alert or a ServerHello) or the end."""
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-alpn", "h2",
         "-servername", "localhost", "-msg", "-CAfile", str(files / "ca.pem"),
         "-cert", str(files / "c.pem"), "-key", str(files / "k.pem")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cap = threading.Timer(60, proc.kill)  # a server that never answers: the test fails below
    cap.start()
    out: list[str] = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for raw in proc.stdout:
            out.append(line := raw.decode("latin-1"))
            if line.startswith("    Verify return code:") and "RENEGOTIATING\n" not in out:
                proc.stdin.write(b"R\n")
                proc.stdin.flush()
            elif (
                "RENEGOTIATING\n" in out
                and line.startswith("<<<")
                and ("Alert" in line or "ServerHello" in line)
            ):
                break
    finally:
        cap.cancel()
        proc.kill()
        proc.wait(30)
    return "".join(out)


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl s_client")
def test_a_client_asking_to_renegotiate(servers: Servers, pki: Pki, tmp_path: Path) -> None:
    """A TLS 1.2 client with a good certificate asks to renegotiate (`R` to s_client) after
    its handshake: neither transport renegotiates (no second ServerHello: the native one
    answers no_renegotiation, and fails this with SSL_OP_ALLOW_CLIENT_RENEGOTIATION set), and
    both serve afterwards."""
    good = issue("gateway", pki.root)
    for name, data in (("ca", pki.root.pem), ("c", good.pem), ("k", good.key_pem)):
        (tmp_path / f"{name}.pem").write_bytes(data)
    with ThreadPoolExecutor(len(TRANSPORTS)) as pool:
        outs = dict(zip(TRANSPORTS, pool.map(
            lambda t: _renegotiate(servers.ports[t], tmp_path), TRANSPORTS)))  # fmt: skip
    for transport, out in outs.items():
        assert "RENEGOTIATING" in out, (transport, out[-2000:])
        assert "Verify return code: 0" in out, (transport, out[-2000:])
        assert out.count("ServerHello\n") == 1, (transport, out[-2000:])  # no second one
        assert _call(servers.ports[transport], pki.root.pem, good.pem, good.key_pem) == "OK"

"""Red team (session 26): server keys and certificates `pdp serve` cannot serve grpc clients
with, on either transport. Before, an RSA key under 2048 bits or a chain signed with SHA-1
stopped the native transport with a Python traceback (its OpenSSL, at Debian's security level
2, refuses them); a DSA, RSA-PSS or secp256k1 key stopped grpcio's with `cannot listen ...
the address is in use`; Ed25519 and P-521 keys started a server whose every grpc handshake
failed. Each is now one line naming the file and what to use instead.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID
from server.conftest import free_port, write_policies

from pdp.server.tls_files import TlsFileError, load_tls_files


def _self_signed(key: object, sign: object | None = None) -> tuple[bytes, bytes]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())  # type: ignore[arg-type]
    )
    pem_key = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


KEYS = {
    "rsa1024": (lambda: rsa.generate_private_key(65537, 1024), "an RSA key of 1024 bits"),
    "dsa": (lambda: dsa.generate_private_key(1024), "a key of type DSA"),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, "a key of type Ed25519"),
    "p521": (lambda: ec.generate_private_key(ec.SECP521R1()), "an EC key on secp521r1"),
    "secp256k1": (lambda: ec.generate_private_key(ec.SECP256K1()), "an EC key on secp256k1"),
    "p256": (lambda: ec.generate_private_key(ec.SECP256R1()), None),
    "p384": (lambda: ec.generate_private_key(ec.SECP384R1()), None),
    "rsa2048": (lambda: rsa.generate_private_key(65537, 2048), None),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("redteam26-keys")
    out = {"policies": write_policies(root)}
    for name, (make, _why) in KEYS.items():
        with warnings.catch_warnings():  # DSA's deprecation: the point here
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert, key = _self_signed(make())
        (root / f"{name}.pem").write_bytes(cert)
        (root / f"{name}.key").write_bytes(key)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", list(KEYS))
def test_server_keys_grpc_clients_cannot_use(files: dict[str, Path], name: str) -> None:
    why = KEYS[name][1]
    cert, key = f"{files[name]}.pem", f"{files[name]}.key"
    if why is None:
        assert load_tls_files(cert, key, None).cert_pem
        return
    with pytest.raises(TlsFileError) as info:
        load_tls_files(cert, key, None)
    assert str(info.value) == (
        f"--tls-key `{key}`: {why}, which grpc clients cannot handshake with: use an EC key "
        "on P-256 or P-384, or an RSA key of 2048 bits or more"
    )


def _sha1_chain(root: Path) -> tuple[str, str]:
    """A P-256 server certificate its CA signed with SHA-1 (cryptography signs no SHA-1)."""
    run = lambda *a: subprocess.run(["openssl", *a], cwd=root, check=True, capture_output=True)  # noqa: E731
    ec_key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run(
        "req",
        "-x509",
        *ec_key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=ca",
        "-days",
        "2",
    )
    run("req", *ec_key, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    (root / "ext").write_text("subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-sha1", "-days", "1", "-extfile", "ext", "-out", "leaf.pem")  # fmt: skip
    (root / "chain.pem").write_bytes(
        (root / "leaf.pem").read_bytes() + (root / "ca.pem").read_bytes()
    )
    return str(root / "chain.pem"), str(root / "leaf.key")


def test_pdp_serve_says_one_line_on_both_transports(files: dict[str, Path], tmp_path: Path) -> None:
    """The real `pdp serve`, three at once: an RSA-1024 key on the native transport (was a
    traceback), a DSA key on grpcio's (was `cannot listen`), and — with openssl at hand — a
    chain signed with SHA-1 on the native transport, which the Python checks pass and OpenSSL
    refuses at start (was a traceback)."""
    cases = {
        "rsa1024 native": ("native", f"{files['rsa1024']}.pem", f"{files['rsa1024']}.key",
                           "an RSA key of 1024 bits"),
        "dsa grpcio": ("grpcio", f"{files['dsa']}.pem", f"{files['dsa']}.key",
                       "a key of type DSA"),
    }  # fmt: skip
    if shutil.which("openssl"):
        cases["sha1 native"] = ("native", *_sha1_chain(tmp_path), "ca md too weak")
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pdp.cli.main",
                "serve",
                "--policies",
                str(files["policies"]),
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--transport",
                transport,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (transport, cert, key, _words) in cases.items()
    }
    for name, proc in procs.items():
        try:
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = [line for line in err.splitlines() if " INFO " not in line]
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert cases[name][3] in lines[0] and cases[name][2] in lines[0], (name, err)
        assert "cannot listen" not in err and "Traceback" not in err, (name, err)

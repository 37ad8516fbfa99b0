"""`pdp serve` refuses bad TLS files and busy ports at start-up, naming the file and cause.

grpc answers any bad certificate or key with `Failed to bind to address`, which sends the
operator after a port clash that is not there. Each case runs the real `pdp serve` and checks
its one-line error and non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from server.certs import CA
from server.conftest import free_port, write_policies


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "serve", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def self_signed(cn: str, *, days: float, ca: bool) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    end = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(end - dt.timedelta(days=30))
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tls")
    ca = CA()
    good = ca.issue("pdp", dns=("localhost",), server=True)
    other = ca.issue("other", dns=("localhost",), server=True)
    expired_cert, expired_key = self_signed("old-pdp", days=-1, ca=False)
    leaf_cert, _ = self_signed("not-a-ca", days=10, ca=False)
    expired_ca, _ = self_signed("old-ca", days=-2, ca=True)
    encrypted = serialization.load_pem_private_key(good.key, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    contents = {
        "cert.pem": good.cert,
        "key.pem": good.key,
        "other-key.pem": other.key,
        "ca.pem": ca.pem,
        "expired.pem": expired_cert,
        "expired-key.pem": expired_key,
        "leaf-as-ca.pem": leaf_cert,
        "expired-ca.pem": expired_ca,
        "encrypted-key.pem": encrypted,
        "der.crt": x509.load_pem_x509_certificate(good.cert).public_bytes(
            serialization.Encoding.DER
        ),
        "garbage.pem": b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    }
    out = {}
    for name, data in contents.items():
        (root / name).write_bytes(data)
        out[name] = root / name
    out["missing.pem"] = root / "missing.pem"
    out["a-directory"] = root
    (root / "policies").mkdir()
    out["policies"] = write_policies(root / "policies")
    return out


CASES = {
    # case: (cert, key, client CA or None, words the one error line must hold)
    "key of another certificate": ("cert.pem", "other-key.pem", None, ["does not match", "other-key.pem", "cert.pem"]),
    "DER, not PEM": ("der.crt", "key.pem", None, ["--tls-cert", "der.crt", "not a PEM certificate"]),
    "garbage PEM": ("garbage.pem", "key.pem", None, ["--tls-cert", "garbage.pem", "not a PEM"]),
    "missing cert": ("missing.pem", "key.pem", None, ["--tls-cert", "missing.pem", "cannot read", "No such file"]),
    "unreadable key": ("cert.pem", "a-directory", None, ["--tls-key", "cannot read", "Is a directory"]),
    "cert as key": ("cert.pem", "cert.pem", None, ["--tls-key", "cert.pem", "not a PEM private key"]),
    "encrypted key": ("cert.pem", "encrypted-key.pem", None, ["--tls-key", "encrypted-key.pem", "encrypted"]),
    "expired cert": ("expired.pem", "expired-key.pem", None, ["--tls-cert", "expired.pem", "`old-pdp` expired"]),
    "client CA not a CA": ("cert.pem", "key.pem", "leaf-as-ca.pem", ["--client-ca", "leaf-as-ca.pem", "`not-a-ca` is not a CA"]),
    "expired client CA": ("cert.pem", "key.pem", "expired-ca.pem", ["--client-ca", "expired-ca.pem", "`old-ca` expired"]),
    "client CA not PEM": ("cert.pem", "key.pem", "der.crt", ["--client-ca", "der.crt", "not a PEM certificate"]),
    "client CA missing": ("cert.pem", "key.pem", "missing.pem", ["--client-ca", "missing.pem", "cannot read"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_tls_file_is_named_with_its_cause(files: dict[str, Path], case: str) -> None:
    cert, key, client_ca, words = CASES[case]
    args = ["--policies", str(files["policies"]), "--listen", f"127.0.0.1:{free_port()}"]
    args += ["--tls-cert", str(files[cert]), "--tls-key", str(files[key])]
    if client_ca:
        args += ["--client-ca", str(files[client_ca])]
    done = run_serve(*args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "bind" not in done.stderr.lower()


def test_good_files_pass_the_checks(files: dict[str, Path]) -> None:
    """The same checks accept the good files: the server starts (it is stopped by a clash
    on purpose, so the test needs no client)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_serve(
            "--policies", str(files["policies"]), "--listen", f"127.0.0.1:{port}",
            "--tls-cert", str(files["cert.pem"]), "--tls-key", str(files["key.pem"]),
            "--client-ca", str(files["ca.pem"]),
        )  # fmt: skip
    assert done.returncode != 0
    assert f"cannot listen on `127.0.0.1:{port}`" in done.stderr, done.stderr


def test_port_clash_suggests_listen(files: dict[str, Path]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_serve("--policies", str(files["policies"]), "--listen", f"127.0.0.1:{port}")
    assert done.returncode != 0
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, done.stderr
    assert f"`127.0.0.1:{port}`" in error[0] and "in use" in error[0]
    assert "--listen" in error[0]

"""Throwaway X.509: a CA (or an intermediate one), a server certificate for 127.0.0.1/localhost,
client certificates (expired ones too, and any subject and SANs)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CA:
    def __init__(self, name: str = "pdp test CA", parent: CA | None = None) -> None:
        """A root CA, or an intermediate one signed by `parent` (its `chain` then holds its PEM
        for a leaf to send along)."""
        self.key = _key()
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(parent.name if parent else self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(parent.key if parent else self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.chain = self.pem if parent else b""

    def issue(
        self,
        cn: str,
        *,
        dns: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        server: bool,
        expired: bool = False,
        subject: x509.Name | None = None,
        other_sans: tuple[x509.GeneralName, ...] = (),
    ) -> Pair:
        """`subject` instead of CN=`cn`; `other_sans` after the DNS and URI ones."""
        key = _key()
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        sans += other_sans
        if server:
            sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        now = dt.datetime.now(dt.UTC)
        if expired:
            now -= dt.timedelta(days=2)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Pair(cert.public_bytes(serialization.Encoding.PEM) + self.chain, _pem_key(key))

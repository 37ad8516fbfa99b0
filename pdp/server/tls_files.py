"""TLS files checked before grpc sees them, so a bad one is refused with its name and cause.

grpc's own answer to any bad certificate, key or CA file is `Failed to bind to address`,
which sends operators looking for a port clash. Each check here names the flag, the file and
what is wrong with it, in one line.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .config import TlsConfig


class TlsFileError(ValueError):
    """A TLS file that cannot serve: the message names the flag, the file and the cause."""


def _read(flag: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsFileError(f"{flag} `{path}`: cannot read it: {exc.strerror or exc}") from exc


def _name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"`{cns[0].value}`" if cns else f"`{cert.subject.rfc4514_string()}`"


def _certificates(flag: str, path: str, data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsFileError(f"{flag} `{path}`: not a PEM certificate (no valid CERTIFICATE block)")
    now = dt.datetime.now(dt.UTC)
    for cert in certs:
        if cert.not_valid_after_utc < now:
            raise TlsFileError(
                f"{flag} `{path}`: certificate {_name(cert)} expired on "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
            )
        if cert.not_valid_before_utc > now:
            raise TlsFileError(
                f"{flag} `{path}`: certificate {_name(cert)} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
            )
    return certs


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_tls_files(cert_path: str, key_path: str, client_ca_path: str | None) -> TlsConfig:
    """The server's TLS configuration from `--tls-cert`, `--tls-key` and `--client-ca`, each
    checked: readable, PEM, in its validity period, key matching the certificate, client CAs
    that are CAs. Raises `TlsFileError`."""
    cert_pem = _read("--tls-cert", cert_path)
    key_pem = _read("--tls-key", key_path)
    ca_pem = _read("--client-ca", client_ca_path) if client_ca_path else None
    leaf = _certificates("--tls-cert", cert_path, cert_pem)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # encrypted: grpc cannot use a key it cannot decrypt
        raise TlsFileError(
            f"--tls-key `{key_path}`: the key is encrypted; give an unencrypted PEM key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TlsFileError(f"--tls-key `{key_path}`: not a PEM private key") from exc
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise TlsFileError(
            f"--tls-key `{key_path}` does not match the certificate {_name(leaf)} in "
            f"--tls-cert `{cert_path}`"
        )
    if ca_pem is not None:
        for cert in _certificates("--client-ca", client_ca_path or "", ca_pem):
            if not _is_ca(cert):
                raise TlsFileError(
                    f"--client-ca `{client_ca_path}`: certificate {_name(cert)} is not a CA "
                    "(no basicConstraints CA:TRUE): it cannot verify client certificates"
                )
    return TlsConfig(cert_pem=cert_pem, key_pem=key_pem, client_ca_pem=ca_pem)

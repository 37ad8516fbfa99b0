"""TLS files checked before grpc sees them, so a bad one is refused with its name and cause.

grpc's own answer to any bad certificate, key or CA file is `Failed to bind to address`,
which sends operators looking for a port clash. Each check here names the flag, the file and
what is wrong with it, in one line.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID, PublicKeyAlgorithmOID

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


# What a grpc client handshakes with (grpcio's BoringSSL, and the native transport's OpenSSL
# at Debian's security level 2): checked by hand in session 26 against both transports. RSA
# below 2048 bits stopped the native transport with a traceback; DSA, RSA-PSS and secp256k1
# keys stopped grpcio's with `cannot listen` (its `Failed to bind`); Ed25519, P-521 and the
# rest started a server whose every handshake failed.
_CURVES = ("secp256r1", "secp384r1")
_KEYS = "an EC key on P-256 or P-384, or an RSA key of 2048 bits or more"


def _served_key_problem(cert: x509.Certificate) -> str | None:
    """Why grpc clients could not handshake with the server's key, or None."""
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return None if key.curve.name in _CURVES else f"an EC key on {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        if cert.public_key_algorithm_oid != PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5:
            return "an RSA-PSS key"
        return None if key.key_size >= 2048 else f"an RSA key of {key.key_size} bits"
    return f"a key of type {type(key).__name__.removesuffix('PublicKey')}"


def load_tls_files(cert_path: str, key_path: str, client_ca_path: str | None) -> TlsConfig:
    """The server's TLS configuration from `--tls-cert`, `--tls-key` and `--client-ca`, each
    checked: readable, PEM, in its validity period, key matching the certificate and of a kind
    grpc clients handshake with, client CAs that are CAs. Raises `TlsFileError`."""
    with warnings.catch_warnings():  # a DSA key's deprecation: it is refused below anyway
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return _load(cert_path, key_path, client_ca_path)


def _load(cert_path: str, key_path: str, client_ca_path: str | None) -> TlsConfig:
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
    problem = _served_key_problem(leaf)
    if problem:
        raise TlsFileError(
            f"--tls-key `{key_path}`: {problem}, which grpc clients cannot handshake with: "
            f"use {_KEYS}"
        )
    if ca_pem is not None:
        for cert in _certificates("--client-ca", client_ca_path or "", ca_pem):
            if not _is_ca(cert):
                raise TlsFileError(
                    f"--client-ca `{client_ca_path}`: certificate {_name(cert)} is not a CA "
                    "(no basicConstraints CA:TRUE): it cannot verify client certificates"
                )
    return TlsConfig(cert_pem=cert_pem, key_pem=key_pem, client_ca_pem=ca_pem)

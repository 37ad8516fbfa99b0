"""Ed25519 keys and bundle signatures.

Keys are PEM files: the private key PKCS#8 (written 0600), the public key SubjectPublicKeyInfo.
A signature covers the manifest's canonical bytes; since the manifest lists the sha256 of every
file, one signature covers the whole bundle. `signature.json` holds a list of signatures so a
bundle can carry one per key during a key rotation:

    {"signatures": [{"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}]}

`key_id` is the first 16 hex digits of sha256(raw public key): a hint for humans and for
choosing the key, never trusted on its own — verification always checks the signature bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pdp.errors import BundleError

from .manifest import canonical_json

ALGORITHM = "ed25519"
# Several signatures are allowed for key rotation; more than this is not a rotation.
MAX_SIGNATURES = 16

SignatureState = Literal["valid", "unsigned", "untrusted", "invalid", "unchecked"]


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """What the signature check found.

    valid: a trusted key signed the manifest. unsigned: no signature. untrusted: signed, but by
    no trusted key. invalid: the signature entry is malformed or its bytes do not verify.
    unchecked: signed, but no trusted keys were given.
    """

    state: SignatureState
    key_id: str = ""  # the key that verified (valid) or the key ids present (otherwise)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "valid"

    def describe(self) -> str:
        text = self.state
        if self.key_id:
            text += f" (key {self.key_id})"
        if self.detail:
            text += f": {self.detail}"
        return text


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(prefix: str | Path) -> tuple[Path, Path]:
    """Write `<prefix>.key` (private, mode 0600) and `<prefix>.pub`; refuse to overwrite."""
    private_path = Path(f"{prefix}.key")
    public_path = Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise BundleError(f"`{path}` already exists; refusing to overwrite a key")
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL + 0600 so the private key is never readable by others, not even for an instant.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"cannot read private key `{path}`: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"`{path}` is not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"cannot read public key `{path}`: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"`{path}` is not an Ed25519 public key")
    return key


def load_public_keys(paths: Sequence[str | Path]) -> list[Ed25519PublicKey]:
    return [load_public_key(p) for p in paths]


def _parse(signature: bytes) -> list[dict[str, Any]]:
    try:
        obj = json.loads(signature.decode("utf-8"))
    # ValueError: invalid UTF-8 and JSON, and an integer of more than 4300 digits
    except ValueError as exc:
        raise BundleError(f"signature entry is not valid JSON: {exc}") from None
    except RecursionError:
        raise BundleError("signature entry is not valid JSON: nested too deeply") from None
    sigs = obj.get("signatures") if isinstance(obj, dict) else None
    if not isinstance(sigs, list) or not sigs:
        raise BundleError("signature entry has no `signatures` list")
    if len(sigs) > MAX_SIGNATURES:
        raise BundleError(f"signature entry has more than {MAX_SIGNATURES} signatures")
    for s in sigs:
        if not isinstance(s, dict) or not all(
            isinstance(s.get(k), str) for k in ("algorithm", "key_id", "value")
        ):
            raise BundleError("each signature needs string `algorithm`, `key_id` and `value`")
        for k in ("algorithm", "key_id", "value"):
            try:
                s[k].encode("utf-8")
            except UnicodeEncodeError:  # JSON's `\ud800`: no text a message or file can hold
                raise BundleError(f"signature `{k}` holds an unpaired surrogate") from None
    return sigs


def sign(manifest_bytes: bytes, private_key: Ed25519PrivateKey, existing: bytes | None) -> bytes:
    """The new signature entry: `existing` signatures plus (or replaced by) this key's one."""
    kid = key_id(private_key.public_key())
    sigs = [s for s in _parse(existing) if s["key_id"] != kid] if existing else []
    value = base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii")
    sigs.append({"algorithm": ALGORITHM, "key_id": kid, "value": value})
    sigs.sort(key=lambda s: s["key_id"])  # deterministic output whatever the signing order
    return canonical_json({"signatures": sigs})


def verify(
    manifest_bytes: bytes, signature: bytes | None, trust: Sequence[Ed25519PublicKey] | None
) -> SignatureStatus:
    """Check the signature entry against the trusted keys; never raises for bad input."""
    if signature is None:
        return SignatureStatus("unsigned")
    try:
        sigs = _parse(signature)
    except BundleError as exc:
        return SignatureStatus("invalid", detail=str(exc))
    present = ",".join(s["key_id"] for s in sigs)
    if not trust:
        return SignatureStatus("unchecked", key_id=present)
    bad = ""
    for public_key in trust:
        kid = key_id(public_key)
        for s in sigs:
            if s["algorithm"] != ALGORITHM:
                continue
            try:
                value = base64.b64decode(s["value"], validate=True)
                public_key.verify(value, manifest_bytes)
            except (InvalidSignature, binascii.Error, ValueError):
                if s["key_id"] == kid:
                    bad = f"signature by key {kid} does not match the manifest"
                continue
            return SignatureStatus("valid", key_id=kid)
    if bad:
        return SignatureStatus("invalid", key_id=present, detail=bad)
    return SignatureStatus("untrusted", key_id=present, detail="no trusted key signed this bundle")

"""Open a bundle archive and verify it: layout, manifest, every digest, the signature; sign one.

Nothing here compiles policies; a `VerifiedBundle` is content whose integrity (and, when keys
are given, origin) is established, ready for `pdp.bundle.load` to compile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pdp.errors import BundleError

from . import signing
from .archive import RawBundle, pack, read_archive_file, unpack
from .manifest import Manifest, sha256_hex


@dataclass(frozen=True, slots=True)
class VerifiedBundle:
    manifest: Manifest
    files: Mapping[str, bytes]  # path -> content, every digest checked
    signature: signing.SignatureStatus
    archive_sha256: str  # of the archive bytes, to recognise the same download again
    raw_signature: bytes | None = None

    @property
    def digest(self) -> str:
        return self.manifest.digest


def check_digests(manifest: Manifest, files: Mapping[str, bytes]) -> None:
    """Every listed file present with its size and sha256, and no file that is not listed."""
    extra = sorted(set(files) - set(manifest.files))
    if extra:
        raise BundleError(f"file `{extra[0]}` is in the archive but not in the manifest")
    for path, entry in sorted(manifest.files.items()):
        content = files.get(path)
        if content is None:
            raise BundleError(f"file `{path}` is in the manifest but missing from the archive")
        if len(content) != entry.size or sha256_hex(content) != entry.sha256:
            raise BundleError(f"digest mismatch for `{path}`")


def read_bundle_bytes(source: bytes | str | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    return read_archive_file(source)


def open_bundle(
    source: bytes | str | Path,
    trust: Sequence[Ed25519PublicKey] | None = None,
    *,
    require_signature: bool = False,
) -> VerifiedBundle:
    """Verify a bundle. Raises `BundleError` naming the first problem found.

    With `require_signature`, a trusted key must have signed the manifest. Without it, a bundle
    that carries a signature is still checked when `trust` is given: a signature that fails
    against the trusted keys means tampering or a mix-up, and is refused either way.
    """
    data = read_bundle_bytes(source)
    raw: RawBundle = unpack(data)
    manifest = Manifest.from_bytes(raw.manifest)
    # The signature covers the canonical form; a stored manifest in any other form would let
    # what is signed and what is read differ.
    if manifest.canonical_bytes() != raw.manifest:
        raise BundleError("manifest is not in canonical form")
    check_digests(manifest, raw.files)
    if require_signature and not trust:
        raise BundleError("a signature is required but no trusted key was given")
    status = signing.verify(raw.manifest, raw.signature, trust)
    if require_signature and not status.ok:
        raise BundleError(f"signature check failed: {status.describe()}")
    if status.state in ("invalid", "untrusted") and trust:
        raise BundleError(f"signature check failed: {status.describe()}")
    return VerifiedBundle(
        manifest=manifest,
        files=dict(raw.files),
        signature=status,
        archive_sha256=sha256_hex(data),
        raw_signature=raw.signature,
    )


def build_epoch_of(manifest: Manifest) -> int:
    """The archive mtime the builder used, recovered from the manifest's build time."""
    try:
        when = datetime.strptime(manifest.build_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise BundleError(f"manifest build time `{manifest.build_time}` is malformed") from None
    return int(when.timestamp())


def sign_bundle(source: bytes | str | Path, private_key: Ed25519PrivateKey) -> bytes:
    """The bundle with this key's signature added; content and other signatures unchanged.

    The digests are checked first: signing a corrupted bundle would vouch for the corruption.
    """
    verified = open_bundle(source)
    signature = signing.sign(
        verified.manifest.canonical_bytes(), private_key, verified.raw_signature
    )
    return pack(
        verified.manifest.canonical_bytes(),
        verified.files,
        signature,
        build_epoch_of(verified.manifest),
    )

"""Bundles: build, sign/verify, load, sources (file, directory, HTTP) and the hot reloader.

build_bundle(dir) ─► archive bytes ─► sign_bundle ─► (file | directory | HTTP)
source.fetch() ─► load_bundle (verify → compile → test → Engine) ─► holder.swap
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .archive import MAX_ARCHIVE_BYTES, MAX_ENTRIES, MAX_ENTRY_BYTES, MAX_UNCOMPRESSED_BYTES
    from .build import (
        BUNDLE_SUFFIX,
        Built,
        TestsFailed,
        build_bundle,
        bundle_file_name,
        write_atomic,
    )
    from .diff import DiffReport, diff, load_subject, read_request_file, register_record_reader
    from .load import LoadedBundle, activate, load_bundle
    from .manifest import Manifest, SemVer
    from .reloader import Outcome, Reloader
    from .signing import SignatureStatus, generate_keypair, load_private_key, load_public_keys
    from .sources import (
        BundleSource,
        DirectorySource,
        Fetched,
        FileSource,
        HttpSource,
        MemorySource,
        SourceUnavailable,
        open_source,
    )
    from .verify import VerifiedBundle, open_bundle, sign_bundle

# Each name is imported from its module on first use: `pdp serve --policies DIR` needs the
# directory watcher, not the signing keys (cryptography) or the HTTP source (urllib), and
# importing them all cost start-up ~0.1 s.
_MODULES = {
    "BUNDLE_SUFFIX": "build",
    "Built": "build",
    "BundleSource": "sources",
    "DiffReport": "diff",
    "DirectorySource": "sources",
    "Fetched": "sources",
    "FileSource": "sources",
    "HttpSource": "sources",
    "LoadedBundle": "load",
    "MAX_ARCHIVE_BYTES": "archive",
    "MAX_ENTRIES": "archive",
    "MAX_ENTRY_BYTES": "archive",
    "MAX_UNCOMPRESSED_BYTES": "archive",
    "Manifest": "manifest",
    "MemorySource": "sources",
    "Outcome": "reloader",
    "Reloader": "reloader",
    "SemVer": "manifest",
    "SignatureStatus": "signing",
    "SourceUnavailable": "sources",
    "TestsFailed": "build",
    "VerifiedBundle": "verify",
    "activate": "load",
    "build_bundle": "build",
    "bundle_file_name": "build",
    "diff": "diff",
    "generate_keypair": "signing",
    "load_bundle": "load",
    "load_private_key": "signing",
    "load_public_keys": "signing",
    "load_subject": "diff",
    "open_bundle": "verify",
    "open_source": "sources",
    "read_request_file": "diff",
    "register_record_reader": "diff",
    "sign_bundle": "verify",
    "write_atomic": "build",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BUNDLE_SUFFIX",
    "MAX_ARCHIVE_BYTES",
    "MAX_ENTRIES",
    "MAX_ENTRY_BYTES",
    "MAX_UNCOMPRESSED_BYTES",
    "Built",
    "BundleSource",
    "DiffReport",
    "DirectorySource",
    "Fetched",
    "FileSource",
    "HttpSource",
    "LoadedBundle",
    "Manifest",
    "MemorySource",
    "Outcome",
    "Reloader",
    "SemVer",
    "SignatureStatus",
    "SourceUnavailable",
    "TestsFailed",
    "VerifiedBundle",
    "activate",
    "build_bundle",
    "bundle_file_name",
    "diff",
    "generate_keypair",
    "load_bundle",
    "load_private_key",
    "load_public_keys",
    "load_subject",
    "open_bundle",
    "open_source",
    "read_request_file",
    "register_record_reader",
    "sign_bundle",
    "write_atomic",
]

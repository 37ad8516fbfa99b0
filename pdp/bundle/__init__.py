"""Bundles: build, sign/verify, load, sources (file, directory, HTTP) and the hot reloader.

build_bundle(dir) ─► archive bytes ─► sign_bundle ─► (file | directory | HTTP)
source.fetch() ─► load_bundle (verify → compile → test → Engine) ─► holder.swap
"""

from .archive import MAX_ARCHIVE_BYTES, MAX_ENTRIES, MAX_ENTRY_BYTES, MAX_UNCOMPRESSED_BYTES
from .build import BUNDLE_SUFFIX, Built, TestsFailed, build_bundle, bundle_file_name, write_atomic
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

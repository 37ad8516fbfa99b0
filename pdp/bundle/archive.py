"""The bundle archive: a deterministic tar.gz, and a reader that trusts nothing in it.

Layout (every entry a regular file):

    manifest.json     the manifest's canonical bytes
    signature.json    optional: Ed25519 signature(s) over the manifest's canonical bytes
    files/<path>      the policy, data and test files, at their path in the source tree

Writing: entries in a fixed order (manifest, signature, then files sorted by path), uid/gid 0,
no user or group names, mode 0644, one fixed mtime, gzip header mtime 0 and no file name —
the same content always gives the same bytes.

Reading: the archive is decompressed under a size cap before tar looks at it, and every entry
is checked (regular file, relative path without `..`, size, count) before any byte is used.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import stat
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pdp.errors import BundleError

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
FILES_PREFIX = "files/"

# A compressed bundle larger than this is refused before decompression (download/disk abuse).
MAX_ARCHIVE_BYTES = 64 * 1024 * 1024
# Decompressed size cap: stops a gzip bomb before tar parses anything.
MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
# One file larger than this is not a policy or a data table anyone meant to ship.
MAX_ENTRY_BYTES = 32 * 1024 * 1024
# Bounds per-entry work (digests, YAML parses) and tar header floods.
MAX_ENTRIES = 10_000
# Bounds path handling; deep or long paths are a sign of a crafted archive.
MAX_PATH_LENGTH = 512
# The manifest and signature are small JSON; a big one is malformed or hostile.
MAX_META_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RawBundle:
    """The entries of an archive, structurally valid but not yet verified."""

    manifest: bytes
    signature: bytes | None
    files: Mapping[str, bytes]  # path relative to the source tree -> content


def check_path(path: str) -> None:
    """Refuse absolute paths, `..`, empty or odd segments, and over-long names."""
    if not path or len(path) > MAX_PATH_LENGTH:
        raise BundleError(f"archive entry name `{path[:80]}` is empty or too long")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # tarfile's surrogate escapes of bytes that are not UTF-8
        shown = path.encode("utf-8", "backslashreplace").decode("utf-8")[:80]
        raise BundleError(f"archive entry name `{shown}` is not valid utf-8") from None
    if path.startswith("/") or "\\" in path or "\x00" in path or ":" in path.split("/")[0]:
        raise BundleError(f"archive entry `{path}` is not a relative POSIX path")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BundleError(f"archive entry `{path}` has an empty, `.` or `..` segment")
    if posixpath.normpath(path) != path:
        raise BundleError(f"archive entry `{path}` is not a normalised path")


def _entry_order(name: str) -> tuple[int, str]:
    if name == MANIFEST_NAME:
        return (0, name)
    if name == SIGNATURE_NAME:
        return (1, name)
    return (2, name)


def pack(manifest: bytes, files: Mapping[str, bytes], signature: bytes | None, mtime: int) -> bytes:
    """Write the archive; `mtime` (unix seconds) is stamped on every entry."""
    entries: dict[str, bytes] = {MANIFEST_NAME: manifest}
    if signature is not None:
        entries[SIGNATURE_NAME] = signature
    for path, content in files.items():
        # The reader checks the full entry name, so the writer must too.
        check_path(FILES_PREFIX + path)
        entries[FILES_PREFIX + path] = content
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries, key=_entry_order):
            content = entries[name]
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(content))
    out = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of the writer's environment.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buf.getvalue())
    return out.getvalue()


def read_archive_file(path: str | Path) -> bytes:
    """An archive file's bytes, refusing what is not a regular file or is over the size cap.

    The file is opened first and checked by its descriptor, then read up to the cap: a path
    that is (or was swapped for) `/dev/zero`, a FIFO or a growing file is an error, never an
    endless read or a read that blocks.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BundleError(f"cannot read bundle `{path}`: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"bundle `{path}` is not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_ARCHIVE_BYTES + 1)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise BundleError(f"bundle `{path}` is larger than {MAX_ARCHIVE_BYTES} bytes")
    return data


def _gunzip(data: bytes) -> bytes:
    if len(data) > MAX_ARCHIVE_BYTES:
        raise BundleError(f"archive is larger than {MAX_ARCHIVE_BYTES} bytes")
    # wbits 16+MAX_WBITS: gzip framing; max_length caps the output so a bomb stops early.
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, MAX_UNCOMPRESSED_BYTES + 1)
    except zlib.error as exc:
        raise BundleError(f"archive is not valid gzip: {exc}") from None
    if len(out) > MAX_UNCOMPRESSED_BYTES:
        raise BundleError(f"archive expands beyond {MAX_UNCOMPRESSED_BYTES} bytes")
    if not d.eof:
        raise BundleError("archive is truncated")
    if d.unused_data.strip(b"\x00"):
        raise BundleError("archive has trailing data after the gzip stream")
    return out


def unpack(data: bytes) -> RawBundle:
    """Read an archive into memory, refusing anything but a clean bundle layout."""
    raw = _gunzip(data)
    manifest: bytes | None = None
    signature: bytes | None = None
    files: dict[str, bytes] = {}
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                count += 1
                if count > MAX_ENTRIES:
                    raise BundleError(f"archive has more than {MAX_ENTRIES} entries")
                name = member.name
                check_path(name)
                if not member.isreg():
                    raise BundleError(f"archive entry `{name}` is not a regular file")
                if member.issparse():
                    # A sparse entry's size is its expanded size: holes cost no archive
                    # bytes, so the gunzip cap would not bound what reading it allocates.
                    raise BundleError(f"archive entry `{name}` is a sparse file")
                if member.size > MAX_ENTRY_BYTES:
                    raise BundleError(
                        f"archive entry `{name}` is larger than {MAX_ENTRY_BYTES} bytes"
                    )
                if name in (MANIFEST_NAME, SIGNATURE_NAME) and member.size > MAX_META_BYTES:
                    raise BundleError(f"`{name}` is larger than {MAX_META_BYTES} bytes")
                stream = tar.extractfile(member)
                if stream is None:
                    raise BundleError(f"archive entry `{name}` cannot be read")
                content = stream.read()
                if len(content) != member.size:
                    raise BundleError(f"archive entry `{name}` is truncated")
                if name == MANIFEST_NAME:
                    if manifest is not None:
                        raise BundleError(f"archive has more than one `{MANIFEST_NAME}`")
                    manifest = content
                elif name == SIGNATURE_NAME:
                    if signature is not None:
                        raise BundleError(f"archive has more than one `{SIGNATURE_NAME}`")
                    signature = content
                elif name.startswith(FILES_PREFIX):
                    path = name[len(FILES_PREFIX) :]
                    if path in files:
                        raise BundleError(f"archive has `{name}` twice")
                    files[path] = content
                else:
                    raise BundleError(f"archive entry `{name}` is not part of the bundle layout")
    except tarfile.TarError as exc:
        raise BundleError(f"archive is not a valid tar: {exc}") from None
    if manifest is None:
        raise BundleError(f"archive has no `{MANIFEST_NAME}`")
    return RawBundle(manifest=manifest, signature=signature, files=files)

"""The bundle manifest: what a bundle is, and the digest of every file it carries.

The manifest is the one thing a signature covers. Its canonical bytes (sorted keys, no
insignificant whitespace, UTF-8) are reproducible from the parsed value, so a verifier never
trusts the bytes as stored: it re-serialises what it parsed and checks the signature over that.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import total_ordering
from typing import Any

from pdp.errors import BundleError

# Bumped when the archive layout or the manifest's meaning changes incompatibly.
FORMAT_VERSION = 1

# Semantic Versioning 2.0.0 (https://semver.org), without a leading `v`. `\Z`, not `$`, in
# these: `$` also matches before a final newline, which then ends up in file names and logs.
_SEMVER = re.compile(
    r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?\Z"
)
# A bundle name ends up in file names and URLs: keep it to a safe alphabet.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")


@total_ordering
@dataclass(frozen=True, slots=True)
class SemVer:
    """A parsed semantic version, ordered by semver precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> SemVer:
        m = _SEMVER.match(text)
        if m is None:
            raise BundleError(f"`{text}` is not a semantic version (X.Y.Z[-pre][+build])")
        pre = tuple(m["pre"].split(".")) if m["pre"] else ()
        return cls(int(m["major"]), int(m["minor"]), int(m["patch"]), pre, m["build"] or "")

    def _key(self) -> tuple[Any, ...]:
        # A release outranks its pre-releases; numeric identifiers rank below alphanumeric ones.
        pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, not self.pre, pre_key)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += "-" + ".".join(self.pre)
        if self.build:
            text += "+" + self.build
        return text


@dataclass(frozen=True, slots=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: str
    revision: str  # git commit of the source tree, "" when it was not in git
    dirty: bool  # the tree had uncommitted changes when built
    build_time: str  # RFC 3339, UTC, from SOURCE_DATE_EPOCH or the commit time
    builder: str  # "pdp <version>"
    files: Mapping[str, FileEntry]  # bundle-relative path -> digest

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "revision": self.revision,
            "dirty": self.dirty,
            "build_time": self.build_time,
            "builder": self.builder,
            "files": {
                path: {"sha256": e.sha256, "size": e.size} for path, e in sorted(self.files.items())
            },
        }

    def canonical_bytes(self) -> bytes:
        """The bytes that are signed and stored: deterministic for a given manifest."""
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        """sha256 of the canonical manifest: names the whole content, since it lists every
        file's digest. Reported as the bundle digest."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        try:
            obj = json.loads(raw.decode("utf-8"))
        # ValueError: invalid UTF-8 and JSON, and an integer of more than 4300 digits
        except ValueError as exc:
            raise BundleError(f"manifest is not valid JSON: {exc}") from None
        except RecursionError:
            raise BundleError("manifest is not valid JSON: nested too deeply") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Manifest:
        if not isinstance(obj, dict):
            raise BundleError("manifest must be a JSON object")
        fmt = obj.get("format")
        if fmt != FORMAT_VERSION:
            raise BundleError(
                f"unsupported bundle format `{fmt}` (this pdp reads {FORMAT_VERSION})"
            )
        name = _field(obj, "name", str)
        validate_name(name)
        version = _field(obj, "version", str)
        SemVer.parse(version)
        raw_files = _field(obj, "files", dict)
        files: dict[str, FileEntry] = {}
        for path, entry in raw_files.items():
            _unicode(path, "files")
            if not isinstance(entry, dict):
                raise BundleError(f"manifest entry for `{path}` must be an object")
            digest = entry.get("sha256")
            size = entry.get("size")
            if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
                raise BundleError(f"manifest entry for `{path}` has no valid sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BundleError(f"manifest entry for `{path}` has no valid size")
            files[path] = FileEntry(digest, size)
        return cls(
            name=name,
            version=version,
            revision=_field(obj, "revision", str),
            dirty=_field(obj, "dirty", bool),
            build_time=_field(obj, "build_time", str),
            builder=_field(obj, "builder", str),
            files=files,
        )


def _field(obj: dict[str, Any], key: str, typ: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ):
        raise BundleError(f"manifest field `{key}` is missing or not a {typ.__name__}")
    if isinstance(value, str):
        _unicode(value, key)
    return value


def _unicode(text: str, key: str) -> None:
    # JSON's `\ud800` escape gives a string UTF-8 cannot encode: the canonical bytes (and
    # any message or log line quoting it) could not be produced.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"manifest field `{key}` holds an unpaired surrogate") from None


def validate_name(name: str) -> None:
    if not _NAME.match(name):
        raise BundleError(
            f"`{name}` is not a valid bundle name (letters, digits, `.`, `_`, `-`; at most 128)"
        )


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

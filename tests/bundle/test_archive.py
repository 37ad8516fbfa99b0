"""The archive reader refuses anything but a clean bundle; the manifest round-trips."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from bundle_helpers import make_bundle

from pdp.bundle import SemVer, archive, open_bundle
from pdp.bundle.archive import MAX_ENTRY_BYTES, pack, unpack
from pdp.bundle.manifest import Manifest
from pdp.errors import BundleError


def _tar(entries: list[tarfile.TarInfo], contents: list[bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in zip(entries, contents):
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def _reg(name: str, content: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/etc/passwd", "relative"),
        ("files/../../evil.yaml", "`..`"),
        ("files/./x.yaml", "`.`"),
        ("files//x.yaml", "empty"),
        ("other.txt", "not part of the bundle layout"),
    ],
)
def test_unsafe_entry_names_are_refused(name: str, message: str) -> None:
    info, content = _reg(name)
    with pytest.raises(BundleError, match=message):
        unpack(_tar([info], [content]))


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE])
def test_links_and_directories_are_refused(kind: bytes) -> None:
    info = tarfile.TarInfo("files/link.yaml")
    info.type = kind
    info.linkname = "/etc/passwd"
    with pytest.raises(BundleError, match="not a regular file"):
        unpack(_tar([info], [b""]))


def test_oversized_entry_is_refused_from_its_header() -> None:
    info = tarfile.TarInfo("files/big.yaml")
    info.size = MAX_ENTRY_BYTES + 1
    buf = io.BytesIO()
    tar_bytes = info.tobuf(format=tarfile.PAX_FORMAT)  # header only: the size is a lie
    buf.write(tar_bytes)
    with pytest.raises(BundleError, match="larger than"):
        unpack(gzip.compress(buf.getvalue()))


def test_gzip_bomb_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # A smaller cap exercises the same code path without compressing 256 MiB in a test.
    monkeypatch.setattr(archive, "MAX_UNCOMPRESSED_BYTES", 1024 * 1024)
    bomb = gzip.compress(b"\0" * (2 * 1024 * 1024), compresslevel=1)
    assert len(bomb) < 10_000
    with pytest.raises(BundleError, match="expands beyond"):
        unpack(bomb)


def test_garbage_and_truncation_are_refused() -> None:
    data = make_bundle(1)
    with pytest.raises(BundleError, match="gzip"):
        unpack(b"not a bundle at all")
    with pytest.raises(BundleError, match="truncated"):
        unpack(data[: len(data) // 2])


def test_missing_manifest_is_refused() -> None:
    info, content = _reg("files/x.yaml")
    with pytest.raises(BundleError, match=r"no `manifest\.json`"):
        unpack(_tar([info], [content]))


def test_extra_file_not_in_manifest_is_refused() -> None:
    raw = unpack(make_bundle(1))
    files = {**raw.files, "sneaky.yaml": b"kind: ResourcePolicy"}
    with pytest.raises(BundleError, match="not in the manifest"):
        open_bundle(pack(raw.manifest, files, None, 0))


def test_changed_file_is_a_digest_mismatch() -> None:
    raw = unpack(make_bundle(1))
    files = dict(raw.files)
    files["things.yaml"] = files["things.yaml"].replace(b"allow-a1", b"allow-a9")
    with pytest.raises(BundleError, match=r"digest mismatch for `things\.yaml`"):
        open_bundle(pack(raw.manifest, files, None, 0))


def test_pack_is_deterministic_and_round_trips() -> None:
    a, b = make_bundle(3), make_bundle(3)
    assert a == b
    verified = open_bundle(a)
    assert verified.manifest.version == "3.0.0"
    assert set(verified.files) == {"things.yaml", "things_test.yaml"}
    assert Manifest.from_bytes(verified.manifest.canonical_bytes()) == verified.manifest


def test_semver_precedence() -> None:
    order = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0",
        "1.2.0",
        "10.0.0",
    ]
    parsed = [SemVer.parse(v) for v in order]
    assert sorted(reversed(parsed)) == parsed
    assert str(SemVer.parse("1.2.3-rc.1+build.5")) == "1.2.3-rc.1+build.5"
    with pytest.raises(BundleError, match="semantic version"):
        SemVer.parse("v1.2")

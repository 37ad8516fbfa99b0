"""Red-team 18, bundle archives: what a hostile archive can make the reader do before any
signature is checked.

The reader caps the gunzipped tar at `MAX_UNCOMPRESSED_BYTES`, and each entry's size from its
header at `MAX_ENTRY_BYTES`. A sparse entry (GNU `S` type, or the PAX `GNU.sparse.*` forms)
stores only its data blocks: its header's size is the *expanded* size, and `tarfile` fills the
holes with zeros on read. So a 200-byte archive of a dozen sparse entries made the reader
allocate 400 MB, and 10,000 of them (the entry cap) hundreds of gigabytes — an out-of-memory
kill from whoever can put bytes where pdp fetches bundles, before the signature is looked at.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pdp.bundle import archive
from pdp.bundle.archive import unpack
from pdp.errors import BundleError

MIB = 1024 * 1024


def _octal(n: int, width: int) -> bytes:
    return b"%0*o" % (width - 1, n) + b"\0"


def gnu_sparse(name: str, realsize: int) -> bytes:
    """A GNU sparse (`S`) header storing no data: all of `realsize` is one hole."""
    info = tarfile.TarInfo(name)
    info.size = 0
    info.type = tarfile.GNUTYPE_SPARSE
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    block[386:398] = _octal(realsize, 12)  # first map entry: offset
    block[398:410] = _octal(0, 12)  # ... and 0 bytes of data
    block[482] = 0  # no extended map
    block[483:495] = _octal(realsize, 12)  # the expanded size
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block[:512])
    return bytes(block)


def pax_sparse(name: str, realsize: int) -> bytes:
    """The PAX 0.1 form: a regular-file header whose pax records carry the sparse map."""
    info = tarfile.TarInfo(name)
    info.size = 0
    info.pax_headers = {"GNU.sparse.map": f"{realsize},0", "GNU.sparse.size": str(realsize)}
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _archive(*headers: bytes) -> bytes:
    return gzip.compress(b"".join(headers) + b"\0" * 1024, mtime=0)


@pytest.mark.parametrize("make", [gnu_sparse, pax_sparse], ids=["gnu", "pax"])
def test_a_sparse_entry_is_refused_before_it_is_expanded(make: object) -> None:
    data = _archive(make("files/p.yaml", 4 * MIB))  # type: ignore[operator]
    assert len(data) < 1024
    with pytest.raises(BundleError, match=r"archive entry `files/p.yaml` is a sparse file"):
        unpack(data)


def test_pdp_bundle_inspect_refuses_a_sparse_bomb_without_expanding_it(tmp_path: Path) -> None:
    # 10,000 holes of 32 MiB: 320 GB once expanded. The CLI must answer, not be killed.
    bomb = tmp_path / "bomb.pdpb"
    bomb.write_bytes(
        _archive(*(gnu_sparse(f"files/p{i}.yaml", archive.MAX_ENTRY_BYTES) for i in range(10_000)))
    )
    assert bomb.stat().st_size < 100_000
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            limit + "import sys; from pdp.cli.main import main; sys.exit(main())",
            "bundle",
            "inspect",
            str(bomb),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "sparse file" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr

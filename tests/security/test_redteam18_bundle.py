"""Red-team 18, bundle archives: what a hostile archive can make the reader do before any
signature is checked.

The reader caps the gunzipped tar at `MAX_UNCOMPRESSED_BYTES`, and each entry's size from its
header at `MAX_ENTRY_BYTES`. A sparse entry (GNU `S` type, or the PAX `GNU.sparse.*` forms)
stores only its data blocks: its header's size is the *expanded* size, and `tarfile` fills the
holes with zeros on read. So a 200-byte archive of a dozen sparse entries made the reader
allocate 400 MB, and 10,000 of them (the entry cap) hundreds of gigabytes — an out-of-memory
kill from whoever can put bytes where pdp fetches bundles, before the signature is looked at.

Text that is not Unicode: a manifest string with JSON's `\\ud800` escape, an entry name or a
source file name that is not UTF-8 ended as a `UnicodeEncodeError` traceback (from `pdp bundle
verify`/`inspect`/`build`; an "unexpected error" in `pdp serve`'s log) instead of a refusal.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import time
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


# -- a manifest string that JSON allows and UTF-8 cannot hold ----------------------------------

DIGEST = "0" * 64


def _manifest(**fields: object) -> bytes:
    """Canonical-looking manifest bytes (sorted keys, no spaces) with `fields` raw JSON."""
    base: dict[str, object] = {
        "build_time": '"2026-01-01T00:00:00Z"',
        "builder": '"pdp 1"',
        "dirty": "false",
        "files": "{}",
        "format": "1",
        "name": '"x"',
        "revision": '""',
        "version": '"1.0.0"',
    }
    base.update(fields)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in sorted(base.items())) + "}").encode()


SURROGATES = {
    "builder": _manifest(builder='"pdp \\ud800"'),
    "revision": _manifest(revision='"\\udfff"'),
    "build_time": _manifest(build_time='"2026-01-01T00:00:00Z\\ud83d"'),
    "files": _manifest(files='{"p\\ud800.yaml":{"sha256":"' + DIGEST + '","size":0}}'),
}


@pytest.mark.parametrize("field", list(SURROGATES))
def test_an_unpaired_surrogate_in_the_manifest_is_a_bundle_error(field: str) -> None:
    # `\ud800` is valid JSON and no character: re-serialising the manifest to check it is
    # canonical raised UnicodeEncodeError, a traceback from `pdp bundle verify`/`inspect`.
    from pdp.bundle import open_bundle

    data = archive.pack(SURROGATES[field], {}, None, 0)
    with pytest.raises(BundleError, match=f"manifest.*`{field}`.*surrogate"):
        open_bundle(data)


@pytest.mark.parametrize("verb", ["inspect", "verify"])
def test_the_cli_names_the_surrogate_instead_of_a_traceback(tmp_path: Path, verb: str) -> None:
    bundle = tmp_path / "b.pdpb"
    bundle.write_bytes(archive.pack(SURROGATES["builder"], {}, None, 0))
    args = [sys.executable, "-m", "pdp.cli.main", "bundle", verb, str(bundle)]
    if verb == "verify":
        keygen = [sys.executable, "-m", "pdp.cli.main", "keygen", "-o", str(tmp_path / "k")]
        subprocess.run(keygen, check=True, capture_output=True, timeout=120)
        args += ["--trust", str(tmp_path / "k.pub")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "surrogate" in result.stdout + result.stderr, result.stdout + result.stderr


def test_an_entry_name_that_is_not_utf8_is_refused_by_name() -> None:
    # tarfile reads such a name with surrogate escapes (`p\udcff.yaml`); the error quoting it
    # then breaks whatever writes it as UTF-8 (a log file, a JSON answer).
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as t:
        info = tarfile.TarInfo("files/p\xff.yaml")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="not valid utf-8") as caught:
        unpack(gzip.compress(buf.getvalue()))
    str(caught.value).encode("utf-8")  # the message itself can be written anywhere


def test_pdp_bundle_build_names_a_source_file_whose_name_is_not_utf8(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "doc.yaml").write_text(POLICY)
    (Path(os.fsdecode(bytes(src))) / os.fsdecode(b"n\xff.yaml")).write_text(
        POLICY.replace("id: doc", "id: doc2").replace("resource: document", "resource: doc2")
    )
    result = subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "bundle", "build", str(src), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "n\\udcff.yaml` is not valid utf-8" in result.stderr, result.stderr
    assert not list(tmp_path.glob("*.pdpb"))


POLICY = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: doc}
spec:
  resource: document
  tenancy: global
  actions: {read: {}}
  rules:
    - {id: readers, actions: [read], effect: allow, roles: [reader], reason: reader}
"""


# -- a refusal quoting the hostile text, then served as `last_error` ----------------------------


def _with_signature(tmp_path: Path, signature: bytes) -> Path:
    from pdp.bundle.build import build_bundle

    src = tmp_path / "src"
    src.mkdir()
    (src / "doc.yaml").write_text(POLICY)
    raw = unpack(build_bundle(src, version="1.0.0").archive)
    bundle = tmp_path / "b.pdpb"
    bundle.write_bytes(archive.pack(raw.manifest, raw.files, signature, 0))
    return bundle


def test_server_info_reports_a_refusal_that_quotes_a_surrogate(tmp_path: Path) -> None:
    # The signature entry's key ids were quoted in the refusal, which the holder keeps as
    # `last_error` and ServerInfo returns: a `\\ud800` key id made every ServerInfo call fail
    # (INTERNAL: protobuf cannot encode it) for as long as the source served that bundle.
    from pdp.bundle.signing import generate_keypair
    from pdp.server._gen.pdp.v1 import decision_pb2 as pb

    from .real_pdp import pdp_serve_bundle

    _, pub = generate_keypair(tmp_path / "release")
    sig = b'{"signatures":[{"algorithm":"ed25519","key_id":"\\ud800","value":"AAAA"}]}'
    bundle = _with_signature(tmp_path, sig)
    with pdp_serve_bundle(str(bundle), "--trust", str(pub), "--no-ext-authz") as served:
        info = None
        for _ in range(600):
            info = served.stub.ServerInfo(pb.ServerInfoRequest(), timeout=10)
            if info.last_error:
                break
            time.sleep(0.1)
        assert info is not None and "signature check failed" in info.last_error
        assert "`key_id` holds an unpaired surrogate" in info.last_error, info.last_error
        assert not any("Traceback" in line for line in served.log), "".join(served.log)


def test_the_holder_keeps_any_refusal_as_text() -> None:
    # Whatever else a refusal quotes from a hostile bundle, ServerInfo can still encode it.
    from pdp.engine import EngineHolder
    from pdp.model.request import DEFAULT_LIMITS
    from pdp.server.convert import server_info_to_proto

    holder = EngineHolder()
    holder.record_failure("refused `p\udcff.yaml`")
    assert holder.status.last_error == "refused `p\\udcff.yaml`"
    info = server_info_to_proto("0", None, holder.status, DEFAULT_LIMITS, 1 << 20)
    assert info.SerializeToString()


def test_pdp_bundle_sign_refuses_a_signature_entry_with_a_surrogate(tmp_path: Path) -> None:
    from pdp.bundle.signing import generate_keypair

    key, _ = generate_keypair(tmp_path / "release")
    sig = b'{"signatures":[{"algorithm":"ed25519","key_id":"\\udfff","value":"AAAA"}]}'
    bundle = _with_signature(tmp_path, sig)
    result = subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "bundle", "sign", str(bundle), "--key", str(key)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "key_id" in result.stderr and "surrogate" in result.stderr, result.stderr

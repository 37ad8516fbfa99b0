"""Red-team bundles from the publisher's side: a hostile manifest or signature entry is a
clear refusal from `pdp bundle verify` / `inspect` / `sign`, never a traceback.

`json.loads` raises `RecursionError` for deep nesting and a plain `ValueError` (not a
`JSONDecodeError`) for an integer of more than 4300 digits; the bundle reader caught neither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pdp.bundle.archive import pack, unpack

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

HOSTILE_JSON = {
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "long-integer": b'{"signatures": 1' + b"0" * 5000 + b"}",
}


def pdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(bundle, private key, public key): a real bundle built and signed by the CLI."""
    root = tmp_path_factory.mktemp("bundle")
    (root / "policies").mkdir()
    (root / "policies" / "doc.yaml").write_text(POLICY)
    for args in (
        ("keygen", "-o", str(root / "release")),
        ("bundle", "build", str(root / "policies"), "-o", str(root / "out"), "--version", "1.0.0"),
    ):
        result = pdp(*args)
        assert result.returncode == 0, result.stdout + result.stderr
    [bundle] = (root / "out").glob("*.pdpb")
    result = pdp("bundle", "sign", str(bundle), "--key", str(root / "release.key"))
    assert result.returncode == 0, result.stdout + result.stderr
    return bundle, root / "release.key", root / "release.pub"


def refused_cleanly(result: subprocess.CompletedProcess[str], needle: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out and needle in out, out


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_manifest_json_is_refused_cleanly(
    tmp_path: Path, signed: tuple[Path, Path, Path], name: str
) -> None:
    bundle, key, pub = signed
    hostile = tmp_path / "hostile.pdpb"
    hostile.write_bytes(pack(HOSTILE_JSON[name], unpack(bundle.read_bytes()).files, None, 0))
    for args in (
        ("bundle", "verify", "--trust", str(pub), str(hostile)),
        ("bundle", "inspect", str(hostile)),
        ("bundle", "sign", str(hostile), "--key", str(key)),
    ):
        refused_cleanly(pdp(*args), "manifest is not valid JSON")


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
def test_hostile_signature_json_is_refused_cleanly(
    tmp_path: Path, signed: tuple[Path, Path, Path], name: str
) -> None:
    bundle, _, pub = signed
    raw = unpack(bundle.read_bytes())
    hostile = tmp_path / "hostile.pdpb"
    hostile.write_bytes(pack(raw.manifest, raw.files, HOSTILE_JSON[name], 0))
    refused_cleanly(
        pdp("bundle", "verify", "--trust", str(pub), str(hostile)),
        "signature entry is not valid JSON",
    )


def test_the_untouched_bundle_verifies(signed: tuple[Path, Path, Path]) -> None:
    # The fixture itself is sound: the refusals above are the hostile entries' doing.
    bundle, _, pub = signed
    result = pdp("bundle", "verify", "--trust", str(pub), str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr


# --- `pdp bundle diff --requests` ----------------------------------------------------------------

HOSTILE_REQUESTS = {
    "deep.jsonl": "[" * 100_000 + "]" * 100_000 + "\n",
    "long-integer.jsonl": '{"principal": 1' + "0" * 5000 + "}\n",
    "deep.json": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("name", sorted(HOSTILE_REQUESTS))
def test_bundle_diff_reports_a_hostile_request_line_instead_of_crashing(
    tmp_path: Path, name: str
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "doc.yaml").write_text(POLICY)
    requests = tmp_path / name
    requests.write_text(HOSTILE_REQUESTS[name])
    result = pdp("bundle", "diff", str(policies), str(policies), "--requests", str(requests))
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "Traceback" not in out and f"{requests}" in out and "not JSON" in out, out


# --- a trailing newline in the bundle name or version ----------------------------------------------
# `$` in a Python regex also matches before a final newline: `pdp bundle build --version
# $'1.0.0\n'` wrote `doc-1.0.0\n.pdpb`, and a manifest whose version ends in a newline verified,
# its version then carried into every decision and log line.


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [("--version", "1.0.0\n", "semantic version"), ("--name", "doc\n", "bundle name")],
)
def test_build_refuses_a_name_or_version_ending_in_a_newline(
    tmp_path: Path, option: str, value: str, needle: str
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "doc.yaml").write_text(POLICY)
    out = tmp_path / "out"
    result = pdp("bundle", "build", str(tmp_path / "policies"), "-o", str(out), option, value)
    assert result.returncode != 0, result.stdout + result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(("field", "value"), [("version", "1.0.0\n"), ("name", "doc\n")])
def test_verify_refuses_a_manifest_whose_name_or_version_ends_in_a_newline(
    tmp_path: Path, signed: tuple[Path, Path, Path], field: str, value: str
) -> None:
    from pdp.bundle.manifest import canonical_json
    from pdp.bundle.signing import load_private_key, sign

    bundle, key, pub = signed
    raw = unpack(bundle.read_bytes())
    manifest = json.loads(raw.manifest)
    manifest[field] = value
    manifest_bytes = canonical_json(manifest)
    signature = sign(manifest_bytes, load_private_key(key), None)  # the publisher signed it
    hostile = tmp_path / "hostile.pdpb"
    hostile.write_bytes(pack(manifest_bytes, raw.files, signature, 0))
    result = pdp("bundle", "verify", "--trust", str(pub), str(hostile))
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out, out
    assert "not a semantic version" in out or "not a valid bundle name" in out, out


# --- a bundle path that is not a regular file ------------------------------------------------------
# `Path.read_bytes()` on `/dev/zero` read until memory ran out (`pdp bundle verify`, `inspect`,
# `sign`, and a server's file source after its size check, should the file be swapped for such
# a link); on a FIFO it blocked for ever.


def _limited_memory() -> None:
    import resource

    # Without the fix the read grows until this limit: a MemoryError, not the machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))


def not_regular(tmp_path: Path, kind: str) -> Path:
    if kind == "device":
        return Path("/dev/zero")
    path = tmp_path / "bundle-1.0.0.pdpb"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "verb"),
    [
        ("device", "verify"),
        ("device", "inspect"),
        ("device", "sign"),
        ("fifo", "verify"),
        ("directory", "inspect"),
    ],
)
def test_a_bundle_path_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, signed: tuple[Path, Path, Path], kind: str, verb: str
) -> None:
    _, key, pub = signed
    path = not_regular(tmp_path, kind)
    extra = {
        "verify": ["--trust", str(pub)],
        "inspect": [],
        "sign": ["--key", str(key), "-o", str(tmp_path / "out.pdpb")],
    }[verb]
    result = subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "bundle", verb, *extra, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited_memory,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in out, out
    assert "is not a regular file" in out, out


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_file_source_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    from pdp.bundle.sources import FileSource, SourceUnavailable

    link = tmp_path / "current.pdpb"
    link.symlink_to(not_regular(tmp_path, kind))
    with pytest.raises(SourceUnavailable, match="is not a regular file"):
        FileSource(link).fetch()

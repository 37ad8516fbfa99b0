"""Build (deterministic, tested), keygen, sign, verify and inspect — through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from bundle_helpers import policy_files, write_tree

from pdp.bundle import build_bundle, load_bundle, load_public_keys, open_bundle
from pdp.cli.main import main
from pdp.errors import BundleError


def _git(cwd: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_AUTHOR_DATE": "2026-02-03T04:05:06Z",
        "GIT_COMMITTER_DATE": "2026-02-03T04:05:06Z",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(cwd),
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write_tree(root / "policies", policy_files(1))
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "policies v1")
    return root


def test_two_builds_are_byte_identical(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    args = ["bundle", "build", str(repo / "policies"), "--version", "1.0.0", "--name", "things"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "things-1.0.0.pdpb").read_bytes()
    b = (tmp_path / "b" / "things-1.0.0.pdpb").read_bytes()
    assert a == b
    manifest = open_bundle(a).manifest
    assert manifest.revision == _git(repo, "rev-parse", "HEAD")
    assert manifest.dirty is False
    assert manifest.build_time == "2026-02-03T04:05:06Z"  # the commit time, not the clock
    assert manifest.builder.startswith("pdp ")


def test_dirty_tree_and_source_date_epoch(repo: Path) -> None:
    (repo / "policies" / "things.yaml").write_text(
        "# edited\n" + (repo / "policies" / "things.yaml").read_text()
    )
    built = build_bundle(repo / "policies", version="1.0.1", env={"SOURCE_DATE_EPOCH": "86400"})
    assert built.manifest.dirty is True
    assert built.manifest.build_time == "1970-01-02T00:00:00Z"
    assert built.manifest.name == "policies"


def test_build_refuses_a_tree_whose_tests_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = write_tree(tmp_path / "pol", policy_files(2, tests_pass=False))
    out = tmp_path / "out"
    assert main(["bundle", "build", str(tree), "-o", str(out), "--version", "2.0.0"]) == 1
    printed = capsys.readouterr()
    assert "FAIL things_test.yaml" in printed.out
    assert "bundle not written" in printed.err
    assert not out.exists() or not any(out.iterdir())


def test_build_refuses_to_change_a_published_version(tmp_path: Path) -> None:
    out = tmp_path / "out"
    tree = write_tree(tmp_path / "pol", policy_files(1))
    args = ["bundle", "build", str(tree), "-o", str(out), "--version", "1.0.0"]
    assert main(args) == 0
    write_tree(tree, policy_files(2))
    assert main(args) == 1
    assert main([*args, "--force"]) == 0


def test_keygen_sign_verify_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = write_tree(tmp_path / "pol", policy_files(1))
    assert main(["keygen", "-o", str(tmp_path / "keys" / "prod")]) == 0
    assert main(["keygen", "-o", str(tmp_path / "keys" / "other")]) == 0
    assert (tmp_path / "keys" / "prod.key").stat().st_mode & 0o777 == 0o600
    assert main(["keygen", "-o", str(tmp_path / "keys" / "prod")]) == 1  # never overwrites
    assert main(["bundle", "build", str(tree), "-o", str(tmp_path), "--version", "1.0.0"]) == 0
    bundle = str(tmp_path / "pol-1.0.0.pdpb")
    pub, other = str(tmp_path / "keys" / "prod.pub"), str(tmp_path / "keys" / "other.pub")

    assert main(["bundle", "verify", bundle, "--trust", pub]) == 1  # unsigned
    assert main(["bundle", "sign", bundle, "--key", str(tmp_path / "keys" / "prod.key")]) == 0
    assert main(["bundle", "verify", bundle, "--trust", pub]) == 0
    assert main(["bundle", "verify", bundle, "--trust", other]) == 1  # untrusted signer
    assert main(["bundle", "verify", bundle, "--trust", other, "--trust", pub]) == 0
    capsys.readouterr()

    assert main(["bundle", "inspect", bundle, "--json", "--trust", pub]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["signature"]["state"] == "valid"
    assert info["digests"] == "ok"
    assert set(info["manifest"]["files"]) == {"things.yaml", "things_test.yaml"}

    # One flipped byte anywhere in the archive: verification fails.
    data = bytearray(Path(bundle).read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped = tmp_path / "flipped.pdpb"
    flipped.write_bytes(bytes(data))
    assert main(["bundle", "verify", str(flipped), "--trust", pub]) == 1
    with pytest.raises(BundleError):
        load_bundle(bytes(data), load_public_keys([pub]), require_signature=True)


def test_signature_does_not_survive_a_content_change(tmp_path: Path) -> None:
    from pdp.bundle import sign_bundle
    from pdp.bundle.archive import pack, unpack
    from pdp.bundle.signing import generate_keypair, load_private_key

    priv, pub = generate_keypair(tmp_path / "k")
    signed = sign_bundle(
        build_bundle(write_tree(tmp_path / "p", policy_files(1))).archive, load_private_key(priv)
    )
    raw = unpack(signed)
    # Re-pack a different manifest (an attacker's) with the old signature entry.
    tampered_manifest = raw.manifest.replace(b'"version":"0.0.0"', b'"version":"9.0.0"')
    forged = pack(tampered_manifest, raw.files, raw.signature, 0)
    with pytest.raises(BundleError, match="signature check failed: invalid"):
        open_bundle(forged, load_public_keys([pub]), require_signature=True)


def test_a_served_directory_is_named_by_its_git_revision(repo: Path, tmp_path: Path) -> None:
    """`pdp serve --policies` starts git before it loads the policies and reads it after
    (pdp.cli._common.start_directory_bundle_info): the same name as asked in one go."""
    from pdp.cli._common import directory_bundle_info, start_directory_bundle_info

    head = _git(repo, "rev-parse", "HEAD")
    pending = start_directory_bundle_info(repo / "policies")
    assert pending().revision == head == directory_bundle_info(repo / "policies").revision
    (repo / "policies" / "things.yaml").write_text("# edited\n")
    assert start_directory_bundle_info(repo / "policies")().revision == f"{head}-dirty"
    outside = tmp_path / "outside"
    outside.mkdir()
    info = start_directory_bundle_info(outside)()
    assert (info.name, info.version, info.revision) == ("outside", "0.0.0", "")


def test_the_git_commands_run_before_the_revision_is_asked_for(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They run while the policies load (`serve --policies`): all three (`log`; `config`
    listing the filter drivers, then `status`) are started by `start_directory_bundle_info`,
    before its result is read. A `git` first on PATH notes each start, then runs the real one."""
    import os
    import shutil
    import time

    from pdp.cli._common import start_directory_bundle_info

    real = shutil.which("git")
    assert real is not None
    fake = tmp_path / "bin"
    fake.mkdir()
    started = tmp_path / "started"
    started.mkdir()
    (fake / "git").write_text(f'#!/bin/sh\ntouch "{started}/$$"\nexec "{real}" "$@"\n')
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    pending = start_directory_bundle_info(repo / "policies")
    end = time.monotonic() + 30
    while len(list(started.iterdir())) < 3 and time.monotonic() < end:
        time.sleep(0.01)
    assert len(list(started.iterdir())) == 3  # all running before the result is asked for
    assert pending().revision == _git(repo, "rev-parse", "HEAD")
    from pdp.bundle.git import git_info

    info = git_info(repo / "policies")  # the revision and its time from one `git log`
    assert (info.revision, info.commit_time, info.dirty) == (
        _git(repo, "rev-parse", "HEAD"),
        int(_git(repo, "log", "-1", "--format=%ct")),
        False,
    )

"""Red team 26: the git revision pdp reads from a policy directory (`pdp.bundle.git`: `pdp
bundle build` and `pdp serve --policies DIR` run `git log` and `git status` in it).

The repository is read, never obeyed: whatever its own config says (`.git/config`, written by
whoever can write the directory), no program runs. On main, `git status` ran the repository's
`core.fsmonitor` hook, the clean filter `.gitattributes` named, and (refreshing the index)
its `post-index-change` hook; `git log` ran `gpg.program` under `log.showSignature`; in a
partial clone whose HEAD is missing, both fetched it through the transport its config names
(`core.sshCommand`, `remote.*.uploadpack`, `ext::`, `core.gitProxy`).
Real local repositories, no network; a few hundred ms in all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pdp.bundle.build import build_bundle, collect_files
from pdp.bundle.git import git_info
from pdp.cli._common import directory_bundle_info
from tests.bundle.bundle_helpers import policy_files

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    )
    return out.stdout.strip()


def make_repo(root: Path) -> tuple[Path, Path]:
    """A repository at `root/repo` whose `policies/` holds a tree that builds."""
    repo = root / "repo"
    (repo / "policies").mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "a@example.com")
    git(repo, "config", "user.name", "a")
    for name, content in policy_files(1).items():
        (repo / "policies" / name).write_bytes(content)
    attributes = "* filter=evil\n*.yaml filter=a=b.c\nthings_test.yaml filter=included\n"
    (repo / ".gitattributes").write_text(attributes)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    return repo, repo / "policies"


def arm(repo: Path, marker: Path) -> None:
    """Every way the repository's config has git run a program while log and status read it,
    each leaving a file named after it in `marker`."""
    marker.mkdir()

    def run(name: str) -> str:
        return f"touch {marker / name}; cat"

    git(repo, "config", "core.fsmonitor", f"touch {marker / 'fsmonitor'}; false")
    git(repo, "config", "filter.evil.clean", run("clean"))
    git(repo, "config", "filter.evil.process", run("process"))
    git(repo, "config", "filter.a=b.c.clean", run("clean-odd-name"))
    # A driver defined in a file the repository's config includes.
    (repo / ".git" / "more.cfg").write_text(f'[filter "included"]\n\tclean = "{run("included")}"\n')
    git(repo, "config", "include.path", "more.cfg")
    git(repo, "config", "log.showSignature", "true")
    git(repo, "config", "gpg.program", str(marker.parent / "gpg.sh"))
    gpg = marker.parent / "gpg.sh"
    gpg.write_text(f"#!/bin/sh\ntouch {marker / 'gpg'}\nexit 1\n")
    gpg.chmod(0o755)
    hooks = repo / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for hook in ("post-index-change", "post-checkout", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {marker / hook}\n")
        (hooks / hook).chmod(0o755)
    # A commit that carries a (bogus) signature: log.showSignature hands it to gpg.program.
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    head = git(repo, "rev-parse", "HEAD")
    body = (
        f"tree {tree}\nparent {head}\nauthor a <a@example.com> 1700000000 +0000\n"
        "committer a <a@example.com> 1700000000 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n"
        " AAAA\n -----END PGP SIGNATURE-----\n\nsigned\n"
    )
    obj = subprocess.run(
        ["git", "-C", str(repo), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=body,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (repo / ".git" / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    branch = git(repo, "symbolic-ref", "--short", "HEAD")
    (repo / ".git" / "refs" / "heads" / branch).write_text(obj + "\n")
    # Stat data no longer matching the index: status must look at the content (filters).
    for p in (repo / "policies").iterdir():
        os.utime(p, (1, 1))


@pytest.fixture
def armed(tmp_path: Path) -> tuple[Path, Path, Path]:
    repo, policies = make_repo(tmp_path)
    marker = tmp_path / "ran"
    arm(repo, marker)
    return repo, policies, marker


def test_git_info_runs_nothing_from_the_repository(armed: tuple[Path, Path, Path]) -> None:
    repo, policies, marker = armed
    index = (repo / ".git" / "index").stat()
    info = git_info(policies)
    assert sorted(os.listdir(marker)) == []
    assert info.revision == git(repo, "rev-parse", "HEAD")
    assert info.commit_time == 1700000000
    assert info.dirty is False  # content as committed: the filters' absence changes nothing
    # Reading the repository wrote nothing into it (no index refresh).
    after = (repo / ".git" / "index").stat()
    assert (after.st_mtime_ns, after.st_size) == (index.st_mtime_ns, index.st_size)
    (policies / "things.yaml").write_bytes(b"# changed\n" + (policies / "things.yaml").read_bytes())
    assert git_info(policies).dirty is True
    assert sorted(os.listdir(marker)) == []


def test_build_and_serve_run_nothing_from_the_repository(armed: tuple[Path, Path, Path]) -> None:
    repo, policies, marker = armed
    built = build_bundle(policies, version="1.0.0")
    assert built.manifest.revision == git(repo, "rev-parse", "HEAD")
    assert directory_bundle_info(policies).revision == built.manifest.revision
    assert sorted(os.listdir(marker)) == []


def test_a_submodule_is_not_looked_into(tmp_path: Path) -> None:
    """A submodule's own config is the submodule's: status does not recurse into it."""
    inner, _ = make_repo(tmp_path / "inner")
    repo, policies = make_repo(tmp_path)
    marker = tmp_path / "ran"
    marker.mkdir()
    git(
        repo,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        str(inner),
        "policies/sub",
    )
    git(repo, "commit", "-q", "-m", "sub")
    sub_config = repo / ".git" / "modules" / "policies" / "sub" / "config"
    with sub_config.open("a") as f:
        f.write(f'[core]\n\tfsmonitor = "touch {marker / "sub-fsmonitor"}; false"\n')
        f.write(f'[filter "evil"]\n\tclean = "touch {marker / "sub-clean"}; cat"\n')
    for p in (repo / "policies" / "sub" / "policies").iterdir():
        os.utime(p, (1, 1))
    info = git_info(policies)
    assert info.revision == git(repo, "rev-parse", "HEAD")
    assert sorted(os.listdir(marker)) == []


def test_symlinks_out_of_the_directory_are_not_read(tmp_path: Path) -> None:
    """Pinned: a symlinked file or directory pointing out of the policy directory is skipped,
    and git never follows it either (a symlink is stored as its target's name)."""
    repo, policies = make_repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.yaml").write_bytes(b"apiVersion: pdp/v1\n")
    (policies / "link.yaml").symlink_to(outside / "secret.yaml")
    (policies / "linkdir").symlink_to(outside, target_is_directory=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    assert sorted(collect_files(policies)) == ["things.yaml", "things_test.yaml"]
    assert git_info(policies).dirty is False


@pytest.mark.parametrize(
    ("url", "config"),
    [
        ("ssh://example.invalid/x", ("core.sshCommand", "touch {m}/ssh; false")),
        ("{root}/elsewhere", ("remote.origin.uploadpack", "touch {m}/uploadpack; false")),
        ("ext::sh -c touch% {m}/ext", ("protocol.ext.allow", "always")),
        ("git://example.invalid/x", ("core.gitProxy", "{root}/proxy.sh")),
    ],
)
def test_a_partial_clone_fetches_nothing(tmp_path: Path, url: str, config: tuple[str, str]) -> None:
    """A partial clone whose HEAD names a missing commit: git would fetch it from the
    promisor remote, through the transport the repository's config describes."""
    repo, policies = make_repo(tmp_path)
    marker = tmp_path / "ran"
    marker.mkdir()
    proxy = tmp_path / "proxy.sh"
    proxy.write_text(f"#!/bin/sh\ntouch {marker}/proxy\n")
    proxy.chmod(0o755)
    fill = {"m": str(marker), "root": str(tmp_path)}
    git(repo, "config", "core.repositoryformatversion", "1")
    git(repo, "config", "extensions.partialClone", "origin")
    git(repo, "config", "remote.origin.promisor", "true")
    git(repo, "config", "remote.origin.url", url.format(**fill))
    git(repo, "config", "protocol.allow", "always")
    git(repo, "config", config[0], config[1].format(**fill))
    branch = git(repo, "symbolic-ref", "--short", "HEAD")
    (repo / ".git" / "refs" / "heads" / branch).write_text("12" * 20 + "\n")
    assert git_info(policies).revision == ""
    assert sorted(os.listdir(marker)) == []


def test_a_submodule_moved_to_another_commit_is_dirty(tmp_path: Path) -> None:
    """What git reads without entering the submodule (its HEAD against the commit recorded)
    still counts; edits inside its work tree do not (docs/BUNDLES.md)."""
    inner, _ = make_repo(tmp_path / "inner")
    repo, policies = make_repo(tmp_path)
    add = ("-c", "protocol.file.allow=always", "submodule", "add", "-q")
    git(repo, *add, str(inner), "policies/sub")
    git(repo, "commit", "-q", "-m", "sub")
    assert git_info(policies).dirty is False
    sub = repo / "policies" / "sub"
    (sub / "policies" / "things.yaml").write_text("# edited\n")
    assert git_info(policies).dirty is False  # not looked into
    git(sub, "-c", "user.email=a@example.com", "-c", "user.name=a", "commit", "-qam", "moved")
    assert git_info(policies).dirty is True


def test_the_repositorys_status_settings_do_not_hide_an_untracked_policy_file(
    tmp_path: Path,
) -> None:
    """`status.showUntrackedFiles=no` (set in many large repositories) hid a new policy file
    that the bundle then carried under a clean revision."""
    repo, policies = make_repo(tmp_path)
    git(repo, "config", "status.showUntrackedFiles", "no")
    (policies / "more.yaml").write_text("# not committed\n")
    assert git_info(policies).dirty is True

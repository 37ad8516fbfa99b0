"""The git revision a policy directory is at, which a bundle built from it, and a directory
served directly, name. Its own module: a server on a policy directory reads it at start-up
without loading the bundle builder (archives, the validator's build checks).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# git on a network filesystem can hang; a build must fail rather than wait forever.
GIT_TIMEOUT_SECONDS = 30


# A policy directory's repository is read, never obeyed: its own config (.git/config, which
# whoever can write the directory writes) must not make git run a program. These settings
# would while `log` and `status` read it: the fsmonitor hook, gpg for `log.showSignature`,
# the hooks (post-index-change, when status refreshes the index). The filter drivers
# (`.gitattributes` names one, the config gives its command) are found by `_filter_drivers`
# and emptied; a promisor remote's transport is shut (`_env`). Submodules are not looked
# into (their configs are theirs, filters included): a submodule at another commit than the
# one recorded is dirty, edits inside its work tree are not seen.
_SAFE_CONFIG = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", os.devnull),
    ("log.showSignature", "false"),
    ("diff.external", ""),
)
_FILTER_KEY = re.compile(r"^filter\.(?P<name>.+)\.[^.]+$", re.DOTALL)


def _env(config: list[tuple[str, str]]) -> dict[str, str]:
    """The environment of a git command: `config` given as GIT_CONFIG_KEY_n/VALUE_n (a key's
    subsection may hold any byte, `-c key=value` could not carry an `=` in it), and no
    optional locks: reading a repository writes nothing into it (no index refresh)."""
    env = dict(os.environ)
    try:
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    for key, value in config:
        env[f"GIT_CONFIG_KEY_{count}"] = key
        env[f"GIT_CONFIG_VALUE_{count}"] = value
        count += 1
    env["GIT_CONFIG_COUNT"] = str(count)
    env["GIT_OPTIONAL_LOCKS"] = "0"
    # No transport at all (a list naming none): a partial clone fetches a missing object from
    # its promisor remote, whose URL and commands (`core.sshCommand`, `remote.*.uploadpack`,
    # `core.gitProxy`, `ext::`) are the repository's; the variable overrides its config.
    env["GIT_ALLOW_PROTOCOL"] = "pdp-none"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _start(
    directory: Path, *args: str, config: list[tuple[str, str]] | None = None
) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(
            ["git", "-C", str(directory), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=_env([*_SAFE_CONFIG, *(config or [])]),
        )
    except OSError:
        return None


def _filter_drivers(directory: Path, deadline: float) -> list[tuple[str, str]] | None:
    """Settings that empty every filter driver the repository's config defines (an empty
    command is no filter to git; `required` off, or status would fail on it); None if git
    cannot list them (then status is not run: the tree is called dirty)."""
    listing = _start(directory, "config", "--null", "--get-regexp", r"^filter\.")
    listed = _output(listing, deadline, no_match=True)
    if listed is None:
        return None
    names = {
        m["name"]
        for entry in listed.split("\0")
        if (m := _FILTER_KEY.match(entry.partition("\n")[0]))
    }
    return [
        (f"filter.{name}.{var}", value)
        for name in sorted(names)
        for var, value in (("clean", ""), ("smudge", ""), ("process", ""), ("required", "false"))
    ]


def _output(
    proc: subprocess.Popen[str] | None, deadline: float, no_match: bool = False
) -> str | None:
    """`proc`'s output, None if it failed; `no_match`: its exit code 1 (`git config` found
    nothing) is an empty output."""
    if proc is None:
        return None
    try:
        out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    if proc.returncode == 1 and no_match:
        return ""
    return out.strip() if proc.returncode == 0 else None


@dataclass(frozen=True, slots=True)
class GitInfo:
    revision: str  # "" outside a git work tree
    dirty: bool
    commit_time: int | None


class PendingGitInfo:
    """The git commands `git_info` runs, started at once: a server on a policy directory
    starts them before it loads the policies and reads them after, so the ~20-60 ms git takes
    here overlap the loading instead of following it (bench/RESULTS.md, session 23). One `log`
    gives the revision and its time; `status` waits for `config` to list the filter drivers it
    must not run (a thread, side by side with `log`). Each start costs the server a fork (~1-2
    ms of its start-up CPU): the third, `config`, is the price of not running the repository's
    filters."""

    def __init__(self, directory: Path) -> None:
        self._deadline = time.monotonic() + GIT_TIMEOUT_SECONDS
        self._log = _start(directory, "log", "-1", "--format=%H %ct", "HEAD")
        self._status: str | None = None
        # status waits for the filter drivers' list: both in a thread, which the loading overlaps
        self._thread = threading.Thread(target=self._run_status, args=(directory,), daemon=True)
        self._thread.start()

    def _run_status(self, directory: Path) -> None:
        drivers = _filter_drivers(directory, self._deadline)
        if drivers is None:
            return
        # Options, not the repository's `status.*` settings: `status.showUntrackedFiles=no`
        # hid a new policy file that the bundle carried.
        options = ("--porcelain", "--untracked-files=normal", "--ignore-submodules=dirty")
        args = ("status", *options, "--", ".")
        self._status = _output(_start(directory, *args, config=drivers), self._deadline)

    def result(self) -> GitInfo:
        head = _output(self._log, self._deadline)
        self._thread.join()
        status = self._status
        revision, _, commit_time = (head or "").partition(" ")
        if not revision:
            return GitInfo("", False, None)
        return GitInfo(
            revision=revision,
            # If git cannot tell, say dirty: claiming a clean tree we did not check would mislead.
            dirty=status is None or bool(status),
            commit_time=int(commit_time) if commit_time and commit_time.isdigit() else None,
        )


def git_info(directory: Path) -> GitInfo:
    return PendingGitInfo(directory).result()

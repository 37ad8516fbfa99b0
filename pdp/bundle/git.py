"""The git revision a policy directory is at, which a bundle built from it, and a directory
served directly, name. Its own module: a server on a policy directory reads it at start-up
without loading the bundle builder (archives, the validator's build checks).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# git on a network filesystem can hang; a build must fail rather than wait forever.
GIT_TIMEOUT_SECONDS = 30


def _start(directory: Path, *args: str) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(
            ["git", "-C", str(directory), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        return None


def _output(proc: subprocess.Popen[str] | None, deadline: float) -> str | None:
    if proc is None:
        return None
    try:
        out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    return out.strip() if proc.returncode == 0 else None


@dataclass(frozen=True, slots=True)
class GitInfo:
    revision: str  # "" outside a git work tree
    dirty: bool
    commit_time: int | None


class PendingGitInfo:
    """The two git commands `git_info` runs, started at once and side by side: a server on
    a policy directory starts them before it loads the policies and reads them after, so the
    ~20-60 ms git takes here (three processes in a row) overlap the loading instead of
    following it (bench/RESULTS.md, session 23). Two, not three: each start costs the server
    a fork (~1-2 ms of its start-up CPU), and one `log` gives the revision and its time."""

    def __init__(self, directory: Path) -> None:
        self._deadline = time.monotonic() + GIT_TIMEOUT_SECONDS
        self._procs = [
            _start(directory, "log", "-1", "--format=%H %ct", "HEAD"),
            _start(directory, "status", "--porcelain", "--", "."),
        ]

    def result(self) -> GitInfo:
        head, status = (_output(p, self._deadline) for p in self._procs)
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

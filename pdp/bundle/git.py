"""The git revision a policy directory is at, which a bundle built from it, and a directory
served directly, name. Its own module: a server on a policy directory reads it at start-up
without loading the bundle builder (archives, the validator's build checks).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# git on a network filesystem can hang; a build must fail rather than wait forever.
GIT_TIMEOUT_SECONDS = 30


def _git(directory: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@dataclass(frozen=True, slots=True)
class GitInfo:
    revision: str  # "" outside a git work tree
    dirty: bool
    commit_time: int | None


def git_info(directory: Path) -> GitInfo:
    revision = _git(directory, "rev-parse", "HEAD")
    if not revision:
        return GitInfo("", False, None)
    status = _git(directory, "status", "--porcelain", "--", ".")
    commit_time = _git(directory, "log", "-1", "--format=%ct", "HEAD")
    return GitInfo(
        revision=revision,
        # If git cannot tell, say dirty: claiming a clean tree we did not check would mislead.
        dirty=status is None or bool(status),
        commit_time=int(commit_time) if commit_time and commit_time.isdigit() else None,
    )

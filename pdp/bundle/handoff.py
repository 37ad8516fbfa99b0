"""One bundle for all workers of `pdp serve --workers N`: the supervisor polls, workers follow.

The workers used to poll the bundle source each on its own. A source that answered one worker
and hung (or failed, or offered another revision) for another left them serving different
bundles, so the same request got different decisions depending on the worker its connection
was dealt to, and the supervisor stayed not ready until the hanging download ended. Users of
OPA or Cerbos expect one server to serve one bundle.

So the supervisor alone polls the source, with the reloader and every check a lone server
runs (signature, `--bundle-name`, `--bundle-min-version`, the rollback floor, the bundle's
tests), and persists the cache. A bundle that passes is written to a private directory (0700,
removed when the supervisor exits) before the supervisor counts it active; the supervisor then
pokes every worker (`sync` on its pipe, pdp.cli.ready). Each worker reads that one file with
its own reloader and the same checks again before it swaps it in: what a process serves is
verified by that process, and a file changed behind the supervisor's back is refused there.
The other option, workers polling and adopting only what a sibling verified, leaves N
downloads per poll and a race over who publishes; here there is one download and one writer.

`status.json` beside the bundle carries the supervisor's view of the source (its last
attempt, error and note, say `serving cached bundle; ...`), which a worker shows as its own
status (ServerInfo, `/readyz`) while it serves the bundle that view is about.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from pdp.engine import EngineHolder
from pdp.engine.holder import Activation

from .sources import Fetched, FileSource

log = logging.getLogger("pdp.bundle")

BUNDLE_FILE = "active.pdpb"
STATUS_FILE = "status.json"
PREFIX = "pdp-bundles-"
# `PID STARTTIME` of the supervisor that owns the directory: a supervisor killed (SIGKILL, the
# OOM killer) leaves its directory behind; the next one to start removes it.
OWNER_FILE = "supervisor.pid"
# A directory without an owner file is a supervisor's between mkdtemp and writing it, or one
# from before owner files: left alone until it is this old.
_UNOWNED_GRACE_S = 600.0


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat, field 22), which
    tells a live owner from a later process given the same pid; "" when there is none."""
    try:
        line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return line.rsplit(")", 1)[-1].split()[19]  # fields after `(comm)` start at field 3


def make_handoff_dir() -> Path:
    """A fresh private directory (mode 0700: mkdtemp) for one supervisor's bundles, after
    removing those of supervisors that died without removing theirs."""
    remove_stale_handoff_dirs()
    directory = Path(tempfile.mkdtemp(prefix=PREFIX))
    pid = os.getpid()
    _replace(directory / OWNER_FILE, f"{pid} {_start_time(pid)}\n".encode())
    return directory


def _owner_alive(directory: Path) -> bool:
    try:
        pid_text, start = (directory / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            return time.time() - directory.stat().st_mtime < _UNOWNED_GRACE_S
        return False
    except (OSError, ValueError):
        return False  # a garbled owner file: no supervisor wrote it whole
    return pid > 0 and _start_time(pid) == start


def remove_stale_handoff_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the `pdp-bundles-*` directories (in `parent`, the temporary directory by default)
    that this user owns and whose supervisor is gone; returns them."""
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    uid = os.getuid()
    for directory in parent.glob(f"{PREFIX}*"):
        try:
            st = directory.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or _owner_alive(directory):
            continue
        remove_handoff_dir(directory)
        log.info("removed %s, left by a supervisor that is gone", directory)
        removed.append(directory)
    return removed


def remove_handoff_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _replace(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all (a reader never sees half a file). No fsync: the file
    is private and lives as long as the supervisor; no mkdir: a directory removed at exit is
    not written again by a poll that finishes late."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _record(sha: str, status: Activation) -> dict[str, Any]:
    return {
        "sha256": sha,
        "last_attempt_at": status.last_attempt_at,
        "last_error": status.last_error,
        "note": status.note,
    }


class Publisher:
    """The supervisor's side: the active archive and the status, written for the workers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._last: dict[str, Any] | None = None

    def bundle(self, data: bytes) -> None:
        """Write the archive the workers are to serve (raises OSError: the bundle is refused)."""
        _replace(self.directory / BUNDLE_FILE, data)

    def status(self, sha: str, status: Activation) -> bool:
        """Write the status when it changed; True when it did (the workers are to be poked)."""
        record = _record(sha, status)
        if record == self._last:
            return False
        try:
            _replace(self.directory / STATUS_FILE, json.dumps(record).encode())
        except OSError as exc:
            log.warning("cannot hand the bundle status to the workers: %s", exc)
            return False
        self._last = record
        return True


class HandoffSource(FileSource):
    """A worker's only bundle source: the supervisor's active archive. No file yet is no news
    (the supervisor has nothing active yet, and says why in the status), not a failure."""

    def fetch(self) -> Fetched | None:
        if not self.path.exists():  # once written, the file is only ever replaced
            return None
        return super().fetch()

    def describe(self) -> str:
        return "the supervisor"


def adopt_status(directory: Path, holder: EngineHolder, active_sha: str) -> None:
    """Show the supervisor's status as the worker's own, when the worker serves the bundle it
    is about (a worker that refused the supervisor's bundle keeps its own reason)."""
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((directory / STATUS_FILE).read_text())
        if record.get("sha256") == active_sha:
            holder.mirror(
                Activation(
                    activated_at=None,  # unused by mirror: the worker's own swap time stays
                    last_attempt_at=record.get("last_attempt_at"),
                    last_error=str(record.get("last_error", "")),
                    note=str(record.get("note", "")),
                )
            )

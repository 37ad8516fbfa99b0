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

A worker re-verifies what it reads, but a file swapped on disk for another bundle that passes
those checks (another validly signed one: an older release, a rollback) would be served by
every worker while the supervisor believed its own bundle served. So each hand-off is
numbered (its generation, sent with `sync`), and after every read a worker reports the
generation it had been told and the archive digest it serves (pdp.cli.ready): a worker that
read the file after generation G was written yet serves another digest than G's serves
something the supervisor never handed off. The supervisor then holds readiness and writes its
bundle again, once.

The supervisor compiles each bundle to verify it (its tests run on the engine), but serves no
decision: `Verdicts` keeps the status of what it judged, never the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pdp.engine import Engine, EngineHolder
from pdp.engine.compiled import PolicySet
from pdp.engine.holder import Activation
from pdp.model.decision import BundleInfo

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


class Handed(NamedTuple):
    """One hand-off: its number (1, 2, ...; 0: none yet) and the archive's sha256."""

    generation: int
    sha: str


class Publisher:
    """The supervisor's side: the active archive and the status, written for the workers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._last: dict[str, Any] | None = None
        self._lock = threading.Lock()  # the poller and the supervisor's loop both write
        self._data = b""
        self._rewritten = ""  # the sha256 last written again after a worker diverged
        # What the workers are to serve, replaced whole (one attribute: atomic to readers).
        self.handed = Handed(0, "")
        # The archive being written: a worker may read it before `handed` names it.
        self.pending = ""

    def bundle(self, data: bytes) -> None:
        """Write the archive the workers are to serve (raises OSError: the bundle is refused)."""
        with self._lock:
            self._write(data, hashlib.sha256(data).hexdigest())

    def _write(self, data: bytes, sha: str) -> None:
        self.pending = sha
        try:
            _replace(self.directory / BUNDLE_FILE, data)
            self._data = data
            self.handed = Handed(self.handed.generation + 1, sha)
        finally:
            self.pending = ""

    def rewrite(self) -> bool:
        """Write the handed archive again (a worker serves another: the file was changed behind
        this supervisor's back), once per archive; True when it was written."""
        with self._lock:
            sha = self.handed.sha
            if not self._data or sha == self._rewritten:
                return False
            self._rewritten = sha
            try:
                self._write(self._data, sha)
            except OSError as exc:
                log.error("cannot hand the bundle to the workers again: %s", exc)
                return False
            return True

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
    (the supervisor has nothing active yet, and says why in the status), not a failure.

    `generation()` is the last hand-off the supervisor announced; `fetched_generation` is its
    value when the last read began (the file read is that hand-off's or a later one)."""

    def __init__(self, path: str | Path, generation: Callable[[], int] = lambda: 0) -> None:
        super().__init__(path)
        self._generation = generation
        self.fetched_generation = 0

    def fetch(self) -> Fetched | None:
        self.fetched_generation = self._generation()
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


_NO_RULES = PolicySet(kinds={}, rules=())


def release_memory() -> None:
    """Give back to the system what a judgement left: the compile's objects are garbage once
    it returns, but CPython's allocator and glibc's keep their pages (measured in
    bench/RESULTS.md)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)  # glibc: return free heap pages


class Verdicts(EngineHolder):
    """The supervisor's holder: the status and the name of the last bundle it verified, never
    its engine (the supervisor decides nothing; an engine kept here is one more policy set in
    memory beside the N the workers hold)."""

    def swap(self, engine: Engine) -> None:
        super().swap(Engine(_NO_RULES, engine.bundle))


def directory_archive(files: Mapping[str, bytes], info: BundleInfo) -> bytes:
    """An unsigned archive of a policy directory's files as the supervisor judged them
    (`pdp serve --watch --workers N`), named as the directory is served: its name, 0.0.0, its
    git revision (`-dirty`). Raises BundleError when the name is no bundle name."""
    from pdp import __version__

    from .archive import pack
    from .manifest import FileEntry, Manifest, sha256_hex, validate_name

    validate_name(info.name)
    manifest = Manifest(
        name=info.name,
        version=info.version,
        revision=info.revision.removesuffix("-dirty"),
        dirty=info.revision.endswith("-dirty"),
        build_time="1970-01-01T00:00:00Z",
        builder=f"pdp {__version__}",
        files={path: FileEntry(sha256_hex(data), len(data)) for path, data in files.items()},
    )
    return pack(manifest.canonical_bytes(), files, None, 0)

"""Readiness of `pdp serve --workers N`: SERVING only once every worker serves one bundle.

The kernel deals connections to the workers (SO_REUSEPORT), so any worker may answer a health
check and any may take the next call: a worker alone cannot say the service is ready. Each
worker has two pipes to its supervisor. On every bundle it activates it writes
`active KEY` (KEY: the bundle's name, version, revision and digest); its health says
NOT_SERVING until the supervisor writes `ready`, which the supervisor sends to every worker
once all of them have reported the same KEY. From then on a worker is SERVING while it has a
bundle: a later swap reaches the workers one by one, and for that moment workers may answer
from different revisions, each decision naming its own; health does not flap for it. A worker
restarted after a crash is sent `ready` once it has a bundle.

With `--bundle`, the supervisor alone polls the source and writes `sync` to every worker when
it has a new bundle or status for them (pdp.bundle.handoff): the workers serve the one
revision the supervisor verified, and a source that hangs for one request holds nobody back.
A worker that refuses that bundle (it checks it again) reports `refused SHA`; the supervisor
logs it and writes `hold` to every worker (NOT_SERVING) until every worker serves its bundle,
then `ready` again. A worker still swapping is not a refusal: health does not flap for it.

Each hand-off is numbered: `sync G`. After every read of the hand-off file a worker reports
`polled G SHA`, G being the last number it was told when the read began and SHA the archive
it serves then. With `--bundle` (or `--watch`) the service is ready only once every worker
has reported the current G with the supervisor's SHA. A worker that reports the current G and
another SHA read the file after the supervisor wrote it and serves something else: the file
was changed behind the supervisor's back (another validly signed bundle, say an older one).
The supervisor logs it, holds every worker, and writes its bundle again (once per bundle).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pdp.bundle.handoff import Publisher
    from pdp.engine import Engine, EngineHolder
    from pdp.server import PdpServer

log = logging.getLogger("pdp.serve")


def bundle_key(engine: Engine) -> str:
    b = engine.bundle
    return f"{b.name}@{b.version} revision {b.revision or '-'} digest {b.digest or '-'}"


class _Worker:
    __slots__ = ("activated", "ctl", "key", "pending", "pid", "polled", "refused", "report")

    def __init__(self, report: int, ctl: int) -> None:
        self.report = report  # we read its reports
        self.ctl = ctl  # we write `ready`
        self.key = ""
        self.pending = b""
        self.activated = False  # it has reported a bundle at least once
        self.refused = ""  # the archive sha256 of the last bundle it refused
        self.polled = (0, "")  # its last `polled G SHA`
        self.pid = 0


class Coordinator:
    """The supervisor's side: one slot per worker, pipes renewed when a worker restarts."""

    def __init__(self, slots: int) -> None:
        self._workers: dict[int, _Worker] = {}
        self._slots = slots
        self.ready = False
        # The supervisor's hand-offs when it polls or watches for the workers
        # (pdp.bundle.handoff): every worker must serve the one handed, and one that refused
        # it, or serves another, holds readiness back.
        self._publisher: Publisher | None = None
        self._told: set[tuple[int, str]] = set()  # (pid, sha) refusals already logged
        self._diverged: set[tuple[int, int]] = set()  # (pid, generation) already logged

    def pipes_for(self, slot: int) -> tuple[str, tuple[int, int]]:
        """The worker's `--ready-fds` value and the fds to pass it; call `spawned` after."""
        self.forget(slot)
        report_r, report_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        # Never blocked by a worker that stopped reading: each message is under PIPE_BUF, so
        # a write is whole or refused, and a refused `sync` leaves unread ones behind it.
        os.set_blocking(ctl_w, False)
        self._workers[slot] = _Worker(report_r, ctl_w)
        return f"{report_w},{ctl_r}", (report_w, ctl_r)

    def supervisor_fds(self) -> list[int]:
        """This side's ends of every worker's pipes (a forked worker closes them)."""
        return [fd for w in self._workers.values() for fd in (w.report, w.ctl) if fd >= 0]

    def spawned(self, fds: tuple[int, int], slot: int | None = None, pid: int = 0) -> None:
        for fd in fds:  # the worker's ends: its copies are its own now
            os.close(fd)
        if slot is not None and slot in self._workers:
            worker = self._workers[slot]
            worker.pid = pid
            generation = self._generation()
            if generation:  # a replacement: the number of the bundle already handed off
                self._send(worker, f"sync {generation}\n".encode())

    def forget(self, slot: int) -> None:
        old = self._workers.pop(slot, None)
        if old is not None:
            for fd in (old.report, old.ctl):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def wait(self, timeout: float) -> None:
        """Read what workers reported within `timeout`; send `ready` when it is due."""
        by_fd = {w.report: w for w in self._workers.values() if w.report >= 0}
        try:
            readable, _, _ = select.select(list(by_fd), [], [], timeout)
        except (OSError, ValueError):
            return
        for fd in readable:
            worker = by_fd[fd]
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:  # the worker exited; its slot is renewed when it restarts
                worker.key = ""
                os.close(fd)
                worker.report = -1
                continue
            *lines, worker.pending = (worker.pending + chunk).split(b"\n")
            for line in lines:
                if line.startswith(b"active "):
                    worker.key = line[7:].decode(errors="replace")
                    worker.activated = True
                    worker.refused = ""  # its refusals are behind it (the reloader forgets them)
                    # Following hand-offs, a worker is told `ready` once it serves the one
                    # handed (`polled`), not on any activation.
                    if self.ready and self._publisher is None:
                        self._send_ready(worker)
                elif line.startswith(b"refused "):
                    worker.refused = line[8:].decode(errors="replace").strip()
                elif line.startswith(b"polled "):
                    generation, _, sha = line[7:].decode(errors="replace").partition(" ")
                    with contextlib.suppress(ValueError):
                        worker.polled = (int(generation), sha.strip())
                    if self.ready and self._agrees(worker):
                        self._send_ready(worker)
        self._judge()
        self._maybe_ready()

    def follow(self, publisher: Publisher) -> None:
        """Judge the workers against `publisher`'s hand-offs (pdp.bundle.handoff): ready only
        once every worker serves the bundle handed off."""
        self._publisher = publisher

    def check(self) -> None:
        """Judge again (the supervisor handed off another bundle)."""
        self._judge()
        self._maybe_ready()

    def _generation(self) -> int:
        return self._publisher.handed.generation if self._publisher is not None else 0

    def _expected(self) -> str:
        return self._publisher.handed.sha if self._publisher is not None else ""

    def _agrees(self, worker: _Worker) -> bool:
        """Whether the worker serves the bundle handed off, read after it was written."""
        assert self._publisher is not None
        handed = self._publisher.handed
        return bool(handed.generation) and worker.polled == (handed.generation, handed.sha)

    def _diverging(self) -> list[_Worker]:
        """The workers that read the hand-off file after the current bundle was written to it
        and serve another one (without having refused it): the file they read was not the
        supervisor's."""
        if self._publisher is None:
            return []
        # `pending` before `handed`: the writer names the file it writes in `pending`, then
        # in `handed`, then clears `pending`; read in this order a worker that read the file
        # being written is never taken for one that serves something else.
        pending = self._publisher.pending
        generation, sha = self._publisher.handed
        return [
            w
            for w in self._workers.values()
            if generation
            and w.polled[0] == generation
            and w.polled[1] not in (sha, pending)
            and w.refused != sha
        ]

    def _refusing(self) -> list[_Worker]:
        """The workers that refused the supervisor's bundle. A refused archive is never tried
        again, so the refusal stands until the supervisor has another bundle or the worker is
        replaced: a settled fact, unlike a worker that has not yet swapped (which does not
        make health flap)."""
        expected = self._expected()
        if not expected:
            return []
        return [w for w in self._workers.values() if w.refused == expected]

    def _judge(self) -> None:
        refusing = self._refusing()
        for worker in refusing:
            if (worker.pid, worker.refused) not in self._told:
                self._told.add((worker.pid, worker.refused))
                log.error(
                    "worker %d refused the bundle the supervisor verified (sha256 %s; the "
                    "worker's log says why) and serves %s: not ready until every worker serves "
                    "the supervisor's bundle",
                    worker.pid, worker.refused[:12], worker.key or "nothing",
                )  # fmt: skip
        diverging = self._diverging()
        for worker in diverging:
            generation, sha = worker.polled
            if (worker.pid, generation) not in self._diverged:
                self._diverged.add((worker.pid, generation))
                log.error(
                    "worker %d serves %s (sha256 %s), not the bundle the supervisor handed "
                    "off (sha256 %s): the hand-off file was changed after the supervisor wrote "
                    "it. Every worker is held NOT_SERVING until every worker serves the "
                    "supervisor's bundle; it is written again once",
                    worker.pid, worker.key or "nothing", sha[:12], self._expected()[:12],
                )  # fmt: skip
        if (refusing or diverging) and self.ready:
            self.ready = False
            for worker in self._workers.values():
                self._send(worker, b"hold\n")
        if diverging and self._publisher is not None:
            self._publisher.rewrite()  # the supervisor's loop pokes the workers (`sync G+1`)

    def activated(self, slot: int) -> bool:
        """Whether the worker in `slot` has activated a bundle since it was spawned: one that
        exits before is failing to start (bad policies, a port in use), not crashing."""
        worker = self._workers.get(slot)
        return worker is not None and worker.activated

    def _maybe_ready(self) -> None:
        keys = {w.key for w in self._workers.values()}
        if self.ready or len(self._workers) < self._slots or len(keys) != 1 or "" in keys:
            return
        if self._refusing():
            return
        if self._publisher is not None and not all(map(self._agrees, self._workers.values())):
            return
        self.ready = True
        log.info("all %d workers serve %s: ready", self._slots, keys.pop())
        for worker in self._workers.values():
            self._send_ready(worker)

    def poke_all(self) -> None:
        """Tell every worker to pick up the supervisor's bundle and status (`sync G`)."""
        message = f"sync {self._generation()}\n".encode()
        for worker in self._workers.values():
            if worker.ctl >= 0:
                with contextlib.suppress(OSError):
                    os.write(worker.ctl, message)

    @staticmethod
    def _send_ready(worker: _Worker) -> None:
        Coordinator._send(worker, b"ready\n")

    @staticmethod
    def _send(worker: _Worker, message: bytes) -> None:
        try:
            os.write(worker.ctl, message)
        except BlockingIOError:
            log.warning(
                "worker pipe full: it is not reading; `%s` not sent", message.decode().strip()
            )
        except OSError:
            pass

    def close(self) -> None:
        for slot in list(self._workers):
            self.forget(slot)


class WorkerGate:
    """What the supervisor tells a worker besides `ready`: `sync G` records G (`generation`)
    and calls `on_sync` (set by the policy source once it exists). `refused` and `polled` tell
    the supervisor of a bundle refused and of what the worker serves after a read."""

    def __init__(self, report_fd: int = -1) -> None:
        self.on_sync: Callable[[], None] | None = None
        self.generation = 0  # the last hand-off the supervisor announced
        self._report_fd = report_fd
        self._refused = ""
        self._polled = (0, "")

    def sync(self, generation: int | None = None) -> None:
        if generation is not None:
            self.generation = max(self.generation, generation)
        if self.on_sync is not None:
            self.on_sync()

    def polled(self, generation: int, sha: str) -> None:
        """Report what the worker serves (`sha`, the archive's sha256) after a read of the
        hand-off file begun once hand-off `generation` was announced, when it is news."""
        if (generation, sha) != self._polled and self._report_fd >= 0:
            self._polled = (generation, sha)
            with contextlib.suppress(OSError):
                os.write(self._report_fd, f"polled {generation} {sha or '-'}\n".encode())

    def refused(self, sha: str) -> None:
        """Report `sha`, the archive the worker last refused, when it is news."""
        if not sha:  # an activation since: a later refusal of the same archive is news
            self._refused = ""
        elif sha != self._refused and self._report_fd >= 0:
            self._refused = sha
            with contextlib.suppress(OSError):
                os.write(self._report_fd, f"refused {sha}\n".encode())


def gate_worker(spec: str, server: PdpServer, holder: EngineHolder) -> WorkerGate:
    """The worker's side (`--ready-fds REPORT,CTL`): hold health at NOT_SERVING until the
    supervisor says every worker is ready, and report each bundle activated. Call before the
    policy source starts."""
    report_fd, ctl_fd = (int(x) for x in spec.split(","))
    server.hold_serving()

    def report(engine: Engine) -> None:
        with contextlib.suppress(OSError):
            os.write(report_fd, f"active {bundle_key(engine)}\n".encode())

    holder.on_swap(report)
    gate = WorkerGate(report_fd)
    threading.Thread(
        target=_read_supervisor,
        args=(ctl_fd, server.release_serving, server.hold_serving, gate),
        name="pdp-ready",
        daemon=True,
    ).start()
    return gate


def _read_supervisor(
    fd: int, release: Callable[[], None], hold: Callable[[], None], gate: WorkerGate
) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(fd, 256)
        except OSError:
            return
        if not chunk:  # the supervisor is gone (this worker gets SIGTERM)
            return
        *lines, pending = (pending + chunk).split(b"\n")
        generation = None
        for line in lines:  # in order: `hold` then `ready` is ready
            if line == b"ready":
                release()
            elif line == b"hold":  # a worker refused, or diverged from, the supervisor's bundle
                hold()
            elif line.startswith(b"sync "):
                with contextlib.suppress(ValueError):
                    generation = int(line[5:])
        if generation is not None:
            gate.sync(generation)

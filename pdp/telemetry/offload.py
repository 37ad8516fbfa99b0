"""The decision log and tracing written by a separate process: the server keeps only a queue.

Building a record, its span and its metrics is Python work that holds the GIL the serving
threads need: on one core it cost about a third of a server's throughput however it was
trimmed. Here the server's observer does what the in-process one does on the request path (an
append to a bounded deque, or a counted drop) and a feeder thread turns each observation into
plain bytes and strings (`encode`, supplied by the server, which knows its own wire format:
for a Check, the request and reply bytes it already has) and pipes them in batches to a
writer process. That process runs the ordinary `TelemetryObserver` (same records, masking,
spans, metrics, sinks), on the cores the server is not pinned to. What a Go server gets from
goroutines on other cores, this gets from a process.

Backpressure, not loss, between the two: the writer process does not read while it writes a
batch, the pipe fills, the feeder blocks, the server's deque fills, and only then are
observations dropped, counted on the request path and reported by the writer (metric and
periodic warning). `close()` sends everything queued and waits for the writer to flush.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

from pdp.telemetry.config import DEFAULT_MAX_DELAY_S, TelemetryOptions
from pdp.telemetry.intake import Intake, watch_holder

if TYPE_CHECKING:
    from pdp.engine.engine import Engine
    from pdp.engine.holder import EngineHolder
    from pdp.telemetry.observation import Observation
    from pdp.telemetry.observer import TelemetryObserver

log = logging.getLogger("pdp.telemetry")

# Observations pickled and written at once: one pipe write per batch, not per call.
MAX_BATCH = 512
# How long the feeder sleeps between looks at the queue (a record's extra delay). Each look
# costs the serving threads more than the feeder's own CPU: the feeder waits for the GIL,
# forces a switch, and the RPC threads' hand-offs are disturbed for a while after: at 10
# looks a second a worker's RPC threads spent about 9 µs more CPU per cached call than with
# telemetry off, and trials with other fixed intervals moved that in step with the looks
# (measured by a script since removed: `git show e99493e:bench/server_threads.py`). So the feeder looks as rarely as the queue allows: it
# lets at most POLL_FILL of the queue fill at the rate it last drained, and waits at most
# MAX_POLL_INTERVAL_S (`--decision-log-max-delay`).
MAX_POLL_INTERVAL_S = DEFAULT_MAX_DELAY_S
MIN_POLL_INTERVAL_S = 0.01
POLL_FILL = 0.25
# How long `close()` waits for the writer process to flush and exit.
CLOSE_TIMEOUT_S = 30.0
# How long the server waits for the writer process to open its sinks and exporters.
START_TIMEOUT_S = 60.0
_LENGTH = struct.Struct(">I")
# The name of the server's feeder thread.
FEEDER_THREAD = "pdp-decision-feed"

Encode = Callable[["Observation"], Any]
Decode = Callable[[Any], "Observation"]


class WriterProcessError(OSError):
    """The writer process could not start (its sinks, exporters or endpoint failed)."""


class OffloadObserver(Intake):
    """The server's observer (`on_check`, `on_wire`, `close`, `watch_holder`,
    `record_bundle_failure`) whose records are written by a child process running
    `child_main`."""

    # The decision service hands Checks to `on_wire` as wire items (plain tuples of the call's
    # bytes and details, which cross the pipe as they are); other observations go to
    # `on_check` and are turned into items by `encode` on the feeder thread.
    wire_only = True
    on_wire = Intake.on_check

    def __init__(
        self,
        options: TelemetryOptions,
        *,
        encode: Encode,
        child: list[str],
        cpus: Iterable[int] | None = None,
    ) -> None:
        """`child`: the argv that runs `child_main` with the matching `decode`; `cpus`: the
        cores the writer process may use (None: the server's own)."""
        if options.extra_sinks:
            raise ValueError("extra sinks live in this process: use TelemetryObserver")
        super().__init__(options.queue_size, options.queue_bytes)
        self._encode = encode
        self._longest = options.max_delay_s
        self._close_lock = threading.Lock()
        self._sent_drops = 0
        self._write_lock = threading.Lock()  # feeder and bundle events share the pipe
        self._broken = False
        ready_r, ready_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [*child, str(ready_w)], stdin=subprocess.PIPE, pass_fds=(ready_w,)
            )
        finally:
            os.close(ready_w)
        assert self._proc.stdin is not None
        self._pipe: IO[bytes] = self._proc.stdin
        header = (options, sorted(cpus) if cpus is not None else None, log.getEffectiveLevel())
        try:
            self._send(header)
            answer = _read_ready(ready_r)
        finally:
            os.close(ready_r)
        if answer != "ok":
            self._proc.kill()
            self._proc.wait()
            raise WriterProcessError(answer or "telemetry writer process exited at start")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=FEEDER_THREAD, daemon=True)
        self._thread.start()

    # -- bundle events -------------------------------------------------------------------------

    def watch_holder(self, holder: EngineHolder) -> None:
        watch_holder(holder, self._activated, self.record_bundle_failure)

    def _activated(self, engine: Engine) -> None:
        if not self._closed:  # a swap during shutdown, after the writer was told to close
            self._post(("bundle", getattr(engine, "bundle", None)))

    def record_bundle_failure(self, error: str = "") -> None:
        if not self._closed:
            self._post(("bundle_failed",))

    # -- feeder thread -------------------------------------------------------------------------

    def _run(self) -> None:
        last = time.monotonic()
        while True:
            stopping = self._stop.is_set()  # read before draining: nothing queued is left behind
            drained = self._drain()
            if stopping:
                return
            now = time.monotonic()
            interval = poll_interval(drained, now - last, self.capacity, self._longest)
            last = now
            self._stop.wait(interval)

    def _drain(self) -> int:
        """Send everything queued (and the drop count); how many observations were taken."""
        taken = 0
        while self._queue or self._dropped != self._sent_drops:
            batch = []
            while self._queue and len(batch) < MAX_BATCH:
                obs = self._popleft()
                try:
                    batch.append(obs if type(obs) is tuple else self._encode(obs))
                except Exception:
                    log.exception("observation could not be encoded for the writer process")
            taken += len(batch)
            drops = self._dropped
            delta, self._sent_drops = drops - self._sent_drops, drops
            if not self._post(("batch", delta, batch)):
                self.add_dropped(len(batch))  # the writer is gone: these are lost, and counted
                return taken
        return taken

    def _post(self, message: Any) -> bool:
        with self._write_lock:
            if self._broken:
                return False
            try:
                self._send(message)
            except (OSError, ValueError):
                self._broken = True
                log.error(
                    "telemetry writer process is gone (exit code %s): decision records and "
                    "spans are no longer written",
                    self._proc.poll(),
                )
                return False
        return True

    def _send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=5)
        self._pipe.write(_LENGTH.pack(len(data)) + data)
        self._pipe.flush()

    # -- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop intake, send everything queued, and wait for the writer process to flush."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        end = time.monotonic() + CLOSE_TIMEOUT_S  # one bound for the whole flush
        self._stop.set()
        self._thread.join(CLOSE_TIMEOUT_S)
        self._drain()  # what a request thread appended after the feeder's last look
        self._post(("close",))
        with contextlib.suppress(OSError):
            self._pipe.close()
        try:
            code = self._proc.wait(max(end - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            log.warning("telemetry writer did not finish within %.0fs", CLOSE_TIMEOUT_S)
            self._proc.kill()
            self._proc.wait()
            return
        if code:
            log.warning("telemetry writer process exited with %d", code)


def poll_interval(
    drained: int, elapsed_s: float, capacity: int, longest: float = MAX_POLL_INTERVAL_S
) -> float:
    """How long the feeder may sleep after taking `drained` observations that arrived over
    `elapsed_s`: the time the same rate takes to fill `POLL_FILL` of a queue of `capacity`,
    within [MIN_POLL_INTERVAL_S, `longest`]."""
    if drained <= 0 or elapsed_s <= 0:
        return longest
    fill_s = POLL_FILL * capacity * elapsed_s / drained
    return min(longest, max(MIN_POLL_INTERVAL_S, fill_s))


def _read_ready(fd: int) -> str:
    """The child's first words on the ready pipe: "ok", or why it could not start."""
    chunks = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            return f"telemetry writer process did not start within {START_TIMEOUT_S:.0f}s"
        chunk = os.read(fd, 4096)
        if not chunk:  # the child closed it: started, or died
            break
        chunks.append(chunk)
        if b"\n" in chunk:
            break
    return b"".join(chunks).decode(errors="replace").strip()


# -- the writer process --------------------------------------------------------------------------


def child_main(decode: Decode, ready_fd: int, stdin: IO[bytes] | None = None) -> int:
    """Read the header and then batches from stdin; write them with a `TelemetryObserver`."""
    from pdp.telemetry.setup import build_observer

    # The server ends this process by closing the pipe, after its own graceful stop: a Ctrl-C
    # or SIGTERM sent to the whole process group must not cut the flush short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stream = stdin if stdin is not None else sys.stdin.buffer
    ready = os.fdopen(ready_fd, "w")
    header = _receive(stream)
    if header is None:
        return 1
    options, cpus, level = header
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    )
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(cpus))
    try:
        observer = build_observer(replace(options, extra_sinks=()), writer_thread=False)
    except (OSError, ValueError) as exc:
        ready.write(f"{exc}\n")
        ready.close()
        return 1
    ready.write("ok\n")
    ready.close()
    try:
        _serve(observer, decode, stream)
    finally:
        observer.close()
    return 0


def _serve(observer: TelemetryObserver, decode: Decode, stream: IO[bytes]) -> None:
    """Write each batch as it arrives, on this thread: while it writes it does not read, so
    the pipe fills and the server's queue takes the overflow (and counts it)."""
    while True:
        message = _receive(stream)
        if message is None or message[0] == "close":
            return
        kind = message[0]
        if kind == "batch":
            _, drops, batch = message
            if drops:
                observer.add_dropped(drops)
            observations = []
            for item in batch:
                try:
                    observations.append(decode(item))
                except Exception:
                    log.exception("observation from the server could not be decoded")
            observer.write_now(observations)
        elif kind == "bundle":
            observer.record_bundle_activated(message[1])
        elif kind == "bundle_failed":
            observer.record_bundle_failure()


def _receive(stream: IO[bytes]) -> Any:
    head = _read_exactly(stream, _LENGTH.size)
    if head is None:
        return None
    body = _read_exactly(stream, _LENGTH.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


__all__ = ["OffloadObserver", "WriterProcessError", "child_main"]

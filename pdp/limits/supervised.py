"""`--limits-store memory` with several workers: one set of buckets, held by the supervisor.

Workers counting each in its own memory would admit N times every limit. Instead the
supervisor of `pdp serve --workers N` holds the only `MemoryCounters` and answers each
worker's takes over a socket pair (one per worker, inherited as a file descriptor). A take is
one round trip, all-or-nothing as in one process; only allowed calls a `LimitPolicy` covers
pay it. The supervisor's clock decides (workers' clocks need not agree to the microsecond).
A worker that cannot reach its supervisor (gone, stuck, garbled answer) gets
`CounterStoreError`: the limit's `onStoreError` decides, as for an unreachable Redis.

Wire format, one JSON array per line. Request: `[seq, [[key, capacity, rate, cost], ...]]`;
answer: `[seq, granted, [remaining, ...], refused, retry_after]`. A give-back (the quota of a
call that ended in an error) is `[seq, [[key, capacity, rate, cost], ...], "give_back"]`,
answered `[seq, true, [], -1, 0]`. `seq` lets a worker skip an answer that arrived after it
gave up waiting for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Sequence

from pdp.engine.counters import CounterStoreError, MemoryCounters, Outcome, Take

log = logging.getLogger("pdp.limits")

# How long a worker waits for the supervisor's answer before the take counts as a store error.
TAKE_TIMEOUT_S = 2.0
# The longest request line the supervisor reads; keys are bounded by --max-string-length and
# a call's limits are few, so anything longer is a broken worker.
MAX_LINE_BYTES = 4 * 1024 * 1024


class CounterServer:
    """The supervisor's side: one `MemoryCounters`, a thread per worker connection."""

    def __init__(self, counters: MemoryCounters | None = None) -> None:
        self.counters = counters or MemoryCounters()
        self._held: list[socket.socket] | None = None

    def hold(self) -> None:
        """Serve channels connected from now on only at `release`: the supervisor forks its
        first workers while it has no thread but its main one (pdp.cli.worker has why). A
        worker's take meanwhile waits in the socket for its answer."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for sock in held:
            self._start(sock)

    def connect(self) -> socket.socket:
        """A new worker's channel: serve one end here, return the other (pass its fileno to
        the worker, then close it in this process)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if self._held is not None:
            self._held.append(ours)
        else:
            self._start(ours)
        return theirs

    def _start(self, sock: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(sock,), name="pdp-counters", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            pending = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return  # the worker exited
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    sock.sendall(self._answer(line))
                if len(pending) > MAX_LINE_BYTES:
                    log.error("rate-limit counters: a worker sent an oversized request")
                    return

    def _answer(self, line: bytes) -> bytes:
        try:
            seq, raw, *verb = json.loads(line)
        except (ValueError, TypeError):
            return b'[null, "bad request"]\n'
        try:
            takes = [Take(str(k), float(c), float(r), float(n)) for k, c, r, n in raw]
            if not all(math.isfinite(x) for t in takes for x in (t.capacity, t.rate, t.cost)):
                raise ValueError("not finite")
        except (ValueError, TypeError):
            return json.dumps([seq, "bad request"]).encode() + b"\n"
        if verb == ["give_back"]:
            self.counters.give_back(takes, time.time())
            return json.dumps([seq, True, [], -1, 0]).encode() + b"\n"
        if verb:
            return json.dumps([seq, "bad request"]).encode() + b"\n"
        out = self.counters.take(takes, time.time())
        reply = [seq, out.granted, list(out.remaining), out.refused, out.retry_after]
        return json.dumps(reply).encode() + b"\n"


class SupervisedCounters:
    """The worker's side: the `Counters` protocol over the channel the supervisor passed."""

    def __init__(self, fd: int, timeout: float = TAKE_TIMEOUT_S) -> None:
        self._sock = socket.socket(fileno=fd)
        self._sock.settimeout(timeout)
        self._lock = threading.Lock()
        self._seq = 0
        self._pending = b""

    def take(self, takes: Sequence[Take], now: float) -> Outcome:
        reply = self._ask(takes)
        try:
            _seq, granted, remaining, refused, retry_after = reply
            outcome = Outcome(bool(granted), tuple(float(x) for x in remaining), int(refused),
                              float(retry_after))  # fmt: skip
        except (ValueError, TypeError) as exc:
            raise CounterStoreError(f"supervisor counters: {reply[1:]!r}") from exc
        if len(outcome.remaining) != len(takes):
            raise CounterStoreError("supervisor counters: answered the wrong number of buckets")
        return outcome

    def give_back(self, takes: Sequence[Take], now: float) -> None:
        reply = self._ask(takes, "give_back")
        if len(reply) < 2 or reply[1] is not True:
            raise CounterStoreError(f"supervisor counters: {reply[1:]!r}")

    def _ask(self, takes: Sequence[Take], *verb: str) -> list:
        raw = [[t.key, t.capacity, t.rate, t.cost] for t in takes]
        with self._lock:
            self._seq += 1
            seq = self._seq
            try:
                self._sock.sendall(json.dumps([seq, raw, *verb]).encode() + b"\n")
                while True:
                    reply = self._read_line()
                    if reply[0] == seq:
                        break
            except (OSError, ValueError, TypeError, IndexError) as exc:
                raise CounterStoreError(
                    f"supervisor counters: {exc or type(exc).__name__}"
                ) from exc
        return reply

    def _read_line(self) -> list:
        while b"\n" not in self._pending:
            chunk = self._sock.recv(65536)  # socket.timeout is an OSError
            if not chunk:
                raise ConnectionError("the supervisor closed the channel")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        reply = json.loads(line)
        if not isinstance(reply, list) or not reply:
            raise ValueError("not an answer")
        return reply

    def close(self) -> None:
        self._sock.close()

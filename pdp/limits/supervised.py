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
answered `[seq, true, [], -1, 0]`. A request whose key is not a string or whose numbers are
out of range (`pdp.engine.counters.take_problem`: a negative cost, a rate of 0, NaN) is
answered `[seq, "bad request: ..."]`, logged, and takes or gives back nothing. `seq` lets a worker skip an answer that arrived after it
gave up waiting for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence

from pdp.engine.counters import CounterStoreError, MemoryCounters, Outcome, Take, take_problem
from pdp.ratelog import RateLimitedLog

log = logging.getLogger("pdp.limits")
# A refused request is a worker's bug: one line per interval, however often it repeats.
_REFUSED_LOG = RateLimitedLog(log, interval=10.0)

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
        giving_back = verb == ["give_back"]
        if verb and not giving_back:
            return json.dumps([seq, "bad request"]).encode() + b"\n"
        takes, why = _parse_takes(raw, giving_back)
        if why:
            # A worker sends what its engine took: anything else is a bug there (or a worker
            # not to be trusted); refused whole, nothing taken or given back.
            _REFUSED_LOG.log(
                logging.WARNING,
                "give_back" if giving_back else "take",
                f"rate-limit counters: a worker's {verb[0] if verb else 'take'} refused: {why}",
            )
            return json.dumps([seq, f"bad request: {why}"]).encode() + b"\n"
        if giving_back:
            self.counters.give_back(takes, time.time())
            return json.dumps([seq, True, [], -1, 0]).encode() + b"\n"
        out = self.counters.take(takes, time.time())
        reply = [seq, out.granted, list(out.remaining), out.refused, out.retry_after]
        return json.dumps(reply).encode() + b"\n"


def _parse_takes(raw: object, giving_back: bool) -> tuple[list[Take], str]:
    """A request's takes, or why they are refused: each `[key, capacity, rate, cost]` with a
    JSON string key and JSON numbers in range (`take_problem`), as the engine builds them."""
    if not isinstance(raw, list):
        return [], "the takes are not a list"
    takes = []
    for i, item in enumerate(raw):
        if not isinstance(item, list) or len(item) != 4:
            return [], f"bucket {i + 1} is not [key, capacity, rate, cost]"
        t = Take(*item)
        why = take_problem(t, given_back=giving_back)
        if why:
            return [], f"bucket {i + 1} of {len(raw)}: {why}"
        takes.append(t)
    return takes, ""


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

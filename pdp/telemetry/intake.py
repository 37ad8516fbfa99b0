"""The request-path half of an observer: a bounded queue that never blocks a decision."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pdp.telemetry.observation import Observation


# How long the thread that drains the queue (the writer thread, or the feeder of the writer
# process) sleeps between looks at it: a record's extra delay. Each look costs the serving
# threads more than the drainer's own CPU: it waits for the GIL, forces a switch, and the RPC
# threads' hand-offs are disturbed for a while after: at 10 looks a second a worker's RPC
# threads spent about 9 µs more CPU per cached call than with telemetry off, and trials with
# other fixed intervals moved that in step with the looks (bench/server_threads.py, README).
# So it looks as rarely as the queue allows: it lets at most POLL_FILL of the queue fill at
# the rate it last drained, and waits at most MAX_POLL_INTERVAL_S.
MAX_POLL_INTERVAL_S = 0.5
MIN_POLL_INTERVAL_S = 0.01
POLL_FILL = 0.25


def poll_interval(drained: int, elapsed_s: float, capacity: int) -> float:
    """How long the drainer may sleep after taking `drained` observations that arrived over
    `elapsed_s`: the time the same rate takes to fill `POLL_FILL` of a queue of `capacity`,
    within [MIN_POLL_INTERVAL_S, MAX_POLL_INTERVAL_S]."""
    if drained <= 0 or elapsed_s <= 0:
        return MAX_POLL_INTERVAL_S
    fill_s = POLL_FILL * capacity * elapsed_s / drained
    return min(MAX_POLL_INTERVAL_S, max(MIN_POLL_INTERVAL_S, fill_s))


class Intake:
    """`on_check` appends to a deque (atomic under the GIL: no lock, no wake-up) or, when the
    queue is full or intake is closed, counts a drop (a lock taken on that path only)."""

    def __init__(self, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._max = queue_size
        self._queue: deque[Observation] = deque()
        self._closed = False
        self._drop_lock = threading.Lock()
        self._dropped = 0

    def on_check(self, record: Observation) -> None:
        if self._closed or len(self._queue) >= self._max:
            with self._drop_lock:
                self._dropped += 1
            return
        self._queue.append(record)

    def add_dropped(self, n: int) -> None:
        """Count `n` observations dropped before they reached this queue (by the server
        process of an `OffloadObserver`): reported like this queue's own drops."""
        with self._drop_lock:
            self._dropped += n

    @property
    def dropped(self) -> int:
        """Observations dropped because the queue was full (or intake closed)."""
        return self._dropped

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _sleep_between_drains(self, stop: threading.Event, drain: Callable[[], int]) -> None:
        """Drain until `stop` is set, sleeping `poll_interval` between looks; the last drain
        runs after `stop` is seen, so nothing queued before it is left behind."""
        last = time.monotonic()
        while True:
            stopping = stop.is_set()
            drained = drain()
            if stopping:
                return
            now = time.monotonic()
            interval = poll_interval(drained, now - last, self._max)
            last = now
            stop.wait(interval)

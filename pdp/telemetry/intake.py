"""The request-path half of an observer: a bounded queue that never blocks a decision."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder
    from pdp.telemetry.observation import Observation


def watch_holder(
    holder: EngineHolder, activated: Callable[[Any], None], failed: Callable[[str], None]
) -> None:
    """Call `activated` with the holder's engine now and on every swap, and `failed` on every
    `record_failure` (a refused candidate, an unreachable source). EngineHolder tells
    listeners about swaps only: its failures are seen by wrapping this one instance's
    `record_failure`."""
    holder.on_swap(activated)
    if holder.current is not None:
        activated(holder.current)
    original = holder.record_failure

    def record_failure(error: str) -> None:
        original(error)
        failed(error)

    holder.record_failure = record_failure  # type: ignore[method-assign]


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

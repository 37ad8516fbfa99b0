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


# The least a queued record counts against the queue's byte budget, and the size below which it
# is counted without a lock: the usual call (a 1x3 check is ~0.5 KB with its reply, a gateway
# request a few KB) is charged this much, by the queue's length alone. At the default budget
# the count still binds first for them (10,000 x 4 KiB = 40 MiB); a record at or above it
# counts its own bytes (under a lock), so a record of any size is bounded by bytes: calls of
# 4-16 KiB were bounded by count alone, 160 MiB at 10,000 x 16 KiB.
SMALL_RECORD_BYTES = 4 * 1024
# `pdp.server.wire`'s tag of a decided call's item (`check_item`), which this layer may not
# import: tests/security/test_redteam20_log_replies.py pins the two together.
_CHECK_ITEM = 0
# The byte budget of the queue when `--log-queue-bytes` is not given: this, or the queue's
# count of small records (`--log-queue-size` x SMALL_RECORD_BYTES) if more, so that raising
# the count alone still queues that many small records.
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024


def default_queue_bytes(queue_size: int) -> int:
    return max(DEFAULT_QUEUE_BYTES, queue_size * SMALL_RECORD_BYTES)


def request_size(record: Any) -> int:
    """The caller's bytes an observation keeps alive while queued: its request (a wire item,
    a tuple of `pdp.server.wire`, holds it at index 2; an observation object says
    `request_size`), a decided wire item's reply (index 3 of a `check_item`, kind 0: a batch
    with `explain` answers many times its request), and the headers or metadata it carries for
    the record and the span (`traceparent`, `tracestate`, `baggage`: 8 KB each over HTTP; a
    small body with ~24 KB of them was queued by count alone). Must answer the same for a
    record on its way in and out. Runs on every call: the loops are inline, not calls."""
    size = 0
    if type(record) is tuple:
        for field in record:
            t = type(field)
            if t is bytes:
                size += len(field)
            elif t is tuple:  # the propagation pairs are the item's only tuple field
                for pair in field:
                    size += len(pair[0]) + len(pair[1])
        if record[0] != _CHECK_ITEM and len(record) > 3 and type(record[3]) is bytes:
            size -= len(record[3])  # a cache hit's body is the cache's, shared by every hit
        return size
    pairs = getattr(record, "metadata", ())
    if type(pairs) is tuple:
        try:
            size = sum(len(k) + len(v) for k, v in pairs)
        except (TypeError, ValueError):
            size = 0
    return getattr(record, "request_size", 0) + size


class Intake:
    """`on_check` appends to a deque (atomic under the GIL: no lock, no wake-up) or, when the
    queue is full or intake is closed, counts a drop (a lock taken on that path only).

    The queue is bounded by count (`queue_size`) and by bytes (`max_bytes`), whichever comes
    first: every record counts `SMALL_RECORD_BYTES`, and one whose request, reply and headers
    (`request_size`) come to that or more counts them on top. A caller sending 4 MB requests
    while a sink stalls would otherwise fill the queue's count with 40 GB. Records below
    `SMALL_RECORD_BYTES` are charged by the queue's length (no lock: the usual call takes
    none); larger ones add their size to a total kept under a lock (on that path only). A
    record past either bound is dropped and counted, as when the count alone was full. One
    record larger than the whole budget is still queued when no other large one is (a rare
    huge request is logged, not lost). Consumers take observations with `_popleft`, which
    gives the budget back."""

    def __init__(self, queue_size: int, max_bytes: int | None = None) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._max = queue_size
        self._max_bytes = default_queue_bytes(queue_size) if max_bytes is None else max_bytes
        self._bytes = 0  # request bytes of the large observations queued (under _drop_lock)
        self._queue: deque[Observation] = deque()
        self._closed = False
        self._drop_lock = threading.Lock()
        self._dropped = 0

    def on_check(self, record: Observation) -> None:
        n = len(self._queue)
        if self._closed or n >= self._max:
            with self._drop_lock:
                self._dropped += 1
            return
        size = request_size(record)
        floor = (n + 1) * SMALL_RECORD_BYTES  # every record's least charge, this one's too
        if size < SMALL_RECORD_BYTES:
            # `_bytes` read without the lock: at worst a few records' stale, as the count is.
            if floor + self._bytes > self._max_bytes:
                with self._drop_lock:
                    self._dropped += 1
                return
        else:
            with self._drop_lock:
                if floor + self._bytes + size > self._max_bytes and self._bytes:
                    self._dropped += 1
                    return
                self._bytes += size
        self._queue.append(record)

    def _popleft(self) -> Observation:
        """The oldest observation queued (the queue must not be empty), its bytes released."""
        record = self._queue.popleft()
        size = request_size(record)
        if size >= SMALL_RECORD_BYTES:
            with self._drop_lock:
                self._bytes -= size
        return record

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
    def capacity(self) -> int:
        """The most records of the usual (small) size the queue holds: by count or by bytes."""
        return max(1, min(self._max, self._max_bytes // SMALL_RECORD_BYTES))

    @property
    def pending(self) -> int:
        return len(self._queue)

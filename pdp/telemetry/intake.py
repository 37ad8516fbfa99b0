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


# Requests at least this large count against the queue's byte budget as well as its count:
# below it the count bounds the queue (10,000 x 16 KiB = 160 MiB at most), above it the budget.
LARGE_REQUEST_BYTES = 16 * 1024
# `pdp.server.wire`'s tag of a decided call's item (`check_item`), which this layer may not
# import: tests/security/test_redteam20_log_replies.py pins the two together.
_CHECK_ITEM = 0
# The byte budget of large requests' observations queued for the writer.
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024


def _pairs_size(pairs: Any) -> int:
    """The characters of `(key, value)` pairs (metadata, propagation headers); 0 for anything
    else (a wire item's other fields)."""
    if type(pairs) is not tuple:
        return 0
    try:
        return sum(len(k) + len(v) for k, v in pairs)
    except (TypeError, ValueError):
        return 0


def request_size(record: Any) -> int:
    """The caller's bytes an observation keeps alive while queued: its request and reply (a
    wire item, a tuple of `pdp.server.wire`, holds them at indexes 2 and 3; an observation
    object says `request_size`) and the headers or metadata it carries for the record and the span
    (`traceparent`, `tracestate`, `baggage`: 8 KB each over HTTP). Those counted for nothing:
    a small body with ~24 KB of trace headers was queued by count alone, 240 MB over 10,000
    calls while the sink stalled. Must answer the same for a record on its way in and out."""
    if type(record) is tuple:
        data = record[2] if len(record) > 2 else None
        size = len(data) if type(data) is bytes else 0
        if record[0] == _CHECK_ITEM and type(record[3]) is bytes:
            # A decided call's reply too: a 15 KB request whose 1,000 decisions carry the
            # errors of rules failing on its values has ~1 MB of reply, and was queued by count
            # alone (10 GB at 10,000 while the sink stalled). A cache hit's reply is the entry's
            # bytes, shared by every hit on it: not counted again.
            size += len(record[3])
        # The propagation pairs are the item's only tuple field.
        return size + sum(_pairs_size(field) for field in record)
    return getattr(record, "request_size", 0) + _pairs_size(getattr(record, "metadata", ()))


class Intake:
    """`on_check` appends to a deque (atomic under the GIL: no lock, no wake-up) or, when the
    queue is full or intake is closed, counts a drop (a lock taken on that path only).

    The queue is bounded by count and, for observations of large requests, by bytes: a
    caller sending 4 MB requests while a sink stalls would otherwise fill the queue's count
    with 40 GB. An observation whose request and headers (`request_size`) come to at least
    `LARGE_REQUEST_BYTES` counts them against `max_bytes` (a lock on that path only; gateway requests are a few KB,
    so the usual call takes none), and is dropped when the budget is spent. Consumers take
    observations with `_popleft`, which gives the budget back."""

    def __init__(self, queue_size: int, max_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._max = queue_size
        self._max_bytes = max_bytes
        self._bytes = 0  # request bytes of the large observations queued (under _drop_lock)
        self._queue: deque[Observation] = deque()
        self._closed = False
        self._drop_lock = threading.Lock()
        self._dropped = 0

    def on_check(self, record: Observation) -> None:
        if self._closed or len(self._queue) >= self._max:
            with self._drop_lock:
                self._dropped += 1
            return
        size = request_size(record)
        if size >= LARGE_REQUEST_BYTES:
            with self._drop_lock:
                if self._bytes + size > self._max_bytes and self._bytes:
                    self._dropped += 1
                    return
                self._bytes += size
        self._queue.append(record)

    def _popleft(self) -> Observation:
        """The oldest observation queued (the queue must not be empty), its bytes released."""
        record = self._queue.popleft()
        size = request_size(record)
        if size >= LARGE_REQUEST_BYTES:
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
    def pending(self) -> int:
        return len(self._queue)

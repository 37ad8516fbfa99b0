"""Token-bucket counters for rate limits: the protocol, the bucket arithmetic, and the
in-process store.

A bucket holds at most `capacity` units and refills at `rate` units per second. A take of
several buckets is all-or-nothing: when any bucket lacks the units, none is touched, so a call
denied by one limit does not use up another's quota. `pdp.limits.redis` implements the same
protocol for counters shared by many replicas.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Distinct keys kept in memory; the least recently used beyond it are forgotten (a forgotten
# bucket comes back full). Bounds memory when keys come from callers (IPs, ids).
MAX_MEMORY_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class Take:
    """Take `cost` units from the bucket `key` (capacity, refill per second)."""

    key: str
    capacity: float
    rate: float  # units per second
    cost: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a take: granted, or the index of the first bucket that lacked units."""

    granted: bool
    remaining: tuple[float, ...]  # units left in each bucket after the take (or before, if refused)
    refused: int = -1  # index into the takes
    retry_after: float = 0.0  # seconds until the refused bucket holds its cost

    def reset_after(self, takes: Sequence[Take], index: int) -> float:
        """Seconds until bucket `index` is full again."""
        t = takes[index]
        return max(0.0, (t.capacity - self.remaining[index]) / t.rate)


class CounterStoreError(Exception):
    """The counter store could not be reached or answered nonsense."""


class Counters(Protocol):
    def take(self, takes: Sequence[Take], now: float) -> Outcome:
        """Take every cost or none; `now` is unix seconds (a store may use its own clock)."""
        ...


def refill(tokens: float, last: float, now: float, capacity: float, rate: float) -> float:
    if now <= last:
        return tokens
    return min(capacity, tokens + (now - last) * rate)


class MemoryCounters:
    """Buckets in this process: one replica, nothing to run. Thread-safe."""

    def __init__(self, max_buckets: int = MAX_MEMORY_BUCKETS) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_buckets

    def take(self, takes: Sequence[Take], now: float) -> Outcome:
        with self._lock:
            # Per take, its bucket's level after the takes before it in this call: two takes
            # of one bucket (two descriptors of one Envoy call) both count, not just the last.
            levels = []
            running: dict[str, float] = {}
            for t in takes:
                if t.key not in running:
                    tokens, last = self._buckets.get(t.key, (t.capacity, now))
                    running[t.key] = refill(tokens, last, now, t.capacity, t.rate)
                levels.append(running[t.key])
                running[t.key] -= t.cost
            for i, (t, level) in enumerate(zip(takes, levels, strict=True)):
                if level < t.cost:
                    return Outcome(False, tuple(levels), i, (t.cost - level) / t.rate)
            after = []
            for t, level in zip(takes, levels, strict=True):
                left = level - t.cost
                after.append(left)
                self._buckets[t.key] = (left, now)
                self._buckets.move_to_end(t.key)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
            return Outcome(True, tuple(after))

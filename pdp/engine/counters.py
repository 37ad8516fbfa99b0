"""Token-bucket counters for rate limits: the protocol, the bucket arithmetic, and the
in-process store.

A bucket holds at most `capacity` units and refills at `rate` units per second. A take of
several buckets is all-or-nothing: when any bucket lacks the units, none is touched, so a call
denied by one limit does not use up another's quota. `pdp.limits.redis` implements the same
protocol for counters shared by many replicas.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pdp.ratelog import RateLimitedLog

# Distinct keys kept in memory; the least recently used beyond it are forgotten (a forgotten
# bucket comes back full). Bounds memory when keys come from callers (IPs, ids).
MAX_MEMORY_BUCKETS = 100_000
# A bucket key is `policy/limit:value` or `policy/limit#digest` (`pdp.engine.limits`), its
# parts escaped: what precedes the first `:` or `#` names its limit, and nothing else.
_LIMIT_OF = re.compile("[:#]")
# The largest capacity and refill rate a `LimitPolicy` can spell (`limit` and `burst` at most
# 10**12, `per` at least a second): a give-back past them was never a take.
MAX_UNITS = 10**12
# A refused give-back is a bug in its sender (a worker, the engine): one line per interval.
_REFUSED_LOG = RateLimitedLog(logging.getLogger("pdp.limits"), interval=10.0)


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

    def give_back(self, takes: Sequence[Take], now: float) -> None:
        """Put back what granted `takes` took, each bucket at most full: the call they were
        for ended in an error and its caller never got the allow they paid for. A bucket
        forgotten since (evicted, expired: full) is left alone."""
        ...


def take_problem(t: Take, *, given_back: bool = False) -> str:
    """Why `t` cannot be a take of a bucket (empty: it can). A key is a non-empty string;
    capacity and rate are finite numbers above 0, at most `MAX_UNITS`; a cost is a finite
    number of 0 or more, and given back at most the capacity (a bigger cost was never
    granted). A negative cost would take quota where it gives back, and a rate of 0, NaN or
    infinity corrupts the bucket's arithmetic (Redis refused `PEXPIRE` for it)."""
    if not isinstance(t.key, str) or not t.key:
        return "the key is not a non-empty string"
    for name in ("capacity", "rate", "cost"):
        value = getattr(t, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"`{name}` is not a number"
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int past any float (JSON allows one)
            finite = False
        if not finite:
            return f"`{name}` is not finite"
    if not 0 < t.capacity <= MAX_UNITS:
        return f"`capacity` {t.capacity:g} is not in (0, {MAX_UNITS:g}]"
    if not 0 < t.rate <= MAX_UNITS:
        return f"`rate` {t.rate:g} is not in (0, {MAX_UNITS:g}]"
    if t.cost < 0:
        return f"`cost` {t.cost:g} is negative"
    if given_back and t.cost > t.capacity:
        return f"`cost` {t.cost:g} is more than the capacity {t.capacity:g}"
    return ""


def give_back_problem(takes: Sequence[Take]) -> str:
    """Why a give-back of `takes` is refused whole (empty: it is not)."""
    for i, t in enumerate(takes):
        why = take_problem(t, given_back=True)
        if why:
            return f"bucket {i + 1} of {len(takes)}: {why}"
    return ""


def refused_give_back(takes: Sequence[Take]) -> bool:
    """True (logged) when a store must give none of `takes` back."""
    why = give_back_problem(takes)
    if why:
        _REFUSED_LOG.log(
            logging.WARNING,
            "give_back",
            f"rate limits: a give-back refused, nothing given back: {why}",
        )
    return bool(why)


def refill(tokens: float, last: float, now: float, capacity: float, rate: float) -> float:
    if now <= last:
        return tokens
    return min(capacity, tokens + (now - last) * rate)


def _limit_of(key: str) -> str:
    return _LIMIT_OF.split(key, maxsplit=1)[0] if _LIMIT_OF.search(key) else ""


class MemoryCounters:
    """Buckets in this process: one replica, nothing to run. Thread-safe.

    Past `max_buckets`, the least recently used bucket of the limit holding the most buckets
    is forgotten. One LRU over all limits let a caller who can vary one limit's key (a
    resource id, an IPv6 address) push out the bucket another limit had emptied for it (its
    own user's, its tenant's), which then came back full: `max_buckets` calls bought a fresh
    quota. Now such a caller only pushes out buckets of the limit it floods."""

    def __init__(self, max_buckets: int = MAX_MEMORY_BUCKETS) -> None:
        # Per limit (the key up to its first `:` or `#`), its buckets in LRU order.
        self._limits: dict[str, OrderedDict[str, tuple[float, float]]] = {}
        self._count = 0
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
                    buckets = self._limits.get(_limit_of(t.key))
                    kept = buckets.get(t.key) if buckets is not None else None
                    tokens, last = kept if kept is not None else (t.capacity, now)
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
                buckets = self._limits.setdefault(_limit_of(t.key), OrderedDict())
                if t.key not in buckets:
                    self._count += 1
                buckets[t.key] = (left, now)
                buckets.move_to_end(t.key)
            while self._count > self._max:
                name, fullest = max(self._limits.items(), key=lambda item: len(item[1]))
                fullest.popitem(last=False)
                self._count -= 1
                if not fullest:
                    del self._limits[name]
            return Outcome(True, tuple(after))

    def give_back(self, takes: Sequence[Take], now: float) -> None:
        if refused_give_back(takes):
            return
        with self._lock:
            for t in takes:
                buckets = self._limits.get(_limit_of(t.key))
                kept = buckets.get(t.key) if buckets is not None else None
                if kept is None:
                    continue
                level = refill(kept[0], kept[1], now, t.capacity, t.rate)
                buckets[t.key] = (min(t.capacity, level + t.cost), max(now, kept[1]))

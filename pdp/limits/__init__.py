"""Rate-limit counter stores beyond the in-process one (`pdp.engine.counters`)."""

from pdp.engine.counters import Counters, CounterStoreError, MemoryCounters

__all__ = ["CounterStoreError", "Counters", "MemoryCounters", "counters_from_url"]


def counters_from_url(url: str) -> Counters:
    """`memory` (the default: this process only) or `redis://host:port/db` (shared)."""
    if url in ("", "memory"):
        return MemoryCounters()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisCounters

        return RedisCounters.from_url(url)
    raise ValueError(
        f"unknown rate-limit store `{url}`: expected `memory` or `redis://HOST:PORT/DB`"
    )

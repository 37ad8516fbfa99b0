"""A cache of serialized decisions for repeated requests, the cheapest per-call path there is.

Gateways ask the same question over and over (one user, one route, one resource). A hit skips
protobuf parsing, conversion, the engine and serialization: the server answers with the cached
response bytes plus three fields appended per call — a fresh `decision_id`, the caller's
`request_id` and `evaluated_at`. Appending works because a protobuf message may be split
across concatenated encodings (the last value of a scalar field wins), so no byte of the cached
body is rewritten.

Correctness rules:
- The key is the request's serialized bytes without its `request_id` (field 1, which every
  protobuf encoder writes first), so two requests share an entry only if they carry the same
  principal, resources, actions, context and explain flag, byte for byte. A request whose
  key holds another request id (protobuf reads the last one) is not stored
  (`holds_request_id`): a hit answers with the leading id.
- Entries belong to one engine: a bundle swap starts an empty cache (no decision outlives the
  bundle it was made under).
- Memory is bounded by count and by weight (`DEFAULT_CACHE_BYTES`): large answers evict
  each other instead of filling every slot.
- A decision that read the clock (`now`, `context.time` in a condition) is cached only when the
  request fixed `context.time` itself — then it is a pure function of the request; otherwise it
  is never cached.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cachetools import LRUCache

if TYPE_CHECKING:
    from pdp.engine import Engine
    from pdp.model.decision import CheckResponse
    from pdp.model.request import CheckRequest

# Entries kept per engine; each holds a request's bytes and its response's, ~1-4 KB for a
# typical gateway request, so the default bounds the cache to tens of MB.
DEFAULT_CACHE_ENTRIES = 10_000
# A request bigger than this is a batch that is unlikely to repeat: not worth the memory.
MAX_CACHED_REQUEST_BYTES = 16 * 1024
# What the cache may hold, in entry weights (`_weight`): an entry weighs its key and body bytes
# times `_OBJECT_FACTOR`, or an equal share of this budget if more. Entries are capped by count
# alone while they are typical; batches of up to 16 KiB with large (explained) answers, when
# entries also held their decoded request and response, took ~0.4-0.9 MB each, so 10,000
# distinct ones a caller sent took 4-9 GB. With the budget they take a few hundred MB at most
# and evict each other.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
# An entry's weight per byte of its key and body: entries are bytes only now, so this is
# generous headroom (kept from when they held decoded objects, ~8 times their bytes).
_OBJECT_FACTOR = 8

_REQUEST_ID_TAG = 0x0A  # field 1, length-delimited: CheckRequest.request_id


@dataclass(frozen=True, slots=True)
class CachedDecision:
    """Bytes only: a hit's decision-log record is decoded from them when an observer wants it
    (`pdp.server.wire.decoded_hit`). Kept decoded, an entry is dozens of objects the cyclic
    collector walks again and again as entries come and go: on varied traffic that collector
    was most of the one-call-in-flight p99 (bench/RESULTS.md, session 23)."""

    body: bytes  # the serialized CheckResponse without decision_id, request_id, evaluated_at
    evaluated_at: str  # "" = the call's own time (the decision did not depend on it)
    key: bytes = b""  # the request's bytes without its request id (this entry's cache key)


def split_request_id(data: bytes) -> tuple[bytes, str] | None:
    """(key, request_id) for a serialized CheckRequest; None when it cannot be a cache key."""
    if len(data) > MAX_CACHED_REQUEST_BYTES:
        return None
    if not data or data[0] != _REQUEST_ID_TAG:
        return data, ""
    # Decode the length varint of field 1.
    length, shift, i = 0, 0, 1
    while i < len(data):
        b = data[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
        if shift > 28:
            return None
    end = i + length
    if end > len(data):
        return None  # malformed: let the parser report it
    try:
        request_id = data[i:end].decode()
    except UnicodeDecodeError:
        return None
    return data[end:], request_id


def holds_request_id(key: bytes) -> bool:
    """Whether `key` (a request's bytes after its leading request id) has a request id of its
    own: a top-level field 1, which protobuf reads in place of the leading one (the last value
    wins). A hit answers with the leading id, so such a key must never be stored: another
    leading id before the same bytes would be answered as itself where every decoder reads the
    one inside. Walks the top-level fields only (a few: principal, resources, context,
    explain); the bytes parsed already, so they are well formed. True when unsure."""
    i, n = 0, len(key)
    while i < n:
        tag, i = _varint(key, i)
        if tag >> 3 == 1:
            return True
        wire = tag & 7
        if wire == 0:
            _, i = _varint(key, i)
        elif wire == 2:
            length, i = _varint(key, i)
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:  # groups: not in pdp.v1's schema
            return True
    return i != n


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(data):
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
    return value, len(data) + 1  # cut short: the caller's walk ends unsure (`i != n`)


class DecisionCache:
    """Thread-safe LRU of `CachedDecision`s, emptied whenever the engine changes."""

    def __init__(
        self, maxsize: int = DEFAULT_CACHE_ENTRIES, max_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        # Every entry weighs at least an equal share of the budget: at most `maxsize` entries.
        self._slot = max(1, max_bytes // maxsize)
        self._lru = self._new_lru()
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, engine: Engine, key: bytes) -> CachedDecision | None:
        with self._lock:
            entry = self._lru.get(key) if engine is self._engine else None
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
            return entry

    def put(self, engine: Engine, key: bytes, entry: CachedDecision) -> None:
        if self._weight(entry) > self._max_bytes:
            return  # heavier than the whole budget: never worth keeping
        with self._lock:
            if engine is not self._engine:
                # A new bundle: nothing decided under the old one may be served again.
                self._lru = self._new_lru()
                self._engine = engine
            self._lru[key] = entry

    def _new_lru(self) -> LRUCache[bytes, CachedDecision]:
        return LRUCache(self._max_bytes, getsizeof=self._weight)

    def _weight(self, entry: CachedDecision) -> int:
        return max(self._slot, _OBJECT_FACTOR * (len(entry.key) + len(entry.body)))

    def __len__(self) -> int:
        return len(self._lru)


def cacheable(request: CheckRequest, response: CheckResponse) -> bool:
    """A decision is a pure function of (engine, request) unless it read the server's clock."""
    if response.uses_quota:
        return False
    return not response.time_dependent or request.time is not None

"""Token buckets in Redis, so every replica of pdp enforces one global limit.

One Lua script takes from all the buckets of a call at once (all or nothing), on Redis's own
clock (`TIME`), so replicas whose clocks drift still agree. Buckets expire once they would be
full again: an idle key costs nothing. Any Redis failure raises `CounterStoreError`, which the
engine turns into each limit's `onStoreError` (deny by default); a short socket timeout keeps an
unreachable Redis from holding a decision past its deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from pdp.engine.counters import CounterStoreError, Outcome, Take

# How long a decision may wait for Redis: a limit must not make a call miss its deadline.
SOCKET_TIMEOUT_S = 0.25
# Connections per process: grpc's thread pool bounds concurrency; more would only queue.
MAX_CONNECTIONS = 32
KEY_PREFIX = "pdp:rl:"

# KEYS: the buckets (one may repeat: each take counts, after the ones before it). ARGV: per
# bucket capacity, rate (units per ms), cost.
# Returns {granted, refused index (1-based, 0 if granted), retry_after_ms, remaining...} with
# numbers as strings (Redis truncates Lua numbers to integers).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local levels = {}
local running = {}
for i = 1, #KEYS do
  local cap = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tok = running[KEYS[i]]
  if tok == nil then
    local v = redis.call('HMGET', KEYS[i], 'tok', 'ts')
    tok = tonumber(v[1])
    local ts = tonumber(v[2])
    if tok == nil or ts == nil then
      tok = cap
      ts = now
    end
    if now > ts then
      tok = math.min(cap, tok + (now - ts) * rate)
    end
  end
  levels[i] = tok
  running[KEYS[i]] = tok - cost
end
for i = 1, #KEYS do
  local rate = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  if levels[i] < cost then
    local out = {'0', tostring(i), tostring((cost - levels[i]) / rate)}
    for j = 1, #KEYS do out[#out + 1] = tostring(levels[j]) end
    return out
  end
end
local out = {'1', '0', '0'}
for i = 1, #KEYS do
  local cap = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local left = levels[i] - tonumber(ARGV[3 * i])
  redis.call('HSET', KEYS[i], 'tok', tostring(left), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - left) / rate) + 1000)
  out[#out + 1] = tostring(left)
end
return out
"""


class RedisCounters:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)

    @classmethod
    def from_url(cls, url: str) -> RedisCounters:
        pool = redis.ConnectionPool.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            max_connections=MAX_CONNECTIONS,
        )
        return cls(redis.Redis(connection_pool=pool))

    def take(self, takes: Sequence[Take], now: float) -> Outcome:
        """`now` is ignored: the buckets run on Redis's clock, shared by every replica."""
        keys = [KEY_PREFIX + t.key for t in takes]
        args: list[str] = []
        for t in takes:
            args += [repr(float(t.capacity)), repr(t.rate / 1000.0), repr(float(t.cost))]
        try:
            reply = self._take(keys=keys, args=args)
            granted, refused, retry_ms, *levels = (float(x) for x in reply)
        except (redis.RedisError, OSError, ValueError, TypeError) as exc:
            raise CounterStoreError(f"redis: {exc}") from exc
        if len(levels) != len(takes):
            raise CounterStoreError("redis: the take script answered the wrong number of buckets")
        if granted:
            return Outcome(True, tuple(levels))
        return Outcome(False, tuple(levels), int(refused) - 1, retry_ms / 1000.0)

    def close(self) -> None:
        self._client.close()

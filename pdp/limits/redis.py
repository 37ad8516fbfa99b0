"""Token buckets in Redis, so every replica of pdp enforces one global limit.

One Lua script takes from all the buckets of a call at once (all or nothing), on Redis's own
clock (`TIME`), so replicas whose clocks drift still agree. Buckets expire once they would be
full again: an idle key costs nothing. Any Redis failure raises `CounterStoreError`, which the
engine turns into each limit's `onStoreError` (deny by default); a short socket timeout keeps an
unreachable Redis from holding a decision past its deadline.

A take that timed out is still on its way: a Redis that hangs (a paused VM, a long fork) and
then resumes runs it, and would charge a call that was denied `rate_limit_unavailable`. So
every take carries a deadline on Redis's clock, and the script charges nothing (and answers
"expired") once `TIME` is past it. The deadline is the moment of sending plus the socket
timeout plus `DEADLINE_SLACK_S`, translated to Redis's clock by an offset learnt from Redis
itself: each reply carries Redis's `TIME` at the take, and the offset is that minus this
process's monotonic clock when the reply arrived. The estimate is early by the reply's
travel time, never late, so no clock needs to agree with Redis's: pdp's monotonic clock and
Redis's `TIME` need only run at the same rate between two takes. Its first take asks Redis
for `TIME` once. A take refused as expired although its reply came within the socket timeout
means the estimate was stale (Redis's clock stepped, the reply was read late): the offset is
learnt anew from that reply and the take sent once more (it charged nothing). What is not
guaranteed: a take that reaches Redis less than `DEADLINE_SLACK_S` after the caller gave up
may still be charged.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence

import redis

from pdp.engine.counters import CounterStoreError, Outcome, Take, refused_give_back

# How long a decision may wait for Redis: a limit must not make a call miss its deadline.
SOCKET_TIMEOUT_S = 0.25
# Connections per process: grpc's thread pool bounds concurrency; more would only queue.
MAX_CONNECTIONS = 32
KEY_PREFIX = "pdp:rl:"
# How late past the socket timeout a take may still reach Redis and be charged: room for the
# offset estimate's error (module docstring), not for a hang.
DEADLINE_SLACK_S = 0.25
# The one `maxmemory-policy` under which Redis never drops a bucket. Every other one evicts
# pdp's keys under memory pressure: `allkeys-*` any key, `volatile-*` keys with a TTL, which
# every bucket has (it expires once full again). An evicted bucket comes back full: a spent
# quota refilled.
SAFE_POLICY = "noeviction"
# `check_eviction` outcomes.
SAFE, EVICTS, UNKNOWN, UNREACHABLE = "safe", "evicts", "unknown", "unreachable"

log = logging.getLogger("pdp.limits")

# KEYS: the buckets (one may repeat: each take counts, after the ones before it). ARGV: per
# bucket capacity, rate (units per ms), cost; then the deadline (ms on Redis's clock).
# Returns {status (1 granted, 0 refused, -1 past the deadline: nothing taken), refused index
# (1-based, 0 if granted), retry_after_ms, Redis's now in ms, remaining...} with numbers as
# strings (Redis truncates Lua numbers to integers).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[3 * #KEYS + 1]) then
  return {'-1', '0', '0', tostring(now)}
end
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
    local out = {'0', tostring(i), tostring((cost - levels[i]) / rate), tostring(now)}
    for j = 1, #KEYS do out[#out + 1] = tostring(levels[j]) end
    return out
  end
end
local out = {'1', '0', '0', tostring(now)}
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


# KEYS: the buckets to give back to. ARGV: per bucket capacity, rate (units per ms), cost.
# A bucket gone (expired: full again, or evicted) is left alone; one still there gets its
# cost back, refilled to now first and never past its capacity, and expires when full again.
_GIVE_BACK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'tok', 'ts')
  local tok = tonumber(v[1])
  local ts = tonumber(v[2])
  if tok ~= nil and ts ~= nil then
    local cap = tonumber(ARGV[3 * i - 2])
    local rate = tonumber(ARGV[3 * i - 1])
    if now > ts then
      tok = math.min(cap, tok + (now - ts) * rate)
      ts = now
    end
    local back = math.min(cap, tok + tonumber(ARGV[3 * i]))
    redis.call('HSET', KEYS[i], 'tok', tostring(back), 'ts', tostring(ts))
    redis.call('PEXPIRE', KEYS[i], math.ceil((cap - back) / rate) + 1000)
  end
end
return 1
"""


class RedisCounters:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)
        self._give_back = client.register_script(_GIVE_BACK)
        # Redis's clock minus `time.monotonic()`, in ms, as the last reply showed it (None:
        # not learnt yet). Written by any thread; one float assignment is atomic.
        self._offset_ms: float | None = None
        # Check `maxmemory-policy` again after the next take that succeeds (set when the
        # store failed or the last check could not reach it).
        self._recheck = False

    def check_eviction(self) -> tuple[str, str]:
        """Read Redis's `maxmemory-policy` and log what it means for the buckets: `SAFE`
        (`noeviction`), `EVICTS` (a warning naming the risk and the fix), `UNKNOWN` (CONFIG
        renamed or denied by an ACL) or `UNREACHABLE` (checked again after the next take
        that succeeds). Never raises: start-up does not depend on it.
        Returns the outcome and the message logged."""
        try:
            reply = self._client.config_get("maxmemory*")
        except (redis.RedisError, OSError) as exc:
            unreachable = isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError)
            self._recheck = unreachable
            why = "Redis did not answer" if unreachable else f"CONFIG GET refused: {exc}"
            message = (
                f"rate limits: could not check Redis's maxmemory-policy ({why}). Unless it "
                f"is `{SAFE_POLICY}`, Redis may evict rate-limit buckets, and an evicted "
                "bucket comes back full (docs/RATE_LIMITS.md)"
            )
            log.warning("%s", message)
            return (UNREACHABLE if unreachable else UNKNOWN), message
        policy = _text(reply.get("maxmemory-policy", reply.get(b"maxmemory-policy")))
        maxmemory = _text(reply.get("maxmemory", reply.get(b"maxmemory"))) or "?"
        if policy == SAFE_POLICY:
            message = (
                f"rate limits: Redis maxmemory-policy is `{SAFE_POLICY}`: no bucket is evicted"
            )
            log.info("%s", message)
            return SAFE, message
        message = (
            f"rate limits: Redis maxmemory-policy is `{policy or 'unknown'}` (maxmemory "
            f"{maxmemory}{', no limit yet' if maxmemory == '0' else ''}): under memory pressure "
            "Redis may evict rate-limit buckets (pdp sets a TTL on each), and an evicted bucket "
            f"comes back full, refilling a spent quota. Set `maxmemory-policy {SAFE_POLICY}` "
            "or give pdp a Redis instance of its own (docs/RATE_LIMITS.md)"
        )
        log.warning("%s", message)
        return EVICTS, message

    def check_eviction_later(self) -> None:
        """Check `maxmemory-policy` after the next take that succeeds (Redis was unreachable
        when the server started)."""
        self._recheck = True

    def _recheck_eviction(self) -> None:
        # A Redis back after failing may be another one (restarted, failed over), configured
        # otherwise. Off the decision's thread: it must not pay a round trip for it.
        self._recheck = False
        threading.Thread(target=self.check_eviction, name="pdp-redis-check", daemon=True).start()

    @classmethod
    def from_url(cls, url: str) -> RedisCounters:
        pool = redis.ConnectionPool.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            max_connections=MAX_CONNECTIONS,
        )
        return cls(redis.Redis(connection_pool=pool))

    def _learn_offset(self) -> float:
        seconds, micros = self._client.time()
        offset = seconds * 1000 + micros // 1000 - time.monotonic() * 1000
        self._offset_ms = offset
        return offset

    def take(self, takes: Sequence[Take], now: float) -> Outcome:
        """`now` is ignored: the buckets run on Redis's clock, shared by every replica."""
        keys = [KEY_PREFIX + t.key for t in takes]
        args: list[str] = []
        for t in takes:
            args += [repr(float(t.capacity)), repr(t.rate / 1000.0), repr(float(t.cost))]
        try:
            offset = self._offset_ms
            if offset is None:
                offset = self._learn_offset()
            for attempt in range(2):
                sent = time.monotonic()
                budget = SOCKET_TIMEOUT_S + DEADLINE_SLACK_S
                deadline = math.floor((sent + budget) * 1000 + offset)
                reply = self._take(keys=keys, args=[*args, str(deadline)])
                received = time.monotonic()
                status, refused, retry_ms, redis_now, *levels = (float(x) for x in reply)
                offset = self._offset_ms = redis_now - received * 1000
                if status >= 0:
                    break
                if attempt or received - sent >= SOCKET_TIMEOUT_S:
                    raise CounterStoreError(
                        "redis: the take reached Redis after its deadline; nothing was taken"
                    )
        except (redis.RedisError, OSError, ValueError, TypeError) as exc:
            self._recheck = True
            raise CounterStoreError(f"redis: {exc}") from exc
        if self._recheck:
            self._recheck_eviction()
        if len(levels) != len(takes):
            raise CounterStoreError("redis: the take script answered the wrong number of buckets")
        if status:
            return Outcome(True, tuple(levels))
        return Outcome(False, tuple(levels), int(refused) - 1, retry_ms / 1000.0)

    def give_back(self, takes: Sequence[Take], now: float) -> None:
        """`now` is ignored, as in `take`. Raises `CounterStoreError` when Redis fails."""
        if refused_give_back(takes):
            return
        keys = [KEY_PREFIX + t.key for t in takes]
        args: list[str] = []
        for t in takes:
            args += [repr(float(t.capacity)), repr(t.rate / 1000.0), repr(float(t.cost))]
        try:
            self._give_back(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise CounterStoreError(f"redis: {exc}") from exc

    def close(self) -> None:
        self._client.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value) if value is not None else ""

"""Rate limits decided with the rest: an allowed action whose bucket is empty becomes a deny.

Limits run after the access decision, on allowed actions only, so a denied call never uses up
quota. Every limit that covers an action takes its cost at once, all or nothing. What cannot be
evaluated (a key or cost that errors, a cost that is not a whole number >= 0) denies: rate
limits fail closed like everything else. When the counter store itself fails, each limit's
`onStoreError` decides (deny by default).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pdp.errors import brief
from pdp.model import decision as d
from pdp.model.decision import (
    RATE_LIMIT_ERROR,
    RATE_LIMIT_UNAVAILABLE,
    RATE_LIMITED,
    ActionDecision,
    LimitStatus,
)
from pdp.ratelog import RateLimitedLog

from .compiled import CondFn
from .counters import Counters, CounterStoreError, Outcome, Take

# Keys up to this length name their bucket as they are; longer ones by their SHA-256.
_KEY_SHOWN = 64
# One log line per cause per this many seconds: an unreachable store must not flood the log.
_LOG_EVERY_S = 10.0
# The longest wait a status reports (136 years: "never"). A caller picks the cost (`cost:
# context.attr.tokens`), and the wait for a cost of 1e20 is a number no reply field holds
# (pdp.v1 carries seconds as uint32): unbounded, it failed the whole call with an internal error.
MAX_WAIT_S = 2**32 - 1


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    policy: str
    id: str
    key: Callable[[Mapping[str, Any]], Any]
    limit: int
    per_seconds: float
    capacity: int
    cost: Callable[[Mapping[str, Any]], Any] | None = None
    condition: CondFn | None = None
    fail_open: bool = False  # onStoreError: allow

    @property
    def rate(self) -> float:
        """Units back in the bucket per second."""
        return self.limit / self.per_seconds


# An unreachable store fails every limited call: one line per cause per interval, not per call.
LIMITS_LOG = RateLimitedLog(logging.getLogger("pdp.limits"), interval=_LOG_EVERY_S)


def _part(text: str) -> str:
    # Percent-encoding of everything but letters, digits and `_.-~`: no escaped part holds a
    # `/ : # , [ ] %`, so those can join parts without two tuples sharing a spelling.
    return quote(text, safe="", errors="surrogatepass")


def _value(value: Any) -> str:
    """A key value's spelling: a scalar as its escaped text, a list as `[a,b]` of escaped
    parts (a scalar never starts with a raw `[`). An int is spelled as its decimal text, so
    `5` and `"5"` share a bucket: a caller cannot buy a second quota by changing the type."""
    if isinstance(value, list):
        return "[" + ",".join(_part(str(p)) for p in value) + "]"
    return _part(value if isinstance(value, str) else str(value))


def bucket_key(limit: CompiledLimit, value: Any) -> str:
    """`policy/limit:value`, or `policy/limit#digest` past `_KEY_SHOWN` characters: bounded
    in size whatever the caller sent. Every part is escaped (`_part`), so a `/`, `:` or `#`
    in a policy id, a limit id or a key value cannot make two buckets share a name (policy
    `a/b` limit `c` and policy `a` limit `b/c` once did; so did `["a:b","c"]`-like values)."""
    head = f"{_part(limit.policy)}/{_part(limit.id)}"
    text = _value(value)
    if len(text) <= _KEY_SHOWN:
        return f"{head}:{text}"
    import hashlib  # ~3 ms to import (OpenSSL): only for a key too long to show

    digest = hashlib.sha256(text.encode("ascii")).hexdigest()[:32]
    return f"{head}#{digest}"


class _BadLimitValue(Exception):
    pass


def _key(limit: CompiledLimit, act: Mapping[str, Any]) -> Any:
    """A string, an int or a list of them; anything else (reached through `dyn` values the
    validator cannot type) is an error, since it would be spelled in several ways."""
    value = limit.key(act)
    parts = value if isinstance(value, list) else (value,)
    for part in parts:
        if part is None:
            raise _BadLimitValue("key is null")
        if isinstance(part, bool) or not isinstance(part, str | int):
            raise _BadLimitValue(f"key is {type(part).__name__}, not a string or an int")
    return value


def _cost(limit: CompiledLimit, act: Mapping[str, Any]) -> int:
    if limit.cost is None:
        return 1
    value = limit.cost(act)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadLimitValue(f"cost is {type(value).__name__}, not a number")
    if isinstance(value, float) and not value.is_integer():
        raise _BadLimitValue(f"cost `{value}` is not a whole number")
    if value < 0:
        raise _BadLimitValue(f"cost `{value}` is negative")
    return int(value)


def takes_for(
    limits: tuple[CompiledLimit, ...], act: Mapping[str, Any], cost: int | None = None
) -> tuple[list[tuple[CompiledLimit, Take]], str]:
    """The takes the limits covering one action ask for, or an error text (fail closed).

    `cost`, when given, replaces every limit's own (Envoy's `hits_addend`)."""
    out: list[tuple[CompiledLimit, Take]] = []
    for limit in limits:
        try:
            if limit.condition is not None and not limit.condition(act):
                continue
            key = _key(limit, act)
            units = _cost(limit, act) if cost is None else cost
        except Exception as exc:
            return out, f"limit `{limit.policy}/{limit.id}`: {brief(exc)}"
        out.append((limit, Take(bucket_key(limit, key), limit.capacity, limit.rate, units)))
    return out, ""


def statuses(pairs: list[tuple[CompiledLimit, Take]], outcome: Outcome) -> tuple[LimitStatus, ...]:
    takes = [t for _, t in pairs]
    out = []
    for i, (limit, _) in enumerate(pairs):
        exceeded = i == outcome.refused
        out.append(
            LimitStatus(
                id=limit.id,
                policy=limit.policy,
                limit=limit.limit,
                window_s=limit.per_seconds,
                remaining=max(0, math.floor(outcome.remaining[i])),
                reset_s=_seconds(outcome.reset_after(takes, i)),
                retry_after_s=_seconds(outcome.retry_after) if exceeded else 0,
                exceeded=exceeded,
            )
        )
    return tuple(out)


def _seconds(wait: float) -> int:
    """A wait as the whole seconds a status reports: at least 1, at most `MAX_WAIT_S` (an
    infinite or NaN wait, from a cost no bucket can hold, is the longest)."""
    if not wait <= MAX_WAIT_S:  # also NaN
        return MAX_WAIT_S
    return max(1, math.ceil(wait))


def apply_limits(
    decision: ActionDecision,
    limits: tuple[CompiledLimit, ...],
    act: Mapping[str, Any],
    counters: Counters,
    now: datetime,
    spent: list[Take] | None = None,
) -> ActionDecision:
    """The decision after the limits covering its action: unchanged, or a deny. The takes
    granted are added to `spent`, for the call to give back if it is never answered."""
    pairs, error = takes_for(limits, act)
    if error:
        return ActionDecision(
            effect=d.DENY,
            policy=decision.policy,
            rule=decision.rule,
            reasons=(RATE_LIMIT_ERROR,),
            message="a rate limit could not be evaluated",
            errors=(error,),
        )
    if not pairs:
        return decision
    takes = [t for _, t in pairs]
    try:
        outcome = counters.take(takes, now.timestamp())
    except CounterStoreError as exc:
        closed = [lim for lim, _ in pairs if not lim.fail_open]
        LIMITS_LOG.log(logging.WARNING, "store", f"rate-limit counters unavailable: {exc}")
        if not closed:
            return decision
        return ActionDecision(
            effect=d.DENY,
            policy=closed[0].policy,
            rule=closed[0].id,
            reasons=(RATE_LIMIT_UNAVAILABLE,),
            message="rate-limit counters are unavailable",
            errors=(f"counter store: {exc}",),
        )
    if outcome.granted:
        if spent is not None:
            spent.extend(takes)
        return ActionDecision(
            effect=decision.effect,
            policy=decision.policy,
            rule=decision.rule,
            reasons=decision.reasons,
            obligations=decision.obligations,
            message=decision.message,
            errors=decision.errors,
            trace=decision.trace,
            limits=statuses(pairs, outcome),
        )
    limit = pairs[outcome.refused][0]
    cost = takes[outcome.refused].cost
    why = (
        f"cost {cost:g} exceeds the bucket of {limit.capacity}"
        if cost > limit.capacity
        else f"retry after {_seconds(outcome.retry_after)} s"
    )
    return ActionDecision(
        effect=d.DENY,
        policy=limit.policy,
        rule=limit.id,
        reasons=(RATE_LIMITED,),
        message=f"rate limit `{limit.id}` exhausted: {why}",
        limits=statuses(pairs, outcome),
    )

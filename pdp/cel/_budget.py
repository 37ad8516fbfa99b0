"""The work budget of one CEL evaluation and the call's stop time, which every charge checks.

One evaluation is one call of a compiled expression: a rule's condition (its variables
inlined), a derived role's condition, a rate limit's key or cost. Its comprehensions, its
RE2 compiles and scans, and its operations on large values (`==` of lists or maps, `in` of a
list, `+`, library calls and conversions given a list, a map or a long string; `==`, `<` and
the other comparisons of two long strings or bytes, a map lookup of a long key), wherever
they are in the expression, draw on one budget of `MAX_ITERATIONS`; each rule, derived role or action evaluated after it has a budget of its
own, and what bounds a call's time is its stop time (`Deadline`), checked at every charge.
"""

from __future__ import annotations

import math
import time
from typing import Any, NoReturn

from pdp.cel._values import fail

# Iterations all comprehensions of one evaluation may take together. Nested comprehensions
# multiply: `P.attr.groups.exists(g, R.attr.acl.exists(a, a == g))` over two request lists of
# 10,000 items each is 10^8 iterations, seconds of CPU per check, and a hostile policy nests
# deeper. Past the budget the evaluation is a CEL error (a deny in a deny rule, a non-match
# in an allow rule). Kubernetes bounds its CEL by cost the same way.
MAX_ITERATIONS = 100_000


# A body's own work draws on the same budget. Without it one iteration could cost as much as
# its request allows: `l.exists(x, x in l + l)` over one request list of 20,000 strings took
# 20,000 iterations and ~10^9 element operations (half a minute with the GIL held), and
# `l.map(x, l + l)` kept 20,000 lists of 40,000 items (6 GB). So every ten list or map
# elements a body builds or scans (`in`, `+`, `==` on lists and maps, a library call), and
# every hundred characters of a string, cost one iteration. What one evaluation may build in
# all is then ~10^6 elements or ~10^7 characters, and its CPU a fraction of a second.
# The same operations outside comprehensions draw on it too, when an operand is a list or a
# map or a string of 100 characters or more (smaller ones are not worth a charge): seven
# rules of `a == b || a == b ...` 600 times over two request lists of 9,000 strings were
# ~7 s of work no stop time could interrupt. A variable used N times in a condition runs its
# work N times, each charged: the budget bounds that too.
ELEMENTS_PER_ITERATION = 10
CHARS_PER_ITERATION = 100


class Interrupted(BaseException):
    """The call's stop time (the activation's `STOP_AT`) passed while an evaluation was
    working: the evaluation is abandoned, not answered. A BaseException, as asyncio's
    CancelledError is, so that neither CEL's error absorption (`false && <error>`, a guarded
    macro body) nor the engine's fail-closed handlers (`except Exception`: a deny, a
    non-match) take it for a CEL error and decide with it: the engine turns it into its
    `DeadlineExceeded`."""


class Deadline:
    """When a call must stop deciding (`at`, monotonic seconds; inf: never). Whoever made it
    may bring it forward while the call runs (`lower`): `pdp serve`'s drain lowers every call
    in flight to the end of its grace. Every check reads `at` afresh, so a lowered stop time
    takes effect at the next check, inside a condition as between rules or resources."""

    __slots__ = ("at",)

    def __init__(self, at: float = math.inf) -> None:
        self.at = at

    def lower(self, at: float) -> None:
        if at < self.at:
            self.at = at

    def __repr__(self) -> str:
        return f"Deadline({self.at!r})"


# The activation key under which `Engine.check` puts a call's `Deadline`. No CEL identifier
# can name it, so no condition reads or shadows it; an activation without it (the test
# runner, `pdp check` without `--deadline-ms`, the planner) has no deadline.
STOP_AT = "\x00stop_at"
# The stop time of an activation without one; never lowered.
NEVER = Deadline()
_INF = math.inf
_monotonic = time.monotonic


def _spend(budget: list[Any], n: int) -> None:
    """Charge `n` iterations to `budget` ([iterations left, the call's `Deadline`]); each
    charge also reads the clock when the call has a stop time. The budget bounds one
    evaluation's work, not its time (an RE2 compile or scan is one charge that can take
    milliseconds; one rule or action after another each get a fresh budget), so the stop time
    is checked here, on every charge: once per comprehension range, per charged operation (in
    a comprehension body any, elsewhere one given a large value), and per RE2 compile or scan
    wherever it is; a long comprehension range also reads it between strides of iterations
    (`pdp.cel._macros.stride`)."""
    budget[0] -= n
    if budget[0] < 0:
        over_budget()
    stop_at = budget[1].at
    if stop_at < _INF and _monotonic() >= stop_at:
        raise Interrupted


# A scan by RE2 costs up to its program's size per UTF-8 byte (pdp/cel/_regex.py): each
# REGEX_UNITS_PER_ITERATION instructions x bytes cost one iteration, so the RE2 scans of one
# evaluation, in a comprehension or not, can take at most ~10^8 units (tens of
# milliseconds), not one capped scan per `matches` the expression holds or its loops run.
REGEX_UNITS_PER_ITERATION = 1_000


def over_budget() -> NoReturn:
    fail(
        f"comprehensions, regular expressions and operations on large values work more than "
        f"{MAX_ITERATIONS} iterations in one evaluation ({ELEMENTS_PER_ITERATION} list "
        f"elements or {CHARS_PER_ITERATION} characters built or scanned count as one, and "
        f"{REGEX_UNITS_PER_ITERATION:,} RE2 program instructions x bytes scanned, or one "
        f"instruction of a caller's pattern compiled)"
    )

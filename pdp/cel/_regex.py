"""CEL `matches`: RE2 syntax and semantics, through Google's RE2 (PyPI `google-re2`).

RE2 runs in time linear in the input whatever the pattern, so a caller's attribute cannot
stall the server the way a backtracking engine lets `^([a-z0-9]+)*@x$` on `"a"*28 + "!"` do.
A pattern RE2 refuses (bad syntax, backreferences, lookaround, a program over its memory
budget) is a CEL error; the compiler turns that into a compile error for constant patterns.

Linear is not cheap: when RE2's DFA gives up (its state cache thrashes on a pattern such as
`a.{999}b.{999}c`) it scans with its NFA, whose cost per character is the program's size. So
the program is bounded at compile (`MAX_PROGRAM_SIZE`: `.{999}` alone is ~8,000 instructions,
each `.` being a UTF-8 automaton), and one scan at run time (`MAX_SCAN_COST`, program size x
UTF-8 bytes: the worst case measured is ~0.6 ns per unit), as RE2 users bound it with
`max_mem` and cel-go prices `matches` by pattern x string. And every scan and every compile of
a caller's pattern, in a comprehension or not, is charged to the evaluation's work budget,
which also checks the call's stop time (pdp/cel/_budget.py): one condition cannot add up
capped scans without bound, and a call past its deadline stops within one scan of it.
"""

from __future__ import annotations

import math
import time
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from pdp.cel._budget import (
    CHARS_PER_ITERATION,
    MAX_ITERATIONS,
    REGEX_UNITS_PER_ITERATION,
    Interrupted,
    _spend,
    over_budget,
)
from pdp.cel._values import fail, no_overload

if TYPE_CHECKING:
    import re2

# The most instructions a compiled pattern may have. `\p{L}` is ~1,200 and an e-mail pattern
# a few dozen; `a.{999}b.{999}c` (~16,000) took about a second over a 64 KiB string.
MAX_PROGRAM_SIZE = 10_000
# The most one scan may cost, in program instructions x the string's UTF-8 bytes (characters,
# for ASCII): ~7 to 12 ms at worst on a busy 2-core machine (bench/one_resource.py). An e-mail
# pattern of ~20 instructions scans any string a request may carry; `\p{L}+` (~1,200) strings
# of up to ~16,000 bytes.
MAX_SCAN_COST = 20_000_000
# RE2's own budget, which stops the compiler itself once a program passes ~11,000
# instructions: without it a 300-byte caller-sent pattern (`.{999}` fifty times) compiled to
# 400,000 instructions in half a second before any size check could refuse it. It also sizes
# the DFA's cache, ample for programs under MAX_PROGRAM_SIZE.
_MAX_MEM = 200 << 10


@cache
def _options() -> re2.Options:
    import re2

    options = re2.Options()
    # RE2 logs every refused pattern to stderr by default: a caller sending bad dynamic
    # patterns would write the server's log for it.
    options.log_errors = False
    # `matches` only asks whether there is a match: no submatch bookkeeping.
    options.never_capture = True
    options.max_mem = _MAX_MEM
    return options


# Up to here no string needs measuring in bytes: a character is at most 4 UTF-8 bytes.
_MAX_SCAN_ASCII = MAX_SCAN_COST // 4
_TOO_LARGE = (
    f"pattern too large: its RE2 program is over {MAX_PROGRAM_SIZE:,} instructions "
    "(a repetition `x{n}` copies `x` n times, and `.` or a `\\p{..}` class is many "
    "instructions each: bound a length with `size()`, e.g. `x.matches('^\\\\p{L}+$') && "
    "size(x) <= 64` rather than `^\\p{L}{1,64}$`)"
)


class Regex:
    """A compiled pattern, called with the subject string (the compiled code's `matches`)."""

    __slots__ = ("_ascii_limit", "_search", "pattern", "size")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        import re2  # ~2 ms to import: only for a policy set or a request with a `matches`

        try:
            compiled = re2.compile(pattern, _options())
        except re2.error as e:
            reason = _reason(e)
            if reason.startswith("pattern too large"):
                reason = _TOO_LARGE
            fail(f"invalid regular expression `{_short(pattern)}`: {reason}")
        self.size: int = compiled.programsize
        if self.size > MAX_PROGRAM_SIZE:
            fail(f"invalid regular expression `{_short(pattern)}`: {_TOO_LARGE}")
        # The longest string that needs no measuring in bytes (one compare per call).
        self._ascii_limit = _MAX_SCAN_ASCII // max(self.size, 1)
        self._search = compiled.search

    def __call__(self, s: Any) -> bool:
        """Uncharged: a constant subject, folded at compile time."""
        if s.__class__ is not str:
            no_overload("matches", s, self.pattern)
        if len(s) > self._ascii_limit and scan_length(s) * self.size > MAX_SCAN_COST:
            self._too_long(s)
        try:
            return self._search(s) is not None
        except UnicodeEncodeError:
            # A lone surrogate (JSON "\ud800") has no UTF-8 form for RE2 to read.
            fail("matches: the string is not valid unicode")

    def charged(self, s: Any, budget: list[Any]) -> bool:
        """`s.matches('<constant>')`, charged to `budget` before it scans: the larger of one
        iteration per REGEX_UNITS_PER_ITERATION instructions x bytes and one per
        CHARS_PER_ITERATION characters. One frame with the scan (`_spend` inlined): every
        `matches` of a condition runs here, most over short strings, for which the charge
        is nothing and the only cost the stop-time check."""
        if s.__class__ is not str:
            no_overload("matches", s, self.pattern)
        n = len(s)
        if n > self._ascii_limit:
            units = scan_length(s) * self.size
            if units > MAX_SCAN_COST:
                self._too_long(s)
        else:
            units = n * self.size
            if units >= REGEX_UNITS_PER_ITERATION and not s.isascii():
                units = scan_length(s) * self.size
        steps = units // REGEX_UNITS_PER_ITERATION
        if steps or n >= CHARS_PER_ITERATION:
            budget[0] -= max(steps, n // CHARS_PER_ITERATION)
            if budget[0] < 0:
                over_budget()
        stop_at = budget[1].at
        if stop_at < _INF and _monotonic() >= stop_at:
            raise Interrupted
        try:
            return self._search(s) is not None
        except UnicodeEncodeError:
            fail("matches: the string is not valid unicode")

    def _too_long(self, s: str) -> None:
        # Refused before it runs: an error, so a deny rule denies and an allow rule does not
        # allow.
        fail(
            f"matches: a string of {scan_length(s):,} bytes is too long for the pattern "
            f"`{_short(self.pattern)}` (its RE2 program has {self.size:,} instructions; "
            f"UTF-8 bytes x instructions may be at most {MAX_SCAN_COST:,})"
        )

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


def scan_length(s: str) -> int:
    """The bytes RE2 steps over: its text is UTF-8, so `é` costs two steps and `😀` four."""
    if s.isascii():  # O(1): CPython knows
        return len(s)
    # A lone surrogate is counted as three bytes; the search then refuses it.
    return len(s.encode("utf-8", "surrogatepass"))


def _reason(e: Exception) -> str:
    arg = e.args[0] if e.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _short(pattern: str) -> str:
    # A caller-sent pattern may be 64 KiB: an error message quotes its start only.
    return pattern if len(pattern) <= 100 else pattern[:97] + "..."


# Dynamic patterns come from callers: keep as many as the binding's own cache (128), since
# each compiled RE2 may grow a DFA cache of up to its `max_mem` while it matches.
@lru_cache(maxsize=128)
def _compile_cached(pattern: str) -> Regex:
    return Regex(pattern)


def compile_regex(pattern: str) -> Regex:
    """The compiled pattern (cached: dynamic patterns repeat); a CEL error when RE2 refuses."""
    return _compile_cached(pattern)


def matches(s: Any, pattern: Any) -> bool:
    """Uncharged: both arguments constant, folded at compile time (the library's `matches`;
    the compiled code calls `matches_charged`)."""
    if s.__class__ is not str or pattern.__class__ is not str:
        no_overload("matches", s, pattern)
    return compile_regex(pattern)(s)


def matches_charged(budget: list[Any], s: Any, pattern: Any) -> bool:
    """`s.matches(p)`, `p` from the request: compiling costs one iteration per instruction of
    the program (about what it takes), cached or not, and a refused pattern the most a
    program may have, since a refused compile is not cached and can take milliseconds; then
    the scan is charged as `Regex.charged` charges it."""
    if s.__class__ is not str or pattern.__class__ is not str:
        no_overload("matches", s, pattern)
    _spend(budget, len(pattern) // CHARS_PER_ITERATION)
    try:
        rx = compile_regex(pattern)
    except Exception:
        _spend(budget, MAX_PROGRAM_SIZE)
        raise
    _spend(budget, rx.size)
    return rx.charged(s, budget)


_INF = math.inf
_monotonic = time.monotonic
assert MAX_PROGRAM_SIZE < MAX_ITERATIONS  # a refused compile is charged, not the budget's end

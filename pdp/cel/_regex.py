"""CEL `matches`: RE2 syntax and semantics, through Google's RE2 (PyPI `google-re2`).

RE2 runs in time linear in the input whatever the pattern, so a caller's attribute cannot
stall the server the way a backtracking engine lets `^([a-z0-9]+)*@x$` on `"a"*28 + "!"` do.
A pattern RE2 refuses (bad syntax, backreferences, lookaround, a program over its memory
budget) is a CEL error; the compiler turns that into a compile error for constant patterns.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from pdp.cel._values import fail, no_overload


def _options() -> re2.Options:
    options = re2.Options()
    # RE2 logs every refused pattern to stderr by default: a caller sending bad dynamic
    # patterns would write the server's log for it.
    options.log_errors = False
    # `matches` only asks whether there is a match: no submatch bookkeeping.
    options.never_capture = True
    return options


_OPTIONS = _options()


class Regex:
    """A compiled pattern, called with the subject string (the compiled code's `matches`)."""

    __slots__ = ("_search", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        try:
            compiled = re2.compile(pattern, _OPTIONS)
        except re2.error as e:
            fail(f"invalid regular expression `{pattern}`: {_reason(e)}")
        self._search = compiled.search

    def __call__(self, s: Any) -> bool:
        if s.__class__ is not str:
            no_overload("matches", s, self.pattern)
        try:
            return self._search(s) is not None
        except UnicodeEncodeError:
            # A lone surrogate (JSON "\ud800") has no UTF-8 form for RE2 to read.
            fail("matches: the string is not valid unicode")

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


def _reason(e: Exception) -> str:
    arg = e.args[0] if e.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


# Dynamic patterns come from callers: keep as many as the binding's own cache (128), since
# each compiled RE2 may grow a DFA cache of up to its `max_mem` (8 MiB) while it matches.
@lru_cache(maxsize=128)
def _compile_cached(pattern: str) -> Regex:
    return Regex(pattern)


def compile_regex(pattern: str) -> Regex:
    """The compiled pattern (cached: dynamic patterns repeat); a CEL error when RE2 refuses."""
    return _compile_cached(pattern)


def matches(s: Any, pattern: Any) -> bool:
    if s.__class__ is not str or pattern.__class__ is not str:
        no_overload("matches", s, pattern)
    return compile_regex(pattern)(s)

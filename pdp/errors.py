"""The error tree of pdp. Every error says where it happened.

    PdpError
    ├── PolicyError            one problem in a policy source (file:line:column)
    ├── PolicyErrors           every PolicyError found in one load, reported together
    ├── CelCompileError        a CEL expression the compiler rejects (expression + position)
    ├── CelEvalError           a CEL runtime error (no such key, overflow, bad types, ...)
    ├── RequestError           a malformed decision request (names the field path)
    │   └── LimitExceeded      a request over a configured limit
    ├── BundleError            a bundle that cannot be built, verified or loaded
    └── NoPoliciesError        no policy set is active yet

Messages are lower case, without a trailing period, with user input in backticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class PdpError(Exception):
    """Base class of every error pdp raises on purpose."""


@dataclass(frozen=True, slots=True)
class SourceLocation:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class PolicyError(PdpError):
    """One problem in a policy source, pointing at the text that caused it."""

    def __init__(self, message: str, location: SourceLocation | None = None, *, snippet: str = ""):
        self.message = message
        self.location = location
        self.snippet = snippet  # optional extra lines (e.g. a CEL expression with a caret)
        super().__init__(self.render())

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        text = f"{where}{self.message}"
        return f"{text}\n{self.snippet}" if self.snippet else text


class PolicyErrors(PdpError):
    """All the problems of one load, so an author fixes them in one pass."""

    def __init__(self, errors: Sequence[PolicyError], partial: object = None):
        self.errors = list(errors)
        # What did load (a PolicySource), so a later stage can still report its own errors
        # and the author sees everything in one pass.
        self.partial = partial
        super().__init__("\n".join(e.render() for e in self.errors))


class CelCompileError(PdpError):
    """A CEL expression that does not parse or uses what the compiler does not support.

    `line`/`column` are 1-based positions inside `expression`.
    """

    def __init__(self, message: str, expression: str, line: int | None = 1, column: int | None = 1):
        self.message = message
        self.expression = expression
        # Some parser tokens carry no position; point at the start rather than fail.
        self.line = line if isinstance(line, int) and line >= 1 else 1
        self.column = column if isinstance(column, int) and column >= 1 else 1
        super().__init__(f"{message}\n{self.caret()}")

    def caret(self) -> str:
        lines = self.expression.splitlines() or [""]
        src = lines[min(self.line, len(lines)) - 1]
        return f"  | {src}\n  | {' ' * max(self.column - 1, 0)}^"


class CelEvalError(PdpError):
    """A CEL evaluation error; the engine turns it into a fail-closed decision."""


class RequestError(PdpError):
    """A malformed request; `field` is the path of the offending field (`resources[2].id`)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class LimitExceeded(RequestError):
    """A request over a configured limit (maps to RESOURCE_EXHAUSTED)."""


class BundleError(PdpError):
    """A bundle that cannot be built, verified or loaded."""


class NoPoliciesError(PdpError):
    """No policy set is active yet (maps to UNAVAILABLE)."""


# An evaluation error's text quotes the value it failed on (``cannot convert `…` to int``), and a
# decision carries one such text per failing rule, action and resource, once more in its trace.
# Unbounded, one principal attribute of 60 KB failing `int(P.attr.level)` in a batch of 500
# resources x 2 actions made a 74 KB request build and send a 60 MB reply (and as much again in
# the decision log): the text is cut to this many characters where a decision takes it.
MAX_ERROR_TEXT = 200


def brief(error: object) -> str:
    """`str(error)`, cut to `MAX_ERROR_TEXT` characters (an ellipsis marks the cut)."""
    text = str(error)
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"

"""`Code`, what compiling a CEL subexpression gives: its own module so that the operator and
macro mixins can import it at load time (`_compile` imports them)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Code(NamedTuple):
    expr: str
    kind: str | None = None  # static CEL type when known ("string", "bool", ...)
    const: bool = False  # a compile-time constant whose value is `value`
    value: Any = None

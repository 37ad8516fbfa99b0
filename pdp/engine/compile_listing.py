"""The Python each CEL condition of a policy set compiles to, for a person debugging a policy.

`python_listing(source)` walks the conditions in the order `compile_policy_set` does (derived
roles, guard rules, resource rules and cross-tenant rules, rate-limit conditions) and renders
each as a block: a comment naming the policy, rule and file:line:column, the CEL source, the
constants the function reads (`_k0 = 3`), then the generated `def _cel(act):`. `pdp compile`
prints it. The text is the one the engine runs: compiling a block (with the runtime helpers of
`pdp.cel`) gives the same function.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from pdp.cel import CelEnv, CompiledCel, compile_cel
from pdp.errors import CelCompileError
from pdp.model.policy import Condition, ConditionGroup, Expr, PolicySource

from .compile import _Errors, _scope_for

# Globals of every generated function (`_eq`, `_wrap`, ...): part of the runtime, not shown.
_RUNTIME_PREFIXES = ("__",)
_MACHINERY = frozenset({"_cel", "_first_call", "_compile_error"})  # see pdp.cel._compile._lazy


class ListedCondition(NamedTuple):
    policy: str
    rule: str
    what: str  # "rule", "derived role", "guard rule", "cross-tenant rule", "limit"
    expr: Expr
    compiled: CompiledCel | None  # None: it does not compile (the error is in `error`)
    error: str = ""

    def render(self) -> str:
        loc = self.expr.location
        lines = [
            f"# policy `{self.policy}`, {self.what} `{self.rule}` "
            f"({loc.file}:{loc.line}:{loc.column})",
            *(f"# CEL: {line}" for line in self.expr.source.strip().splitlines()),
        ]
        if self.compiled is None:
            lines.append(f"# does not compile: {self.error}")
            return "\n".join(lines)
        lines.extend(_constants(self.compiled))
        lines.append(self.compiled.python_source)
        return "\n".join(lines)


def _own_globals(compiled: CompiledCel) -> Iterator[tuple[str, Any]]:
    from pdp.cel._compile import _RUNTIME

    for name, value in compiled.python_globals.items():
        if name in _RUNTIME or name in _MACHINERY or name.startswith(_RUNTIME_PREFIXES):
            continue
        yield name, value


def _constants(compiled: CompiledCel) -> Iterator[str]:
    """The function's own globals: a literal as an assignment (so the block runs as shown),
    anything else (a library function, a compiled regex, a CIDR set) as a comment."""
    for name, value in _own_globals(compiled):
        if _is_literal(value):
            yield f"{name} = {value!r}"
        else:
            label = getattr(value, "__qualname__", None) or value.__class__.__name__
            yield f"# {name}: {label}"


def opaque_globals(compiled: CompiledCel) -> dict[str, Any]:
    """The globals a listed block names in comments only (not literals): what it needs, with
    `runtime_globals()`, to run as the engine runs it."""
    return {name: x for name, x in _own_globals(compiled) if not _is_literal(x)}


def _is_literal(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    c = value.__class__
    if value is None or c in (bool, int, float, str, bytes):
        return c is not float or math.isfinite(value)  # `nan`, `inf` are not literals
    if c in (list, tuple, frozenset):  # a frozenset's repr is `frozenset({...})`
        return all(_is_literal(x, depth + 1) for x in value)
    if c is dict:
        return all(
            _is_literal(k, depth + 1) and _is_literal(x, depth + 1) for k, x in value.items()
        )
    return False


def python_listing(
    source: PolicySource, *, policy: str | None = None, rule: str | None = None
) -> list[ListedCondition]:
    """Every CEL condition of `source` with its generated Python, optionally only those of
    policy id `policy` and/or rule id (or derived role, or limit id) `rule`."""
    out: list[ListedCondition] = []
    errors = _Errors()
    data = dict(source.data)
    defs = {d.id: d for d in source.definitions}

    def add(pol: str, name: str, what: str, cond: Condition | None, env: CelEnv) -> None:
        if (policy is not None and pol != policy) or (rule is not None and name != rule):
            return
        for expr in _exprs(cond):
            try:
                compiled = compile_cel(expr.source, env, require_bool=True)
            except CelCompileError as e:
                out.append(ListedCondition(pol, name, what, expr, None, e.message))
                continue
            out.append(ListedCondition(pol, name, what, expr, compiled))

    for d in source.definitions:
        env = _scope_for([d.id], defs, {}, data, errors, own=d).env
        for name, role in d.derived_roles.items():
            add(d.id, name, "derived role", role.condition, env)
    for g in source.guard_policies:
        env = _scope_for(g.imports, defs, g.variables, data, errors).env
        for r in g.rules:
            add(g.id, r.id, "guard rule", r.condition, env)
    for p in source.resource_policies:
        env = _scope_for(p.imports, defs, p.variables, data, errors).env
        for r in p.rules:
            add(p.id, r.id, "rule", r.condition, env)
        for c in p.cross_tenant:
            add(p.id, c.id, "cross-tenant rule", c.condition, env)
    for lp in source.limit_policies:
        env = _scope_for(lp.imports, defs, lp.variables, data, errors).env
        for limit in lp.limits:
            add(lp.id, limit.id, "limit", limit.condition, env)
    return out


def _exprs(cond: Condition | None) -> Iterator[Expr]:
    if cond is None:
        return
    if isinstance(cond, Expr):
        yield cond
        return
    assert isinstance(cond, ConditionGroup)
    for item in cond.items:
        yield from _exprs(item)


def runtime_globals() -> Mapping[str, Any]:
    """What a listed block needs besides its own lines to run: the CEL runtime helpers."""
    from pdp.cel._compile import _RUNTIME

    return _RUNTIME

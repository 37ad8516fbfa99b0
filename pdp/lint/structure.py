"""Lints over the shape of policies (no CEL types): imports, guards, roles, exceptions, order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pdp.lint._report import Reporter
from pdp.model.policy import (
    WILDCARD,
    CrossTenantRule,
    Definitions,
    GuardPolicy,
    LimitPolicy,
    PolicySource,
    ResourcePolicy,
    Rule,
)


def check_structure(source: PolicySource, out: Reporter) -> None:
    defs = {d.id: d for d in source.definitions}
    for p in (*source.resource_policies, *source.guard_policies, *source.limit_policies):
        _duplicate_imports(p, defs, out)
    _guards(source, out)
    for p in source.resource_policies:
        for rule in p.rules:
            _empty_roles(
                rule.positions, rule.roles, rule.derived_roles, (*rule.suppress, *p.suppress), out
            )
            if rule.effect == "deny" and not rule.reason:
                out.add(
                    "PDP204",
                    f"deny rule `{rule.id}` gives no `reason`: the caller sees only its id",
                    rule.location,
                    (*rule.suppress, *p.suppress),
                )
        for cross in p.cross_tenant:
            _empty_roles(
                cross.positions,
                cross.roles,
                cross.derived_roles,
                (*cross.suppress, *p.suppress),
                out,
            )
            _open_exception(p, cross, out)
        _shadowed(p, out)
    for g in source.guard_policies:
        for grule in g.rules:
            _empty_roles(grule.positions, grule.roles, (), (*grule.suppress, *g.suppress), out)
    used = {name for p in source.resource_policies if p.schemas for name in
            (p.schemas.principal, p.schemas.resource, p.schemas.context) if name}  # fmt: skip
    for name, schema in source.schemas.items():
        if name not in used:
            out.add(
                "PDP207",
                f"schema `{name}` is not referenced by any policy",
                _file_start(schema.file),
            )


def _file_start(file: str) -> Any:
    from pdp.errors import SourceLocation

    return SourceLocation(file, 1, 1)


def _duplicate_imports(
    p: ResourcePolicy | GuardPolicy | LimitPolicy, defs: Mapping[str, Definitions], out: Reporter
) -> None:
    seen: dict[tuple[str, str], Definitions] = {}
    for i, name in enumerate(p.imports):
        d = defs.get(name)
        if d is None:
            continue
        loc = p.import_locations[i] if i < len(p.import_locations) else p.location
        entries: list[tuple[str, str, str, Iterable[str]]] = [
            ("PDP101", "derived role", "R", d.derived_roles),
            ("PDP102", "variable", "V", d.variables),
            ("PDP103", "constant", "C", d.constants),
        ]
        for code, what, tag, names in entries:
            for item in names:
                first = seen.get((tag, item))
                if first is not None and first.id != d.id:
                    where = _where(first, tag, item)
                    out.add(
                        code,
                        f"{what} `{item}` is defined by both `{first.id}` ({where}) and "
                        f"`{d.id}` ({_where(d, tag, item)}); the later import would silently win",
                        loc,
                        p.suppress,
                    )
                else:
                    seen[(tag, item)] = d


def _where(d: Definitions, tag: str, name: str) -> str:
    if tag == "R":
        return str(d.derived_roles[name].location)
    if tag == "V":
        return str(d.variables[name].location)
    return str(d.constant_locations.get(name, d.location))


def _guards(source: PolicySource, out: Reporter) -> None:
    kinds = {p.resource: p for p in source.resource_policies}
    for g in source.guard_policies:
        for rule in g.rules:
            sup = (*rule.suppress, *g.suppress)
            targets = []
            for i, kind in enumerate(rule.resources):
                if kind == WILDCARD:
                    targets.extend(kinds.values())
                elif kind in kinds:
                    targets.append(kinds[kind])
                else:
                    out.add(
                        "PDP105",
                        f"guard `{rule.id}` names resource kind `{kind}`, which no policy "
                        f"governs{_hint(kind, kinds)}: the guard never applies to it",
                        rule.positions.get(f"resources[{i}]", rule.location),
                        sup,
                    )
            if not targets:
                continue
            declared = {a for p in targets for a in p.actions}
            for i, action in enumerate(rule.actions):
                if action != WILDCARD and action not in declared:
                    names = ", ".join(sorted({f"`{p.resource}`" for p in targets}))
                    out.add(
                        "PDP104",
                        f"guard `{rule.id}` names action `{action}`, which no policy of its "
                        f"kinds ({names}) declares{_hint(action, declared)}: the guard never "
                        "applies to it",
                        rule.positions.get(f"actions[{i}]", rule.location),
                        sup,
                    )


def _hint(word: str, choices: Iterable[str]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _empty_roles(
    positions: Mapping[str, Any],
    roles: tuple[str, ...] | None,
    derived: tuple[str, ...],
    sup: Iterable[Any],
    out: Reporter,
) -> None:
    if roles is not None and not roles:
        out.add(
            "PDP106",
            "`roles: []` matches no principal, so the rule never applies; "
            "remove `roles` to match every principal",
            positions.get("roles"),
            sup,
        )
    if "derivedRoles" in positions and not derived:
        out.add(
            "PDP106",
            "`derivedRoles: []` names no derived role; remove it or name one",
            positions.get("derivedRoles"),
            sup,
        )


def _everyone(roles: tuple[str, ...] | None, derived: tuple[str, ...]) -> bool:
    return (roles is None or WILDCARD in roles) and not derived


def _open_exception(p: ResourcePolicy, cross: CrossTenantRule, out: Reporter) -> None:
    if cross.unconditional or cross.condition is not None:
        return
    if _everyone(cross.roles, cross.derived_roles) and cross.roles != ():
        out.add(
            "PDP107",
            f"crossTenant exception `{cross.id}` has neither roles nor a condition: it opens "
            f"`{p.resource}` to every tenant; add them, or say `unconditional: true` with a "
            "`reason`",
            cross.location,
            (*cross.suppress, *p.suppress),
        )


def _covers_actions(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return WILDCARD in a or (WILDCARD not in b and set(b) <= set(a))


def _covers_principals(a: Rule, b: Rule) -> bool:
    if _everyone(a.roles, a.derived_roles):
        return True
    if _everyone(b.roles, b.derived_roles):
        return False
    return set(b.roles or ()) <= set(a.roles or ()) and set(b.derived_roles) <= set(a.derived_roles)


def _shadowed(p: ResourcePolicy, out: Reporter) -> None:
    rules = p.rules
    for j, later in enumerate(rules):
        if later.roles == ():
            continue  # PDP106 says it already
        for i, first in enumerate(rules):
            if first is later or first.condition is not None or first.roles == ():
                continue
            same_effect_earlier = first.effect == later.effect and i < j
            deny_over_allow = first.effect == "deny" and later.effect == "allow"
            if not (same_effect_earlier or deny_over_allow):
                continue
            if _covers_actions(first.actions, later.actions) and _covers_principals(first, later):
                why = (
                    f"rule `{first.id}` (line {first.location.line}) has no condition and "
                    "matches every request this one can"
                )
                what = "is never reached" if same_effect_earlier else "can never allow"
                out.add(
                    "PDP109",
                    f"rule `{later.id}` {what}: {why}",
                    later.location,
                    (*later.suppress, *p.suppress),
                )
                break


def check_usage(source: PolicySource, out: Reporter) -> None:
    """PDP201 (an import nothing uses) and PDP202 (a local variable nothing uses)."""
    defs = {d.id: d for d in source.definitions}
    policies = (*source.resource_policies, *source.guard_policies, *source.limit_policies)
    for p in policies:
        variables: dict[str, str] = {}
        for name in p.imports:
            d = defs.get(name)
            if d is not None:
                variables.update({k: e.source for k, e in d.variables.items()})
        variables.update({k: e.source for k, e in p.variables.items()})
        conditions: list[Any] = []
        derived: set[str] = set()
        rules: list[Any] = list(p.limits if isinstance(p, LimitPolicy) else p.rules)
        if isinstance(p, ResourcePolicy):
            rules.extend(p.cross_tenant)
        for r in rules:
            conditions.extend(_exprs(r.condition))
            derived.update(getattr(r, "derived_roles", ()))
            if isinstance(p, LimitPolicy):  # a limit's key and cost are CEL too
                conditions.extend(_exprs(r.key) + _exprs(r.cost))
        seen_v: set[str] = set()
        used = _names(conditions)
        stack = [n for kind, n in used if kind == "V"]
        while stack:
            name = stack.pop()
            if name in seen_v or name not in variables:
                continue
            seen_v.add(name)
            more = _names_of(variables[name])
            used |= more
            stack.extend(n for kind, n in more if kind == "V")
        constants = {n for kind, n in used if kind == "C"}
        for i, name in enumerate(p.imports):
            d = defs.get(name)
            if d is None:
                continue
            if (
                constants & set(d.constants)
                or seen_v & set(d.variables)
                or derived & set(d.derived_roles)
            ):
                continue
            loc = p.import_locations[i] if i < len(p.import_locations) else p.location
            out.add(
                "PDP201",
                f"`{p.id}` imports `{name}` but uses none of its constants, variables or "
                "derived roles",
                loc,
                p.suppress,
            )
        what = "limit" if isinstance(p, LimitPolicy) else "rule"
        for name, expr in p.variables.items():
            if name not in seen_v:
                out.add(
                    "PDP202",
                    f"variable `{name}` is never used by a {what} of `{p.id}`",
                    expr.location,
                    p.suppress,
                )


def _exprs(cond: Any) -> list[Any]:
    from pdp.model.policy import ConditionGroup, Expr

    if cond is None:
        return []
    if isinstance(cond, Expr):
        return [cond.source]
    assert isinstance(cond, ConditionGroup)
    return [s for c in cond.items for s in _exprs(c)]


def _names(sources: list[str]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for s in sources:
        out |= _names_of(s)
    return out


def _names_of(source: str) -> set[tuple[str, str]]:
    from pdp.cel import CelCompileError, names_used

    try:
        return names_used(source)
    except (CelCompileError, RecursionError):
        return set()

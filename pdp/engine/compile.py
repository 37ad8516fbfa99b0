"""Compile a loaded `PolicySource` into an immutable `PolicySet`.

Every CEL expression is compiled once here; every problem found (CEL syntax, unknown function,
undefined variable or constant, bad references) is collected with its file:line:column and
raised together as `PolicyErrors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from pdp.cel import CelEnv, CompiledCel, batch, compile_cel
from pdp.errors import CelCompileError, PolicyError, PolicyErrors, SourceLocation
from pdp.model.decision import ALLOW, DENY, NO_MATCHING_RULE, ActionDecision
from pdp.model.policy import (
    WILDCARD,
    Condition,
    ConditionGroup,
    Definitions,
    DerivedRole,
    Expr,
    GuardPolicy,
    PolicySource,
    ResourcePolicy,
)

from .compiled import (
    CompiledAction,
    CompiledDerivedRole,
    CompiledKind,
    CompiledRule,
    CondFn,
    CondSource,
    PolicySet,
    RuleRef,
)
from .limits import CompiledLimit


class _Errors:
    def __init__(self) -> None:
        self.items: list[PolicyError] = []

    def add(self, message: str, location: SourceLocation | None, snippet: str = "") -> None:
        self.items.append(PolicyError(message, location, snippet=snippet))


def _cel_location(expr: Expr, err: CelCompileError) -> SourceLocation:
    """Map a position inside an expression to a position in its file."""
    loc = expr.location
    if err.line <= 1:
        return SourceLocation(loc.file, loc.line, loc.column + err.column - 1)
    # Block scalars keep their indentation on every line.
    return SourceLocation(loc.file, loc.line + err.line - 1, loc.column + err.column - 1)


class _Scope:
    """The CEL environment of one policy: its imported constants and variables."""

    def __init__(
        self,
        env: CelEnv,
        variables: Mapping[str, Expr],
        errors: _Errors,
    ) -> None:
        self.env = env
        self.variables = variables
        self.errors = errors

    def compile_expr(self, expr: Expr, *, condition: bool = True) -> CompiledCel | None:
        """Compile; a condition must give a bool at run time (anything else is an error)."""
        try:
            return compile_cel(expr.source, self.env, require_bool=condition)
        except CelCompileError as err:
            var = getattr(err, "variable", None)
            where = self.variables.get(var) if var else None
            if where is not None:
                self.errors.add(
                    f"in variable `{var}`: {err.message}", _cel_location(where, err), err.caret()
                )
            else:
                self.errors.add(err.message, _cel_location(expr, err), err.caret())
            return None

    def compile_condition(self, cond: Condition | None) -> _Cond:
        if cond is None:
            return _Cond(None, False, "", frozenset(), None)
        if isinstance(cond, Expr):
            plan = CondSource("cel", cond.source, self.env)
            compiled = self.compile_expr(cond)
            if compiled is None:
                return _Cond(_never_compiled, False, cond.source, frozenset(), plan)
            # The compiled expression is itself the condition: no wrapper frame per call.
            return _Cond(compiled, compiled.uses_time, cond.source, compiled.reads, plan)
        assert isinstance(cond, ConditionGroup)
        parts = [self.compile_condition(c) for c in cond.items]
        fns = [p.fn or _always_true for p in parts]
        return _Cond(
            _group(cond.op, fns),
            any(p.uses_time for p in parts),
            f"{cond.op}({', '.join(p.text for p in parts)})",
            frozenset().union(*(p.reads for p in parts)),
            CondSource(cond.op, items=tuple(p.plan or CondSource("all") for p in parts)),
        )


class _Cond(NamedTuple):
    """A compiled condition: the function (None = no condition), and what it depends on."""

    fn: CondFn | None
    uses_time: bool
    text: str  # the source, for explain traces
    reads: frozenset[str]  # activation names read
    plan: CondSource | None  # the source and environment, for the query planner


def _never_compiled(_: Mapping[str, Any]) -> bool:
    # Only reachable if a set with compile errors were used, which compile_policy_set prevents.
    raise RuntimeError("condition failed to compile")


def _always_true(_: Mapping[str, Any]) -> bool:
    return True


def _group(op: str, fns: list[CondFn]) -> CondFn:
    """all/any/none with CEL's error absorption: a decisive value beats an error."""

    def all_(act: Mapping[str, Any]) -> bool:
        error: Exception | None = None
        for fn in fns:
            try:
                if not fn(act):
                    return False
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return True

    def any_(act: Mapping[str, Any]) -> bool:
        error: Exception | None = None
        for fn in fns:
            try:
                if fn(act):
                    return True
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return False

    if op == "all":
        return all_
    if op == "any":
        return any_

    def none_(act: Mapping[str, Any]) -> bool:
        return not any_(act)

    return none_


def _decision(
    policy: str, rule_id: str, stage: str, reason: str, obligations: Mapping[str, Any]
) -> ActionDecision:
    """The decision a rule makes when it matches without errors (made once, shared). Passed to
    `CompiledRule(decision=...)` directly: a `dataclasses.replace` per rule was a visible
    cost at 10,000 policies."""
    reasons = (reason,) if reason else ()
    if stage == "allow":
        return ActionDecision(
            effect=ALLOW, policy=policy, rule=rule_id, reasons=reasons, obligations=obligations
        )
    return ActionDecision(effect=DENY, policy=policy, rule=rule_id, reasons=reasons)


def _roles(roles: Iterable[str] | None) -> frozenset[str] | None:
    if roles is None:
        return None
    roles = frozenset(roles)
    return None if WILDCARD in roles else roles


def compile_policy_set(source: PolicySource) -> PolicySet:
    """Compile everything; raise `PolicyErrors` with every problem found."""
    with batch():  # thousands of compile_cel calls: no cyclic GC passes meanwhile
        return _compile_policy_set(source)


def _compile_policy_set(source: PolicySource) -> PolicySet:
    errors = _Errors()
    data = dict(source.data)
    defs: dict[str, Definitions] = {d.id: d for d in source.definitions}

    # Derived roles are compiled once, in the environment of the Definitions that declares them.
    derived: dict[str, dict[str, CompiledDerivedRole]] = {}
    for d in source.definitions:
        scope = _scope_for([d.id], defs, {}, data, errors, own=d)
        derived[d.id] = {
            name: _compile_derived(d.id, role, scope) for name, role in d.derived_roles.items()
        }
        # Compile every variable on its own so an error points at it even when unused.
        for expr in d.variables.values():
            scope.compile_expr(expr, condition=False)

    guard_rules: list[tuple[GuardPolicy, Any, CompiledRule]] = []
    rule_refs: list[RuleRef] = []
    for g in source.guard_policies:
        scope = _scope_for(g.imports, defs, g.variables, data, errors)
        for rule in g.rules:
            fn, uses_time, text, _reads, plan = scope.compile_condition(rule.condition)
            compiled = CompiledRule(
                policy=g.id,
                id=rule.id,
                stage="guard",
                roles=_roles(rule.roles),
                derived_roles=(),
                condition=fn,
                reason=rule.reason,
                condition_source=text,
                uses_time=uses_time,
                decision=_decision(g.id, rule.id, "guard", rule.reason, {}),
                plan=plan,
            )
            guard_rules.append((g, rule, compiled))
            rule_refs.append(RuleRef(g.id, rule.id, "guard", g.file, rule.location.line))

    kinds: dict[str, CompiledKind] = {}
    for p in source.resource_policies:
        kinds[p.resource] = _compile_resource_policy(
            p, defs, derived, data, errors, guard_rules, rule_refs, source.schemas
        )

    limits = _compile_limit_policies(source, defs, data, errors, kinds)

    country_of = None
    if "geoip" in data:
        country_of = _country_lookup(data, errors)

    if errors.items:
        raise PolicyErrors(errors.items)
    return PolicySet(
        kinds=kinds,
        rules=tuple(rule_refs),
        country_of=country_of,
        data=data,
        rule_count=len(rule_refs),
        route_mapping=source.route_mapping,
        route_mapping_file=source.route_mapping_file,
        limits=limits,
    )


def _scope_for(
    imports: Iterable[str],
    defs: Mapping[str, Definitions],
    local_vars: Mapping[str, Expr],
    data: Mapping[str, Any],
    errors: _Errors,
    own: Definitions | None = None,
) -> _Scope:
    constants: dict[str, Any] = {}
    variables: dict[str, Expr] = {}
    for name in imports:
        d = defs.get(name)
        if d is None:
            continue  # the loader reports unknown imports
        constants.update(d.constants)
        variables.update(d.variables)
    if own is not None:
        constants.update(own.constants)
        variables.update(own.variables)
    variables.update(local_vars)
    env = CelEnv(
        constants=constants,
        variables={k: v.source for k, v in variables.items()},
        data=data,
    )
    return _Scope(env, variables, errors)


def _compile_limit_policies(
    source: PolicySource,
    defs: Mapping[str, Definitions],
    data: Mapping[str, Any],
    errors: _Errors,
    kinds: Mapping[str, CompiledKind],
) -> dict[tuple[str, str], tuple[CompiledLimit, ...]]:
    """Each limit compiled once, then listed under every (kind, action) it covers."""
    out: dict[tuple[str, str], list[CompiledLimit]] = {}
    for lp in source.limit_policies:
        scope = _scope_for(lp.imports, defs, lp.variables, data, errors)
        for limit in lp.limits:
            for kind in limit.resources:
                if kind != WILDCARD and kind not in kinds:
                    errors.add(
                        f"limit `{limit.id}` names unknown resource kind `{kind}`", limit.location
                    )
            key = scope.compile_expr(limit.key, condition=False)
            cost = scope.compile_expr(limit.cost, condition=False) if limit.cost else None
            cond = scope.compile_condition(limit.condition)
            if key is None or (limit.cost is not None and cost is None):
                continue
            compiled = CompiledLimit(
                policy=lp.id,
                id=limit.id,
                key=key,
                limit=limit.limit,
                per_seconds=limit.per_seconds,
                capacity=limit.burst or limit.limit,
                cost=cost,
                condition=cond.fn,
                fail_open=limit.on_store_error == "allow",
            )
            covered = 0
            for kind_name, kind in kinds.items():
                if not _applies(limit.resources, kind_name):
                    continue
                for action in kind.actions:
                    if _applies(limit.actions, action):
                        out.setdefault((kind_name, action), []).append(compiled)
                        covered += 1
            if not covered and not any(k != WILDCARD and k not in kinds for k in limit.resources):
                errors.add(
                    f"limit `{limit.id}` covers no declared action of its resource kinds",
                    limit.location,
                )
    return {k: tuple(v) for k, v in out.items()}


def _compile_derived(def_id: str, role: DerivedRole, scope: _Scope) -> CompiledDerivedRole:
    fn, uses_time, text, reads, plan = scope.compile_condition(role.condition)
    return CompiledDerivedRole(
        name=role.name,
        definitions_id=def_id,
        parent_roles=_roles(role.parent_roles),
        condition=fn,
        source=text,
        uses_time=uses_time,
        per_action="action" in reads,
        plan=plan,
    )


def _applies(names: tuple[str, ...], name: str) -> bool:
    return WILDCARD in names or name in names


def _compile_resource_policy(
    p: ResourcePolicy,
    defs: Mapping[str, Definitions],
    derived: Mapping[str, Mapping[str, CompiledDerivedRole]],
    data: Mapping[str, Any],
    errors: _Errors,
    guard_rules: list[tuple[GuardPolicy, Any, CompiledRule]],
    rule_refs: list[RuleRef],
    schemas: Mapping[str, Any],
) -> CompiledKind:
    scope = _scope_for(p.imports, defs, p.variables, data, errors)
    for expr in p.variables.values():
        scope.compile_expr(expr, condition=False)

    visible_roles: dict[str, CompiledDerivedRole] = {}
    for name in p.imports:
        visible_roles.update(derived.get(name, {}))

    def derived_for(names: tuple[str, ...]) -> tuple[CompiledDerivedRole, ...]:
        out = []
        for n in names:
            role = visible_roles.get(n)
            if role is not None:  # an unknown name is the loader's error to report
                out.append(role)
        return tuple(out)

    compiled_rules: list[tuple[tuple[str, ...], CompiledRule]] = []
    for rule in p.rules:
        fn, uses_time, text, _reads, plan = scope.compile_condition(rule.condition)
        obligations = dict(rule.obligations)
        compiled_rules.append(
            (
                rule.actions,
                CompiledRule(
                    policy=p.id,
                    id=rule.id,
                    stage=rule.effect,
                    roles=_roles(rule.roles),
                    derived_roles=derived_for(rule.derived_roles),
                    condition=fn,
                    reason=rule.reason,
                    obligations=obligations,
                    condition_source=text,
                    uses_time=uses_time,
                    derived_only=rule.roles is None and bool(rule.derived_roles),
                    decision=_decision(p.id, rule.id, rule.effect, rule.reason, obligations),
                    plan=plan,
                ),
            )
        )
        rule_refs.append(RuleRef(p.id, rule.id, rule.effect, p.file, rule.location.line))

    cross: list[tuple[tuple[str, ...], CompiledRule]] = []
    for rule in p.cross_tenant:
        fn, uses_time, text, _reads, plan = scope.compile_condition(rule.condition)
        cross.append(
            (
                rule.actions,
                CompiledRule(
                    policy=p.id,
                    id=rule.id,
                    stage="cross_tenant",
                    roles=_roles(rule.roles),
                    derived_roles=derived_for(rule.derived_roles),
                    condition=fn,
                    reason=rule.reason,
                    condition_source=text,
                    uses_time=uses_time,
                    derived_only=rule.roles is None and bool(rule.derived_roles),
                    plan=plan,
                ),
            )
        )
        rule_refs.append(RuleRef(p.id, rule.id, "cross_tenant", p.file, rule.location.line))

    actions: dict[str, CompiledAction] = {}
    no_rule = ActionDecision(effect=DENY, policy=p.id, reasons=(NO_MATCHING_RULE,))  # shared
    for name, spec in p.actions.items():
        guards = tuple(
            c
            for _g, rule, c in guard_rules
            if _applies(rule.resources, p.resource) and _applies(rule.actions, name)
        )
        mine = [c for acts, c in compiled_rules if _applies(acts, name)]
        denies = tuple(c for c in mine if c.stage == "deny")
        allows = tuple(c for c in mine if c.stage == "allow")
        ct = tuple(c for acts, c in cross if _applies(acts, name))
        every = (*guards, *denies, *allows, *ct)
        uses_time = any(_reads_clock(c) for c in every)
        actions[name] = CompiledAction(
            name=name,
            scopes=frozenset(spec.scopes),
            scope_list=tuple(sorted(spec.scopes)),
            cross_tenant=ct,
            guards=guards,
            denies=denies,
            allows=allows,
            uses_time=uses_time,
            no_rule=no_rule,
            cross_tenant_uses_time=any(_reads_clock(c) for c in ct),
        )
    return CompiledKind(
        kind=p.resource,
        policy=p.id,
        tenancy=p.tenancy,
        actions=actions,
        schemas=_kind_schemas(p, schemas, errors),
    )


def _reads_clock(rule: CompiledRule) -> bool:
    return rule.uses_time or any(r.uses_time for r in rule.derived_roles)


def _kind_schemas(p: ResourcePolicy, schemas: Mapping[str, Any], errors: _Errors) -> Any:
    refs = p.schemas
    if refs is None:
        return None
    from .schemas import compile_kind_schemas  # with fastjsonschema: only for schemas

    try:
        return compile_kind_schemas(
            (refs.principal, refs.resource, refs.context), schemas, refs.enforcement == "reject"
        )
    except Exception as e:  # the loader compiled them already; a surprise is still an error
        errors.add(f"schemas of `{p.resource}` cannot be compiled: {e}", refs.location)
        return None


def _country_lookup(data: Mapping[str, Any], errors: _Errors) -> Any:
    """Resolve context.country from the bundle's geo table with the CEL `country()` function."""
    try:
        compiled = compile_cel("country(context.ip)", CelEnv(data=data))
    except CelCompileError as err:
        errors.add(f"geo data cannot be used: {err.message}", None)
        return None

    def country_of(ip: str) -> str:
        try:
            value = compiled({"context": {"ip": ip}})
        except Exception:
            return ""
        return value if isinstance(value, str) else ""

    return country_of

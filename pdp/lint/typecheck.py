"""Runs the CEL type checker over every expression, in the environment where it runs.

A resource policy's rules, crossTenant exceptions and local variables are checked with the
policy's schemas; the derived roles it uses with the same schemas in their Definitions'
environment; each guard rule and each rate limit once per kind it applies to, with that kind's
schemas. Every expression is also checked once without schemas, so an unused variable with a
typo is caught too. The same finding reached from several places is reported once.

A limit's key and cost must also have a type that counts right (`_KEY`, `_COST`): a cost of
another type denies every call the limit covers, at run time, with `rate_limit_error`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from pdp.cel import (
    NOT_CONST,
    CelCompileError,
    CheckIssue,
    TypeEnv,
    check_cel,
    is_list_literal,
    may_be,
    may_be_list_of,
    names_used,
    type_from_schema,
    untyped_attributes,
)
from pdp.cel import CelStaticType as T
from pdp.errors import SourceLocation
from pdp.lint._report import Reporter
from pdp.model.policy import (
    WILDCARD,
    Condition,
    ConditionGroup,
    Definitions,
    Expr,
    Limit,
    LimitPolicy,
    PolicySource,
    ResourcePolicy,
    Suppression,
)

_NEVER, _ALWAYS = False, True


class _Want(NamedTuple):
    """The result types an expression must be able to have, and the finding when it cannot."""

    code: str
    what: str
    types: tuple[str, ...]
    lists: bool = False  # a list of those types will do too


# A key names a bucket: `null` errors; a map, list or double would be spelled in several ways
# (key order, `1` and `1.0`) that count apart, and a bool puts every caller in one of two
# buckets. A list written out (`[P.tenant, actor.id]`) of strings and ints is a composite key:
# its order is the author's, and no two parts can blur, where `P.tenant + "/" + actor.id`
# gives tenant `a/b`, actor `c` the bucket of tenant `a`, actor `b/c`.
_KEY = _Want(
    "PDP126",
    "a rate-limit key must be a `string`, an `int` or a list of them written out (`[a, b]`)",
    ("string", "int", "uint"),
    lists=True,
)
# The engine takes a whole number >= 0, of either CEL number type.
_COST = _Want("PDP127", "a rate-limit cost must be a number", ("int", "uint", "double"))
# Past this many characters a type is cut short in messages.
_SHOWN = 60


def _may_be_wanted(t: T, want: _Want, source: str) -> bool:
    if may_be(t, *want.types):
        return True
    return want.lists and is_list_literal(source) and may_be_list_of(t, *want.types)


@dataclass
class _Scope:
    env: TypeEnv
    variables: Mapping[str, Expr]  # where each variable's source is written
    suppress: Sequence[Suppression]
    # The schema-less pass over what is also checked with schemas: PDP205 ("no declared
    # type") belongs to those passes, not to this one.
    typed_elsewhere: bool = False


class _Types:
    def __init__(self, source: PolicySource, out: Reporter) -> None:
        self.source = source
        self.out = out
        self.defs = {d.id: d for d in source.definitions}
        self.data = dict(source.data)
        # Per set of schema names: every condition of a kind is checked in a scope of the same
        # types, which converting the schemas again for each (a fifth of the validator's time
        # on the example policies) only rebuilt. The types are never changed once built.
        self._schema_types: dict[tuple[str | None, ...], tuple[T, T, T]] = {}

    def schema_types(self, p: ResourcePolicy | None) -> tuple[T, T, T]:
        if p is None or p.schemas is None:
            return untyped_attributes(), untyped_attributes(), untyped_attributes()
        names = (p.schemas.principal, p.schemas.resource, p.schemas.context)
        known = self._schema_types.get(names)
        if known is not None:
            return known
        out = []
        for name in names:
            s = self.source.schemas.get(name) if name else None
            out.append(type_from_schema(s.schema, s.schema, s.file) if s else untyped_attributes())
        known = self._schema_types[names] = (out[0], out[1], out[2])
        return known

    def scope(
        self,
        imports: Iterable[str],
        local: Mapping[str, Expr],
        kind: ResourcePolicy | None,
        suppress: Sequence[Suppression],
        own: Definitions | None = None,
    ) -> _Scope:
        constants: dict[str, Any] = {}
        variables: dict[str, Expr] = {}
        for name in imports:
            d = self.defs.get(name)
            if d is not None:
                constants.update(d.constants)
                variables.update(d.variables)
        if own is not None:
            constants.update(own.constants)
            variables.update(own.variables)
        variables.update(local)
        pa, ra, ca = self.schema_types(kind)
        env = TypeEnv(
            principal_attr=pa,
            resource_attr=ra,
            context_attr=ca,
            constants=constants,
            data=self.data,
            variables={k: v.source for k, v in variables.items()},
        )
        return _Scope(env, variables, suppress)

    # -- expressions -----------------------------------------------------------------------------

    def expr(
        self,
        scope: _Scope,
        expr: Expr,
        suppress: Sequence[Suppression],
        *,
        condition: bool,
        want: _Want | None = None,
    ) -> Any:
        """Check one expression; its constant value (or NOT_CONST)."""
        try:
            result = check_cel(expr.source, scope.env, condition=condition)
        except (CelCompileError, RecursionError):
            return NOT_CONST  # compile_policy_set reports it
        issues = list(result.issues)
        # Schemas only narrow types: what the schema-less pass would refuse, the passes with
        # schemas refuse too (naming the type as the schema does).
        if (
            want
            and not scope.typed_elsewhere
            and not _may_be_wanted(result.type, want, expr.source)
        ):
            shown = result.type.show()
            if len(shown) > _SHOWN:  # `list(list(...` a hostile author nested 400 deep
                shown = shown[: _SHOWN - 3] + "..."
            message = f"{want.what}, this is `{shown}`"
            issues.append(CheckIssue(want.code, message, result.line, result.column))
        # Issues inside variables: reported at the variable's own text.
        issues.extend(scope.env.variable_issues())
        for issue in issues:
            if scope.typed_elsewhere and issue.code == "PDP205":
                continue
            self.report(scope, expr, issue, suppress)
        return result.const

    def variable(self, scope: _Scope, name: str, suppress: Sequence[Suppression]) -> None:
        """Check a variable as `V.name`, so its issues are the ones every user reports."""
        where = scope.variables[name]
        self.expr(scope, Expr(f"V.{name}", where.location), suppress, condition=False)

    def report(
        self, scope: _Scope, expr: Expr, issue: CheckIssue, suppress: Sequence[Suppression]
    ) -> None:
        where = expr
        sup = [*suppress, *scope.suppress]
        if issue.variable is not None:
            where = scope.variables.get(issue.variable, expr)
        self.out.add(issue.code, _message(issue), self.location(where, issue), sup)

    def location(self, expr: Expr, issue: CheckIssue) -> SourceLocation:
        """Where a position inside an expression is in its file, following block scalars
        (`>-` folds lines into one; `|` keeps them) by walking the file's own lines."""
        loc = expr.location
        lines = expr.source.split("\n")
        line = min(max(issue.line, 1), len(lines))
        offset = sum(len(x) + 1 for x in lines[: line - 1]) + issue.column - 1
        raw = self.source.files.get(loc.file)
        if raw is None:
            return _location(expr, issue)
        text = raw.decode("utf-8-sig", errors="replace").splitlines()
        row, col = loc.line, loc.column
        # A block scalar (`|`, `>`) starts its own line: its lines share that indentation, and
        # more-indented lines keep the extra spaces in the expression. A plain or quoted
        # scalar continues on lines whose leading spaces are folded away.
        first = text[row - 1] if row - 1 < len(text) else ""
        block = not first[: col - 1].strip()
        while row - 1 < len(text):
            body = text[row - 1][col - 1 :]
            if offset <= len(body) or row == len(text):
                return SourceLocation(loc.file, row, col + offset)
            offset -= len(body) + 1
            row += 1
            nxt = text[row - 1] if row - 1 < len(text) else ""
            col = loc.column if block else len(nxt) - len(nxt.lstrip(" ")) + 1
        return _location(expr, issue)

    def condition(
        self, scope: _Scope, cond: Condition | None, suppress: Sequence[Suppression]
    ) -> Any:
        if cond is None:
            return NOT_CONST
        if isinstance(cond, Expr):
            return self.expr(scope, cond, suppress, condition=True)
        assert isinstance(cond, ConditionGroup)
        values = [self.condition(scope, c, suppress) for c in cond.items]
        if cond.op == "all":
            if any(v is False for v in values):
                return False
            return True if all(v is True for v in values) else NOT_CONST
        any_ = (
            True
            if any(v is True for v in values)
            else (False if all(v is False for v in values) else NOT_CONST)
        )
        if cond.op == "any":
            return any_
        return (not any_) if isinstance(any_, bool) else NOT_CONST

    def constant_condition(
        self,
        value: Any,
        what: str,
        location: SourceLocation,
        suppress: Sequence[Suppression],
        cond: Condition | None = None,
    ) -> None:
        # Why, when it is not written out: the constants fold (`size(C.admins) == 0`).
        why = " once its constants are substituted" if _names_constants(cond) else ""
        if value is False:
            self.out.add(
                "PDP108",
                f"{what} can never match: its condition is always false{why}",
                location,
                suppress,
            )
        elif value is True:
            self.out.add(
                "PDP203",
                f"the condition of {what} is always true{why}; remove it",
                location,
                suppress,
            )

    # -- policies --------------------------------------------------------------------------------

    def run(self) -> None:
        src = self.source
        for d in src.definitions:
            scope = self.scope([], {}, None, d.suppress, own=d)
            scope.typed_elsewhere = bool(self._importers(d))
            for name in d.variables:
                self.variable(scope, name, d.suppress)
            for role in d.derived_roles.values():
                self.derived_role(scope, d, role)
        for g in src.guard_policies:
            for _, scope in self.per_kind(g.imports, g.variables, ("*",), g.suppress):
                for name in g.variables:
                    self.variable(scope, name, [])
            for rule in g.rules:
                for kind, scope in self.per_kind(
                    g.imports, g.variables, rule.resources, g.suppress
                ):
                    value = self.condition(scope, rule.condition, rule.suppress)
                    if kind is None:
                        self.constant_condition(
                            value,
                            f"guard rule `{rule.id}`",
                            rule.location,
                            [*rule.suppress, *g.suppress],
                            rule.condition,
                        )
        for lp in src.limit_policies:
            self.limit_policy(lp)
        for p in src.resource_policies:
            scope = self.scope(p.imports, p.variables, p, p.suppress)
            for name in p.variables:
                self.variable(scope, name, [])
            for rule in p.rules:
                value = self.condition(scope, rule.condition, rule.suppress)
                self.constant_condition(
                    value,
                    f"rule `{rule.id}`",
                    rule.location,
                    [*rule.suppress, *p.suppress],
                    rule.condition,
                )
            for cross in p.cross_tenant:
                value = self.condition(scope, cross.condition, cross.suppress)
                self.constant_condition(
                    value,
                    f"crossTenant exception `{cross.id}`",
                    cross.location,
                    [*cross.suppress, *p.suppress],
                    cross.condition,
                )
            if p.schemas is not None:
                # The derived roles this kind uses, in their own Definitions, typed by its schemas.
                used = {n for r in (*p.rules, *p.cross_tenant) for n in r.derived_roles}
                for name in p.imports:
                    d = self.defs.get(name)
                    if d is None:
                        continue
                    dscope = self.scope([], {}, p, d.suppress, own=d)
                    for role in d.derived_roles.values():
                        if role.name in used:
                            self.derived_role(dscope, d, role, constant=False)

    def per_kind(
        self,
        imports: Iterable[str],
        local: Mapping[str, Expr],
        resources: tuple[str, ...],
        suppress: Sequence[Suppression],
    ) -> Iterable[tuple[ResourcePolicy | None, _Scope]]:
        """The scopes of what runs for several kinds: without schemas, then with each of the
        `resources` kinds' schemas."""
        kinds = self._kinds_of(resources)
        for kind in [None, *kinds]:
            scope = self.scope(imports, local, kind, suppress)
            scope.typed_elsewhere = kind is None and bool(kinds)
            yield kind, scope

    def limit_policy(self, lp: LimitPolicy) -> None:
        # The variables run for every kind a limit of the policy covers.
        every = tuple(k for limit in lp.limits for k in limit.resources)
        for _, scope in self.per_kind(lp.imports, lp.variables, every, lp.suppress):
            for name in lp.variables:
                self.variable(scope, name, [])
        for limit in lp.limits:
            for kind, scope in self.per_kind(
                lp.imports, lp.variables, limit.resources, lp.suppress
            ):
                self.limit(scope, limit, constant=kind is None, policy_suppress=lp.suppress)

    def limit(
        self,
        scope: _Scope,
        limit: Limit,
        *,
        constant: bool,
        policy_suppress: Sequence[Suppression] = (),
    ) -> None:
        sup = limit.suppress
        self.expr(scope, limit.key, sup, condition=False, want=_KEY)
        if limit.cost is not None:
            self.expr(scope, limit.cost, sup, condition=False, want=_COST)
        value = self.condition(scope, limit.condition, sup)
        if constant:
            self.constant_condition(
                value,
                f"limit `{limit.id}`",
                limit.location,
                [*sup, *policy_suppress],
                limit.condition,
            )

    def derived_role(
        self, scope: _Scope, d: Definitions, role: Any, *, constant: bool = True
    ) -> None:
        sup = [*role.suppress, *d.suppress]
        value = self.condition(scope, role.condition, sup)
        if constant:
            self.constant_condition(
                value, f"derived role `{role.name}`", role.location, sup, role.condition
            )

    def _importers(self, d: Definitions) -> list[ResourcePolicy]:
        return [p for p in self.source.resource_policies if d.id in p.imports and p.schemas]

    def _kinds_of(self, resources: tuple[str, ...]) -> list[ResourcePolicy]:
        return [
            p
            for p in self.source.resource_policies
            if p.schemas and (WILDCARD in resources or p.resource in resources)
        ]


def _names_constants(cond: Condition | None) -> bool:
    if isinstance(cond, Expr):
        try:
            return any(kind == "C" for kind, _ in names_used(cond.source))
        except (CelCompileError, RecursionError):
            return False
    if isinstance(cond, ConditionGroup):
        return any(_names_constants(c) for c in cond.items)
    return False


def _message(issue: CheckIssue) -> str:
    if issue.variable is not None:
        return f"in variable `{issue.variable}`: {issue.message}"
    return issue.message


def _location(expr: Expr, issue: CheckIssue) -> SourceLocation:
    loc = expr.location
    if issue.line <= 1:
        return SourceLocation(loc.file, loc.line, loc.column + issue.column - 1)
    return SourceLocation(loc.file, loc.line + issue.line - 1, loc.column + issue.column - 1)


def check_types(source: PolicySource, out: Reporter) -> None:
    _Types(source, out).run()

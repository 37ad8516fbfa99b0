"""The compiled, immutable policy set: what the engine decides with.

Everything is resolved at build time — imports, derived roles, guard applicability, wildcard
actions — into one flat table `kind -> action -> CompiledAction`, so a decision touches only
the rules that can apply to its kind and action, however many other policies are loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pdp.model.decision import ActionDecision

if TYPE_CHECKING:
    from .limits import CompiledLimit

# A compiled condition: called with the activation, returns True/False or raises on error.
CondFn = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class CondSource:
    """A condition as the query planner (`pdp.plan`) reads it: CEL source with the environment
    it was compiled in (constants, variables, data), or an all/any/none group of conditions.
    The source and the environment are kept rather than an AST: both exist anyway, and the
    planner parses (and caches) only the conditions it is asked about."""

    op: str  # cel | all | any | none
    source: str = ""
    env: Any = None  # the CelEnv
    items: tuple[CondSource, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledDerivedRole:
    name: str
    definitions_id: str
    parent_roles: frozenset[str] | None  # None = any principal
    condition: CondFn | None
    source: str = ""
    uses_time: bool = False
    # Its condition reads `action`: it may hold for one action and not another, so it is
    # evaluated per action instead of once per resource.
    per_action: bool = False
    plan: CondSource | None = None  # the condition, for the query planner


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to run. `stage` is guard | deny | allow | cross_tenant."""

    policy: str
    id: str
    stage: str
    roles: frozenset[str] | None  # None = any principal (no roles, or "*")
    derived_roles: tuple[CompiledDerivedRole, ...]
    condition: CondFn | None
    reason: str = ""
    obligations: Mapping[str, Any] = field(default_factory=dict)
    condition_source: str = ""
    uses_time: bool = False
    # True when the rule names derived roles but no plain roles: then only they can match.
    derived_only: bool = False
    # What the rule decides when it matches cleanly (no errors, no trace): made once, shared.
    decision: ActionDecision | None = None
    plan: CondSource | None = None  # the condition, for the query planner
    # No roles and no derived roles: every principal qualifies (a field, read per rule per call).
    any_principal: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "any_principal", self.roles is None and not self.derived_roles)


# Between how many rules of one stage (cross-tenant exceptions, guards, deny rules, allow
# rules) of an action the engine looks at the stop time: a condition with a comprehension or a
# `matches` checks it itself, but one without (`==` of two request lists, `+` of strings) runs
# to its end, and a long chain of them must not. A stage of up to this many reads no clock.
RULES_PER_CLOCK_READ = 8


@dataclass(frozen=True, slots=True)
class CompiledAction:
    name: str
    scopes: frozenset[str]
    scope_list: tuple[str, ...]  # sorted, for messages
    cross_tenant: tuple[CompiledRule, ...]
    guards: tuple[CompiledRule, ...]
    denies: tuple[CompiledRule, ...]
    allows: tuple[CompiledRule, ...]
    uses_time: bool
    no_rule: ActionDecision  # the default deny, made once
    # Whether a cross-tenant exception may read the clock: a tenant mismatch read it only then.
    cross_tenant_uses_time: bool = True
    # A stage longer than RULES_PER_CLOCK_READ: the engine reads the stop time between its
    # rules (`Engine._first_match_watched`). Set once here, so the usual action pays nothing.
    long_stages: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        stages = (self.cross_tenant, self.guards, self.denies, self.allows)
        long = any(len(rules) > RULES_PER_CLOCK_READ for rules in stages)
        object.__setattr__(self, "long_stages", long)


@dataclass(frozen=True, slots=True)
class CompiledKind:
    kind: str
    policy: str
    tenancy: str  # tenant | global
    actions: Mapping[str, CompiledAction]
    # Attribute schemas checked before any rule (None: the policy names none).
    schemas: Any = None  # pdp.engine.schemas.KindSchemas


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A rule as the coverage report names it."""

    policy: str
    rule: str
    stage: str
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class PolicySet:
    kinds: Mapping[str, CompiledKind]
    rules: tuple[RuleRef, ...]  # every rule, for coverage
    # Resolves context.country from the bundle's geo data; None when there is no table.
    country_of: Callable[[str], str] | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    rule_count: int = 0
    # The gateway's HTTP mapping document, versioned with the policies (pdp.gateway reads it).
    route_mapping: Mapping[str, Any] | None = None
    route_mapping_file: str = ""
    # Rate limits by (kind, action), wildcards resolved: empty when the bundle has none.
    limits: Mapping[tuple[str, str], tuple[CompiledLimit, ...]] = field(default_factory=dict)

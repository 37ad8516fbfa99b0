"""The policy model: plain frozen values produced by the loader, consumed by the compiler.

Every element that an author wrote keeps its `SourceLocation`, so errors found later (a CEL
error, an undefined variable) still point at the text. See docs/POLICY_FORMAT.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pdp.errors import SourceLocation

if TYPE_CHECKING:
    from pdp.model.testsuite import TestSuite

API_VERSION = "pdp/v1"
WILDCARD = "*"

Tenancy = Literal["tenant", "global"]
RuleEffect = Literal["allow", "deny"]


@dataclass(frozen=True, slots=True)
class Expr:
    """A CEL expression as written; `location` is where its first character sits in the file."""

    source: str
    location: SourceLocation


@dataclass(frozen=True, slots=True)
class ConditionGroup:
    op: Literal["all", "any", "none"]
    items: tuple[Condition, ...]
    location: SourceLocation


Condition = Expr | ConditionGroup


@dataclass(frozen=True, slots=True)
class Suppression:
    """`suppress: [{code: PDP109, reason: "..."}]`: silence one finding code, with why."""

    code: str
    reason: str
    location: SourceLocation


@dataclass(frozen=True, slots=True)
class SchemaRefs:
    """`schemas:` of a resource policy: JSON Schema files (under `schemas/`) for attributes.

    `enforcement` decides what a request whose attributes break a schema gets: `deny` (the
    action is denied with reason `schema_violation`) or `reject` (INVALID_ARGUMENT).
    """

    principal: str | None
    resource: str | None
    context: str | None
    enforcement: Literal["deny", "reject"]
    location: SourceLocation
    positions: dict[str, SourceLocation] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Schema:
    """A JSON Schema file of the bundle (`schemas/<name>.json`), already checked at load."""

    name: str  # path relative to `schemas/`
    file: str
    schema: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    scopes: tuple[str, ...]
    location: SourceLocation


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    actions: tuple[str, ...]  # may contain "*"
    effect: RuleEffect
    location: SourceLocation
    roles: tuple[str, ...] | None = None  # None = any principal; may contain "*"
    derived_roles: tuple[str, ...] = ()
    condition: Condition | None = None
    reason: str = ""
    obligations: dict[str, Any] = field(default_factory=dict)
    suppress: tuple[Suppression, ...] = ()
    # Where fields were written (`roles`, `actions[0]`, ...), for findings.
    positions: dict[str, SourceLocation] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class CrossTenantRule:
    """An audited exception to tenant isolation: when it matches, the tenant check passes."""

    id: str
    actions: tuple[str, ...]
    location: SourceLocation
    roles: tuple[str, ...] | None = None
    derived_roles: tuple[str, ...] = ()
    condition: Condition | None = None
    reason: str = ""
    # Deliberately open to every tenant's principals (no roles, no condition): must say so.
    unconditional: bool = False
    suppress: tuple[Suppression, ...] = ()
    positions: dict[str, SourceLocation] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class ResourcePolicy:
    id: str
    resource: str
    file: str
    location: SourceLocation
    actions: dict[str, ActionSpec]
    rules: tuple[Rule, ...]
    tenancy: Tenancy = "tenant"
    imports: tuple[str, ...] = ()
    variables: dict[str, Expr] = field(default_factory=dict)
    cross_tenant: tuple[CrossTenantRule, ...] = ()
    description: str = ""
    schemas: SchemaRefs | None = None
    suppress: tuple[Suppression, ...] = ()
    import_locations: tuple[SourceLocation, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class GuardRule:
    id: str
    resources: tuple[str, ...]  # kinds, may contain "*"
    actions: tuple[str, ...]  # may contain "*"
    reason: str
    location: SourceLocation
    roles: tuple[str, ...] | None = None
    condition: Condition | None = None  # when it holds, the request is denied
    suppress: tuple[Suppression, ...] = ()
    positions: dict[str, SourceLocation] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    id: str
    file: str
    location: SourceLocation
    rules: tuple[GuardRule, ...]
    imports: tuple[str, ...] = ()
    variables: dict[str, Expr] = field(default_factory=dict)
    description: str = ""
    suppress: tuple[Suppression, ...] = ()
    import_locations: tuple[SourceLocation, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate limit or quota: a token bucket per value of `key`, for some kinds and actions.

    `limit` units flow back into the bucket every `per_seconds`; the bucket holds at most
    `burst` (default `limit`). An allowed action takes `cost` units (default 1) or is denied
    `rate_limited`.
    """

    id: str
    resources: tuple[str, ...]  # kinds, may contain "*"
    actions: tuple[str, ...]  # may contain "*"
    key: Expr
    limit: int
    per_seconds: float
    location: SourceLocation
    burst: int | None = None
    cost: Expr | None = None
    condition: Condition | None = None  # counted only when it holds
    on_store_error: Literal["deny", "allow"] = "deny"
    description: str = ""
    suppress: tuple[Suppression, ...] = ()


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    id: str
    file: str
    location: SourceLocation
    limits: tuple[Limit, ...]
    imports: tuple[str, ...] = ()
    variables: dict[str, Expr] = field(default_factory=dict)
    description: str = ""
    suppress: tuple[Suppression, ...] = ()
    import_locations: tuple[SourceLocation, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class DerivedRole:
    name: str
    parent_roles: tuple[str, ...]  # may contain "*"
    location: SourceLocation
    condition: Condition | None = None
    suppress: tuple[Suppression, ...] = ()


@dataclass(frozen=True, slots=True)
class Definitions:
    id: str
    file: str
    location: SourceLocation
    constants: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Expr] = field(default_factory=dict)
    derived_roles: dict[str, DerivedRole] = field(default_factory=dict)
    description: str = ""
    constant_locations: dict[str, SourceLocation] = field(default_factory=dict, compare=False)
    suppress: tuple[Suppression, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Everything loaded from one policy directory (or bundle), before compilation."""

    resource_policies: tuple[ResourcePolicy, ...] = ()
    guard_policies: tuple[GuardPolicy, ...] = ()
    limit_policies: tuple[LimitPolicy, ...] = ()
    definitions: tuple[Definitions, ...] = ()
    test_suites: tuple[TestSuite, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)  # data.<stem>
    route_mapping: dict[str, Any] | None = None  # the gateway mapping document, as loaded
    route_mapping_file: str = ""
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> content
    schemas: dict[str, Schema] = field(default_factory=dict)  # name under schemas/ -> schema

"""The planner: which resources of a kind may this principal act on?

`plan(engine, request)` runs Check's decision order with the resource unknown:

    tenant isolation  -> resource.tenant == principal tenant, or (a tenant is set and a
                         cross-tenant exception matches)
    scopes            -> known from the principal: ALWAYS_DENIED when one is missing
    guards, denies    -> each rule negated: the resource passes only where its condition is
                         false (an error matches a deny rule, so it is excluded too)
    allow rules       -> a disjunction: a resource is let in only where a condition is true
    default           -> deny

so the filter holds for a resource exactly when Check would allow it. A condition that cannot
be planned exactly makes the whole plan refuse (`PlanRefused`), never approximate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pdp.cel import NEVER, STOP_AT, Deadline, Interrupted
from pdp.engine import DeadlineExceeded, Engine, new_decision_id
from pdp.engine.compiled import CompiledAction, CompiledKind, CompiledRule
from pdp.errors import RequestError
from pdp.model import decision as d
from pdp.model.decision import ActionDecision, BundleInfo, CheckResponse, ResourceDecision
from pdp.model.request import DEFAULT_LIMITS, CheckRequest, Limits, parse_check_request

from . import tree as t
from .partial import NoResource, Partial, Pred, Unplannable
from .schemas import SchemaDenied, schema_filter
from .tree import FALSE, TRUE, Formula, and_, atom, not_, or_

PLAN_VERSION = 1
ALWAYS_ALLOWED = "ALWAYS_ALLOWED"
ALWAYS_DENIED = "ALWAYS_DENIED"
CONDITIONAL = "CONDITIONAL"


class PlanRefused(Exception):
    """The policies cannot be turned into an exact filter for this request."""

    code = "plan_refused"

    def __init__(self, message: str, policy: str = "", rule: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.policy = policy
        self.rule = rule

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "policy": self.policy,
                "rule": self.rule,
            }
        }


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """A validated plan request: the principal and context exactly as Check sees them."""

    check: CheckRequest  # principal, context, time, roles, scopes (its one resource unused)
    kind: str
    action: str
    tenant: str | None = None  # the resource tenant, when the caller fixes it

    @property
    def principal(self) -> dict[str, Any]:
        return self.check.principal

    @property
    def request_id(self) -> str:
        return self.check.request_id


_PLAN_KEYS = frozenset({"request_id", "requestId", "principal", "resource", "action", "context"})
_RESOURCE_KEYS = frozenset({"kind", "tenant"})


def parse_plan_request(obj: Any, limits: Limits = DEFAULT_LIMITS) -> PlanRequest:
    """Validate `{principal, resource: {kind, tenant?}, action, context?, request_id?}`;
    `RequestError` names the bad field."""
    if not isinstance(obj, Mapping):
        raise RequestError("request", "must be an object")
    for k in obj:
        if k not in _PLAN_KEYS:
            raise RequestError(str(k)[:64] or "request", f"unknown field `{str(k)[:64]}`")
    res = obj.get("resource")
    if not isinstance(res, Mapping):
        raise RequestError("resource", "must be an object with `kind`")
    for k in res:
        if k not in _RESOURCE_KEYS:
            raise RequestError(
                f"resource.{str(k)[:64]}", "unknown field (a plan takes `kind` and `tenant`)"
            )
    kind = res.get("kind")
    if not isinstance(kind, str) or not kind:
        raise RequestError("resource.kind", "must be a non-empty string")
    tenant = res.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise RequestError("resource.tenant", "must be a string")
    action = obj.get("action")
    if not isinstance(action, str) or not action:
        raise RequestError("action", "must be a non-empty string")
    # The principal and context go through Check's own validation, with a stand-in resource.
    body: dict[str, Any] = {
        "principal": obj.get("principal"),
        "resources": [{"kind": kind, "id": "*", "tenant": tenant, "actions": [action]}],
    }
    if obj.get("context") is not None:
        body["context"] = obj["context"]
    rid = obj.get("request_id", obj.get("requestId"))
    if rid is not None:
        body["request_id"] = rid
    try:
        check = parse_check_request(body, limits)
    except RequestError as e:
        if e.field.startswith("resources[0]."):
            name = e.field.removeprefix("resources[0].")
            field = "action" if name.startswith("actions") else f"resource.{name}"
            raise type(e)(field, e.message) from None
        raise
    return PlanRequest(check=check, kind=kind, action=action, tenant=tenant)


@dataclass(frozen=True, slots=True)
class Plan:
    kind: str  # ALWAYS_ALLOWED | ALWAYS_DENIED | CONDITIONAL
    resource_kind: str
    action: str
    filter: Formula
    reason: str = ""  # why ALWAYS_DENIED
    message: str = ""
    policy: str = ""  # the deciding policy/rule of an ALWAYS_DENIED, when one rule decides
    rule: str = ""
    plan_id: str = ""
    request_id: str = ""
    bundle: BundleInfo | None = None
    evaluated_at: str = ""
    time_dependent: bool = False
    principal_id: str = field(default="", compare=False)

    @property
    def cel(self) -> str:
        return t.to_cel(self.filter)

    def as_response(self) -> CheckResponse:
        """The plan as the decision log records a decision: one result for the kind, id `*`,
        whose effect is `deny` when ALWAYS_DENIED and `allow` otherwise, and whose first
        reason names the plan's kind (`plan_always_allowed`, `plan_always_denied`,
        `plan_conditional`), then the denial's reason."""
        effect = d.DENY if self.kind == ALWAYS_DENIED else d.ALLOW
        reasons = (f"plan_{self.kind.lower()}",) + ((self.reason,) if self.reason else ())
        decision = ActionDecision(effect=effect, policy=self.policy, rule=self.rule,
                                  reasons=reasons, message=self.message)  # fmt: skip
        return CheckResponse(
            request_id=self.request_id,
            decision_id=self.plan_id,
            bundle=self.bundle or BundleInfo(name="local", version="0.0.0", revision=""),
            results=(ResourceDecision(self.resource_kind, "*", {self.action: decision}),),
            evaluated_at=self.evaluated_at,
            time_dependent=self.time_dependent,
        )

    def matches(self, resource: Mapping[str, Any]) -> bool:
        """Does the filter hold for this resource dict {kind, id, tenant, attr}?"""
        return resource.get("kind") == self.resource_kind and t.holds(self.filter, resource)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "planVersion": PLAN_VERSION,
            "planId": self.plan_id,
            "requestId": self.request_id,
            "kind": self.kind,
            "resourceKind": self.resource_kind,
            "action": self.action,
            "filter": t.to_json(self.filter),
            "cel": self.cel,
            "evaluatedAt": self.evaluated_at,
            "timeDependent": self.time_dependent,
        }
        if self.kind == ALWAYS_DENIED:
            out["reason"] = self.reason
            out["message"] = self.message
            out["policy"] = self.policy
            out["rule"] = self.rule
        if self.bundle is not None:
            out["bundle"] = {
                "name": self.bundle.name,
                "version": self.bundle.version,
                "revision": self.bundle.revision,
                "digest": self.bundle.digest,
            }
        return out


class _Denied(Exception):
    def __init__(self, reason: str, message: str = "", policy: str = "", rule: str = "") -> None:
        self.reason, self.message, self.policy, self.rule = reason, message, policy, rule


_INF = math.inf


def plan(engine: Engine, request: PlanRequest, stop: Deadline | None = None) -> Plan:
    """Plan one (kind, action) for one principal. Raises `PlanRefused`, and
    `DeadlineExceeded` (0 of 0 decided) once `stop` passed: a plan runs the same conditions a
    Check does (their known parts), so it stops as a Check does, at CEL's charges and between
    rules, and a server's drain may bring `stop` forward while it runs."""
    now = request.check.time or datetime.now(UTC)
    base = {
        "resource_kind": request.kind,
        "action": request.action,
        "plan_id": new_decision_id(),
        "request_id": request.request_id,
        "bundle": engine.bundle,
        "evaluated_at": now.isoformat(),
        "principal_id": request.principal.get("id", ""),
    }
    try:
        formula, time_dependent = _plan(engine, request, now, stop or NEVER)
    except Interrupted:
        raise DeadlineExceeded(0, 0) from None
    except _Denied as e:
        return Plan(ALWAYS_DENIED, filter=FALSE, reason=e.reason, message=e.message,
                    policy=e.policy, rule=e.rule, **base)  # fmt: skip
    except Unplannable as e:
        raise PlanRefused(e.message) from None
    except PlanRefused:
        raise
    except Exception as e:  # a planner bug must not become a filter: refuse
        raise PlanRefused(f"internal error while planning: {type(e).__name__}") from None
    if formula == TRUE:
        kind = ALWAYS_ALLOWED
    elif formula == FALSE:
        kind = ALWAYS_DENIED
    else:
        kind = CONDITIONAL
    extra = {"reason": d.NO_MATCHING_RULE} if kind == ALWAYS_DENIED else {}
    return Plan(kind, filter=formula, time_dependent=time_dependent, **extra, **base)


def _plan(
    engine: Engine, request: PlanRequest, now: datetime, stop: Deadline
) -> tuple[Formula, bool]:
    ck = engine.policy_set.kinds.get(request.kind)
    if ck is None:
        raise _Denied(d.UNKNOWN_RESOURCE_KIND, f"no policy governs resource kind `{request.kind}`")
    action = ck.actions.get(request.action)
    if action is None:
        raise _Denied(
            d.UNKNOWN_ACTION,
            f"resource kind `{request.kind}` has no action `{request.action}`",
            ck.policy,
        )
    req = request.check
    context = req.context
    country_of = engine.policy_set.country_of
    if not context.get("country") and context.get("ip") and country_of is not None:
        context = {**context, "country": country_of(context["ip"])}
    act = {
        "principal": req.principal,
        "resource": NoResource(),
        "action": request.action,
        "context": context,
        "now": now,
        STOP_AT: stop,  # CEL's charges read it, as a Check's do
    }
    pe = Partial(act, request.kind, request.tenant)
    planner = _Rules(pe, req.roles, stop)

    # 0. Attribute schemas: Check refuses a resource that breaks them before any rule runs.
    schema_ok: Formula = TRUE
    if ck.schemas is not None:
        try:
            schema_ok = schema_filter(ck.schemas, req.principal, context)
        except SchemaDenied as e:
            raise _Denied(e.reason, e.message, ck.policy) from None

    # 1. Tenant isolation.
    tenant_ok: Formula = TRUE
    if ck.tenancy == "tenant":
        ptenant = req.principal["tenant"]
        if not ptenant:
            raise _Denied(d.MISSING_TENANT, "principal has no tenant", ck.policy)
        if request.tenant == "":
            raise _Denied(d.MISSING_TENANT, "resource has no tenant", ck.policy)
        exception = planner.any_match(action.cross_tenant, ck, deny=False)
        same = (
            atom("eq", t.TENANT, ptenant)
            if request.tenant is None
            else _const(request.tenant == ptenant)
        )
        has_tenant = not_(atom("eq", t.TENANT, "")) if request.tenant is None else TRUE
        tenant_ok = or_(same, and_(has_tenant, exception))
        if tenant_ok == FALSE:
            raise _Denied(
                d.TENANT_MISMATCH,
                f"principal tenant `{ptenant}` differs from resource tenant `{request.tenant}`",
                ck.policy,
            )

    # 2. Scopes.
    if action.scopes:
        missing = action.scopes - req.scopes
        if missing:
            raise _Denied(d.MISSING_SCOPE, f"principal lacks scope {_names(missing)}", ck.policy)
        if req.actor_scopes is not None:
            missing = action.scopes - req.actor_scopes
            if missing:
                raise _Denied(
                    d.ACTOR_MISSING_SCOPE, f"actor lacks scope {_names(missing)}", ck.policy
                )

    # 3. Guards and deny rules: a resource passes only where none matches.
    denied: list[Formula] = []
    for rule in (*action.guards, *action.denies):
        m = planner.match(rule, ck, deny=True)
        if m == TRUE:
            raise _Denied(rule.reason, f"rule `{rule.id}` matches every resource",
                          rule.policy, rule.id)  # fmt: skip
        denied.append(m)

    # 4. Allow rules: a resource is let in where one matches.
    allowed = planner.any_match(action.allows, ck, deny=False)
    if allowed == FALSE:
        raise _Denied(d.NO_MATCHING_RULE, "no allow rule can match", ck.policy)

    formula = and_(schema_ok, tenant_ok, not_(or_(*denied)), allowed)
    return _push_not(formula), _uses_time(action)


def _const(b: bool) -> Formula:
    return TRUE if b else FALSE


def _names(scopes: frozenset[str]) -> str:
    return ", ".join(f"`{s}`" for s in sorted(scopes))


def _uses_time(action: CompiledAction) -> bool:
    return action.uses_time


def _push_not(f: Formula) -> Formula:
    """Negations pushed down to atoms (De Morgan): `not` then only wraps atoms, which reads
    better and translates to SQL more directly."""
    if isinstance(f, t.Not):
        inner = f.item
        if isinstance(inner, t.And):
            return or_(*(_push_not(not_(x)) for x in inner.items))
        if isinstance(inner, t.Or):
            return and_(*(_push_not(not_(x)) for x in inner.items))
        if isinstance(inner, t.Not):
            return _push_not(inner.item)
        return f
    if isinstance(f, t.And):
        return and_(*(_push_not(x) for x in f.items))
    if isinstance(f, t.Or):
        return or_(*(_push_not(x) for x in f.items))
    return f


class _Rules:
    """Rule matching as `Engine._first_match` does it, as formulas."""

    def __init__(self, pe: Partial, roles: frozenset[str], stop: Deadline = NEVER) -> None:
        self.pe = pe
        self.roles = roles
        self._derived: dict[int, Pred] = {}
        self.stop = stop

    def any_match(
        self, rules: tuple[CompiledRule, ...], ck: CompiledKind, *, deny: bool
    ) -> Formula:
        return or_(*(self.match(r, ck, deny=deny) for r in rules))

    def match(self, rule: CompiledRule, ck: CompiledKind, *, deny: bool) -> Formula:
        """Where the rule matches: its principal test and its condition. For a deny rule an
        error matches (fail closed); for an allow rule it does not. Reads the stop time
        first: a plan is not a hot path, and a kind may hold hundreds of rules."""
        if self.stop.at < _INF and time.monotonic() >= self.stop.at:
            raise Interrupted
        try:
            who = self._principal(rule, deny=deny)
            if who == FALSE:
                return FALSE
            cond = self.pe.condition(rule.plan) if rule.condition is not None else None
        except Unplannable as e:
            where = f" at {e.line}:{e.column}" if e.line else ""
            raise PlanRefused(
                f"rule `{rule.policy}/{rule.id}`{where}: {e.message}", rule.policy, rule.id
            ) from None
        if cond is None:
            return who
        return and_(who, not_(cond.f) if deny else cond.t)

    def _principal(self, rule: CompiledRule, *, deny: bool) -> Formula:
        if rule.any_principal:
            return TRUE
        if not rule.derived_only:
            if rule.roles is None or not rule.roles.isdisjoint(self.roles):
                return TRUE
            if not rule.derived_roles:
                return FALSE
        held: list[Formula] = []
        for role in rule.derived_roles:
            if role.parent_roles is not None and role.parent_roles.isdisjoint(self.roles):
                continue
            if role.condition is None:
                return TRUE
            p = self._derived.get(id(role))
            if p is None:
                try:
                    p = self.pe.condition(role.plan)
                except Unplannable as e:
                    raise PlanRefused(
                        f"derived role `{role.name}`: {e.message}", rule.policy, rule.id
                    ) from None
                self._derived[id(role)] = p
            held.append(not_(p.f) if deny else p.t)
        return or_(*held)

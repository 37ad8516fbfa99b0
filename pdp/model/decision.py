"""What the engine answers: a decision per resource x action, with its diagnostics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Effect = Literal["allow", "deny"]
ALLOW: Effect = "allow"
DENY: Effect = "deny"

# Reason codes the engine itself produces (rules add their own `reason`).
TENANT_MISMATCH = "tenant_mismatch"
MISSING_TENANT = "missing_tenant"
MISSING_SCOPE = "missing_scope"
ACTOR_MISSING_SCOPE = "actor_missing_scope"
NO_MATCHING_RULE = "no_matching_rule"
UNKNOWN_RESOURCE_KIND = "unknown_resource_kind"
UNKNOWN_ACTION = "unknown_action"
CONDITION_ERROR = "condition_error"
CROSS_TENANT_EXCEPTION = "cross_tenant_exception"
INTERNAL_ERROR = "internal_error"
RATE_LIMITED = "rate_limited"
RATE_LIMIT_ERROR = "rate_limit_error"  # a limit's key or cost could not be evaluated
RATE_LIMIT_UNAVAILABLE = "rate_limit_unavailable"  # the counter store failed (fail closed)


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One step of an explained decision: what was considered and what it gave."""

    stage: str  # tenant | scope | guard | deny_rule | allow_rule | derived_role | default
    policy: str
    rule: str
    outcome: str  # matched | not_matched | error | skipped | passed | failed
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """A rate limit's bucket after this decision took from it (or was refused by it)."""

    id: str  # the limit
    policy: str  # its LimitPolicy
    limit: int  # units that flow back every window
    window_s: float
    remaining: int  # whole units left
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int = 0  # when exceeded: seconds until the call's cost fits
    exceeded: bool = False


@dataclass(frozen=True, slots=True)
class ActionDecision:
    effect: Effect
    policy: str = ""  # deciding policy id ("" when the engine itself decided)
    rule: str = ""  # deciding rule id
    reasons: tuple[str, ...] = ()
    obligations: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""  # human-readable: names the missing scope, the mismatched tenants...
    errors: tuple[str, ...] = ()  # CEL errors met while deciding (fail-closed)
    trace: tuple[TraceStep, ...] = ()
    # The rate limits that covered this action (see docs/RATE_LIMITS.md); empty when none did.
    limits: tuple[LimitStatus, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.effect == ALLOW


@dataclass(frozen=True, slots=True)
class ResourceDecision:
    kind: str
    id: str
    actions: Mapping[str, ActionDecision]


@dataclass(frozen=True, slots=True)
class BundleInfo:
    name: str
    version: str
    revision: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class CheckResponse:
    request_id: str
    decision_id: str
    bundle: BundleInfo
    results: tuple[ResourceDecision, ...]
    # The time the decision was made under (frozen or clock), useful for logs and caching.
    evaluated_at: str = ""
    # True when some condition read `now`/`context.time`: such decisions must not be cached
    # beyond their validity.
    time_dependent: bool = False
    # True when a rate limit took (or refused) quota: never answered from a cache.
    uses_quota: bool = False
    # The rate-limit takes this decision was granted (`pdp.engine.counters.Take`), which a
    # server gives back (`Engine.give_back`) when the call ends in an error and the decision
    # is never answered. Not part of the decision: not compared, shown or logged.
    spent: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by `pdp check`, the decision log and tests."""
        return {
            "request_id": self.request_id,
            "decision_id": self.decision_id,
            "bundle": {
                "name": self.bundle.name,
                "version": self.bundle.version,
                "revision": self.bundle.revision,
            },
            "results": [
                {
                    "kind": r.kind,
                    "id": r.id,
                    "actions": {a: action_decision_dict(d) for a, d in r.actions.items()},
                }
                for r in self.results
            ],
        }


def action_decision_dict(d: ActionDecision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "effect": d.effect,
        "policy": d.policy,
        "rule": d.rule,
        "reasons": list(d.reasons),
        "obligations": dict(d.obligations),
    }
    if d.message:
        out["message"] = d.message
    if d.errors:
        out["errors"] = list(d.errors)
    if d.limits:
        out["limits"] = [
            {
                "id": s.id,
                "policy": s.policy,
                "limit": s.limit,
                "window_s": s.window_s,
                "remaining": s.remaining,
                "reset_s": s.reset_s,
                **({"retry_after_s": s.retry_after_s, "exceeded": True} if s.exceeded else {}),
            }
            for s in d.limits
        ]
    if d.trace:
        out["trace"] = [
            {
                "stage": s.stage,
                "policy": s.policy,
                "rule": s.rule,
                "outcome": s.outcome,
                "detail": s.detail,
            }
            for s in d.trace
        ]
    return out

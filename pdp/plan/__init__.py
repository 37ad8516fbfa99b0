"""Query planning: which resources of a kind may a principal act on (docs/PLANNING.md)."""

from .planner import (
    ALWAYS_ALLOWED,
    ALWAYS_DENIED,
    CONDITIONAL,
    PLAN_VERSION,
    Plan,
    PlanRefused,
    PlanRequest,
    parse_plan_request,
    plan,
)

__all__ = [
    "ALWAYS_ALLOWED",
    "ALWAYS_DENIED",
    "CONDITIONAL",
    "PLAN_VERSION",
    "Plan",
    "PlanRefused",
    "PlanRequest",
    "parse_plan_request",
    "plan",
]

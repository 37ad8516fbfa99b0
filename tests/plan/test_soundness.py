"""Soundness: the rows the plan's SQL filter returns are exactly the rows Check allows.

For generated principals and contexts, every kind and action of the example policies is
planned; the filter runs as a SQLAlchemy WHERE clause on a real SQLite table of generated
resources (thousands of rows, with adversarial attribute values), and the ids it returns are
compared with the ids `Engine.check` allows, row by row. The formula's own evaluator and its
CEL rendering are held to the same answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.cel import CelEnv, compile_cel
from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.plan import ALWAYS_ALLOWED, ALWAYS_DENIED, PlanRefused, parse_plan_request, plan
from pdp.plan.sqlalchemy import where_clause

from . import _gen as g

ENGINE = Engine(compile_policy_set(load_policy_dir(g.POLICIES)))
KINDS = {k: tuple(c.actions) for k, c in ENGINE.policy_set.kinds.items()}
SCOPES = g.scopes_of(ENGINE)
ROWS_PER_KIND = 1500
TABLES = {k: g.random_resources(k, ROWS_PER_KIND, seed=1) for k in KINDS}
DBS = {k: g.sqlite_table(rows) for k, rows in TABLES.items()}
# What the example policies cannot plan exactly (and must refuse, never approximate).
REFUSABLE: dict[tuple[str, str], str] = {}

_cel_cache: dict[str, Any] = {}


def _cel_holds(text: str, resource: dict[str, Any]) -> bool:
    fn = _cel_cache.get(text)
    if fn is None:
        fn = _cel_cache[text] = compile_cel(text, CelEnv(), require_bool=True)
    return fn({"resource": resource}) is True


def check_plan(
    principal: dict[str, Any],
    context: dict[str, Any],
    kind: str,
    rows: list[dict[str, Any]],
    db: Any,
    *,
    tenant: str | None = None,
) -> str:
    """Plan every action of `kind`; assert SQL rows == Check-allowed rows. Returns kinds seen."""
    allowed = g.allowed_by_check(ENGINE, principal, context, rows, KINDS[kind])
    seen = []
    for action in KINDS[kind]:
        body = {"principal": principal, "context": context, "action": action,
                "resource": {"kind": kind} if tenant is None else {"kind": kind, "tenant": tenant}}  # fmt: skip
        try:
            p = plan(ENGINE, parse_plan_request(body))
        except PlanRefused as e:
            assert (kind, action) in REFUSABLE, e.message
            assert REFUSABLE[(kind, action)] in e.message
            seen.append("REFUSED")
            continue
        want = allowed[action]
        if tenant is not None:
            want = {r["id"] for r in rows if r["id"] in want and r["tenant"] == tenant}
            scope = {r["id"] for r in rows if r["tenant"] == tenant}
        else:
            scope = {r["id"] for r in rows}
        got = g.selected(db, where_clause(p, g.COLUMNS)) & scope
        assert got == want, (kind, action, p.to_dict(), sorted(got ^ want)[:5])
        by_formula = {r["id"] for r in rows if r["id"] in scope and p.matches(r)}
        assert by_formula == want
        cel = p.cel  # rendered once: a property that walks the whole formula each time
        by_cel = {r["id"] for r in rows if r["id"] in scope and _cel_holds(cel, r)}
        assert by_cel == want, cel
        if p.kind == ALWAYS_ALLOWED:
            assert want == scope
        if p.kind == ALWAYS_DENIED:
            assert want == set()
        seen.append(p.kind)
    return ",".join(seen)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(
    principal=g.principals(SCOPES),
    context=g.contexts(),
    kind=st.sampled_from(sorted(KINDS)),
)
def test_sql_filter_returns_exactly_what_check_allows(
    principal: dict[str, Any], context: dict[str, Any], kind: str
) -> None:
    check_plan(principal, context, kind, TABLES[kind], DBS[kind])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    principal=g.principals(SCOPES),
    context=g.contexts(),
    kind=st.sampled_from(sorted(KINDS)),
)
def test_small_adversarial_tables(
    data: st.DataObject, principal: dict[str, Any], context: dict[str, Any], kind: str
) -> None:
    rows = data.draw(g.resources_strategy(kind))
    check_plan(principal, context, kind, rows, g.sqlite_table(rows))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_and_action_for_typical_principals(kind: str) -> None:
    """Deterministic principals that reach the rules (all scopes, each role): every kind and
    action is planned and checked against thousands of rows, and at least one plan per kind
    is CONDITIONAL (the filter is not trivially all-or-nothing)."""
    context = {"ip": "10.20.30.40", "time": g.NOW,
               "attr": {"mfa": True, "auth_time": "2026-03-10T11:55:00Z",
                        "support_ticket": {"id": "T", "tenant": "globex", "status": "open"}}}  # fmt: skip
    seen = []
    for role in g.ROLES:
        principal = {"id": "alice", "tenant": "acme", "roles": [role], "scopes": SCOPES,
                     "attr": {"kbs": ["kb-eng"]}}  # fmt: skip
        seen.append(check_plan(principal, context, kind, TABLES[kind], DBS[kind]))
    assert "CONDITIONAL" in ",".join(seen) or kind == "agent_tool"


def test_fixed_tenant_plans_match_check() -> None:
    principal = {"id": "sam", "tenant": "platform", "roles": ["support"], "scopes": SCOPES}
    context = {"ip": "10.9.9.9", "time": g.NOW,
               "attr": {"support_ticket": {"id": "T", "tenant": "globex", "status": "open"}}}  # fmt: skip
    for tenant in ("globex", "acme", "platform"):
        check_plan(principal, context, "document", TABLES["document"], DBS["document"],
                   tenant=tenant)  # fmt: skip

"""Hostile policies: generated CEL conditions (every operator the planner handles, mixed types,
missing keys, errors, ternaries, folded and resource-dependent parts, derived roles, cross-
tenant exceptions) as allow and deny rules. Either the plan refuses, or its filter holds for a
resource exactly when Check allows it."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from pdp.engine import Engine, compile_policy_set
from pdp.errors import PolicyErrors
from pdp.model.loader import load_policy_files
from pdp.model.request import parse_check_request
from pdp.plan import PlanRefused, parse_plan_request, plan

RFIELDS = ["R.attr.a", "R.attr.b", "R.attr.a.b", "R.id", "R.tenant", "R.attr['a']", "R.kind",
           "resource.attr.c", "R.attr", "R"]  # fmt: skip
KNOWN = ["P.id", "P.attr.x", "P.attr.l", "context.attr.f", "P.tenant", '"x"', '"y"', "1",
         "1.0", "true", "false", "null", '["x", 1, true]', '{"x": 1}', "[]", "2", '"a"',
         "now", "P.attr.missing"]  # fmt: skip
VALUES = st.sampled_from(RFIELDS + KNOWN)
FIELDS = st.sampled_from(RFIELDS[:7])
KNOWN_ST = st.sampled_from(KNOWN)
OPS = st.sampled_from(["==", "!=", "in", "<", "<=", ">", ">="])


def _bools(depth: int) -> st.SearchStrategy[str]:
    base = st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", FIELDS, OPS, KNOWN_ST),
        st.builds(lambda a, op, b: f"{a} {op} {b}", FIELDS, OPS, KNOWN_ST),
        st.builds(lambda a, op, b: f"{a} {op} {b}", KNOWN_ST, OPS, FIELDS),
        st.builds(lambda a, op, b: f"{a} {op} {b}", VALUES, OPS, VALUES),
        st.sampled_from(
            [
                "has(R.attr.a)",
                "has(R.attr.a.b)",
                "has(R.id)",
                "has(P.attr.x)",
                "R.attr.a",
                "true",
                "false",
                "P.attr.x",
                "has(R.nope)",
                "hasAll(P.attr.l, R.attr.a)",
                'hasAny(R.attr.b, ["x", 1, true])',
                'R.attr.a.containsAll(["x", 1.0])',
                "isSubset(R.attr.b, P.attr.x)",
                "R.attr.c.containsAny(P.attr.l)",
                "hasAll(R.attr.a, R.attr.b)",
            ]
        ),
    )
    if depth == 0:
        return base
    inner = _bools(depth - 1)
    return st.one_of(
        base,
        inner.map(lambda e: f"!({e})"),
        st.builds(lambda a, b: f"({a} && {b})", inner, inner),
        st.builds(lambda a, b: f"({a} || {b})", inner, inner),
        st.builds(lambda c, a, b: f"({c} ? {a} : {b})", inner, inner, inner),
    )


CONDS = _bools(2)
JSON = st.recursive(
    st.one_of(
        st.sampled_from(["x", "y", "a", ""]),
        st.booleans(),
        st.none(),
        st.sampled_from([0, 1, 2, 1.0, 1.5]),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "x"]), inner, max_size=2)
    ),
    max_leaves=5,
)


def _policy(tenancy: str, rules: list[tuple[str, str, str | None]], cross: str | None,
            derived: str | None) -> bytes:  # fmt: skip
    lines = [
        "apiVersion: pdp/v1", "kind: ResourcePolicy", "metadata: {id: gen}", "spec:",
        "  resource: doc", f"  tenancy: {tenancy}", "  imports: [defs]", "  actions: {act: {}}",
    ]  # fmt: skip
    if cross:
        lines += ["  crossTenant:", "    - id: ct", "      actions: [act]",
                  f"      condition: {json.dumps(cross)}"]  # fmt: skip
    lines.append("  rules:")
    for i, (effect, who, cond) in enumerate(rules):
        lines += [f"    - id: r{i}", "      actions: [act]", f"      effect: {effect}"]
        if who == "derived":
            lines.append("      derivedRoles: [dr]")
        elif who != "any":
            lines.append(f"      roles: [{who}]")
        if cond is not None:
            lines.append(f"      condition: {json.dumps(cond)}")
    defs = ["apiVersion: pdp/v1", "kind: Definitions", "metadata: {id: defs}", "spec:",
            "  derivedRoles:", "    dr:", "      parentRoles: ['*']"]  # fmt: skip
    defs.append(f"      condition: {json.dumps(derived or 'true')}")
    return ("\n".join(lines) + "\n").encode(), ("\n".join(defs) + "\n").encode()  # type: ignore[return-value]


rules_st = st.lists(
    st.tuples(
        st.sampled_from(["allow", "deny"]),
        st.sampled_from(["any", "user", "admin", "derived"]),
        st.one_of(st.none(), CONDS),
    ),
    min_size=1,
    max_size=4,
)
resources_st = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(["x", "y", "z"]),
            "tenant": st.sampled_from(["t", "u", ""]),
            "attr": st.dictionaries(st.sampled_from(["a", "b", "c"]), JSON, max_size=3),
        }
    ),
    min_size=1,
    max_size=12,
)
principal_st = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["x", "y"]),
        "tenant": st.sampled_from(["t", "u"]),
        "roles": st.lists(st.sampled_from(["user", "admin"]), unique=True),
        "attr": st.dictionaries(st.sampled_from(["x", "l"]), JSON, max_size=2),
    }
)
context_st = st.fixed_dictionaries(
    {
        "time": st.just("2026-03-10T12:00:00Z"),
        "attr": st.dictionaries(st.just("f"), JSON, max_size=1),
    }
)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    tenancy=st.sampled_from(["tenant", "global"]),
    rules=rules_st,
    cross=st.one_of(st.none(), CONDS),
    derived=st.one_of(st.none(), CONDS),
    principal=principal_st,
    context=context_st,
    resources=resources_st,
)
def test_generated_policies_plan_exactly_or_refuse(
    tenancy: str, rules: Any, cross: Any, derived: Any, principal: Any, context: Any,
    resources: Any,
) -> None:  # fmt: skip
    policy, defs = _policy(tenancy, rules, cross, derived)
    try:
        engine = Engine(compile_policy_set(load_policy_files({"p.yaml": policy, "d.yaml": defs})))
    except PolicyErrors:
        event("does not compile")
        assume(False)
        return
    try:
        p = plan(engine, parse_plan_request({"principal": principal, "context": context,
                                             "resource": {"kind": "doc"}, "action": "act"}))  # fmt: skip
    except PlanRefused as e:
        assert e.message  # refused, with a reason: never an approximation
        event("refused")
        return
    event(p.kind)
    req = parse_check_request({"principal": principal, "context": context,
                               "resources": [{"kind": "doc", **r, "actions": ["act"]}
                                             for r in resources]})  # fmt: skip
    results = engine.check(req).results
    for r, res in zip(resources, results):
        allowed = res.actions["act"].allowed
        assert p.matches({"kind": "doc", **r}) == allowed, (r, p.cel, res.actions["act"])

"""Unit tests of the planner: folding, tenant isolation, deny rules, errors, refusals.

Each plan is also held to Check on hand-made resources, so every expectation about the filter
is an expectation about effects.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from pdp.engine import Engine, compile_policy_set
from pdp.errors import RequestError
from pdp.model.loader import load_policy_files
from pdp.model.request import parse_check_request
from pdp.plan import (
    ALWAYS_ALLOWED,
    ALWAYS_DENIED,
    CONDITIONAL,
    PlanRefused,
    parse_plan_request,
    plan,
)
from pdp.plan import tree as t

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: doc
  actions:
    read: {scopes: ["docs:read"]}
    edit: {}
    regex: {}
    size: {}
    strict: {}
  crossTenant:
    - id: auditor-in
      actions: [read]
      roles: [auditor]
      condition: R.attr.audit_open == true
  rules:
    - id: no-secret
      actions: [read, edit]
      effect: deny
      condition: R.attr.level == "secret"
    - id: owner
      actions: [read, edit, strict]
      effect: allow
      condition: R.attr.owner == P.id
    - id: admins
      actions: [read]
      effect: allow
      roles: [admin]
      condition: P.attr.clearance >= 3
    - id: name-regex
      actions: [regex]
      effect: allow
      condition: R.attr.name.matches("^a")
    - id: sized
      actions: [size]
      effect: allow
      condition: size(R.attr.tags) > 2
    - id: strict-deny
      actions: [strict]
      effect: deny
      condition: R.attr.count > 1
"""


def _engine() -> Engine:
    src = load_policy_files({"docs.yaml": textwrap.dedent(POLICY).encode()})
    return Engine(compile_policy_set(src))


ENGINE = _engine()


def _plan(action: str = "read", **principal: Any) -> Any:
    p = {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"], **principal}
    return plan(
        ENGINE,
        parse_plan_request(
            {"principal": p, "resource": {"kind": "doc"}, "action": action,
             "context": {"time": "2026-01-01T00:00:00Z"}}
        ),
    )  # fmt: skip


def _check(p: Any, action: str, resource: dict[str, Any], **principal: Any) -> bool:
    pr = {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"], **principal}
    req = parse_check_request(
        {"principal": pr, "context": {"time": "2026-01-01T00:00:00Z"},
         "resources": [{"kind": "doc", **resource, "actions": [action]}]}
    )  # fmt: skip
    return ENGINE.check(req).results[0].actions[action].allowed


RESOURCES = [
    {"id": "1", "tenant": "acme", "attr": {"owner": "alice", "level": "public"}},
    {"id": "2", "tenant": "acme", "attr": {"owner": "alice", "level": "secret"}},
    {"id": "3", "tenant": "acme", "attr": {"owner": "alice"}},  # level missing: deny errors
    {"id": "4", "tenant": "acme", "attr": {"owner": "bob", "level": "public"}},
    {"id": "5", "tenant": "globex", "attr": {"owner": "alice", "level": "public"}},
    {"id": "6", "tenant": "", "attr": {"owner": "alice", "level": "public"}},
    {"id": "7", "tenant": "globex", "attr": {"owner": "x", "level": "public", "audit_open": True}},
    {"id": "8", "tenant": "acme", "attr": {"owner": 7, "level": 1}},
]


def _agree(p: Any, action: str, **principal: Any) -> set[str]:
    """The ids the plan selects, asserted equal to the ids Check allows."""
    got = {r["id"] for r in RESOURCES if p.matches({"kind": "doc", **r})}
    want = {r["id"] for r in RESOURCES if _check(p, action, r, **principal)}
    assert got == want
    return got


def test_tenant_isolation_and_deny_rule_and_owner() -> None:
    p = _plan()
    assert p.kind == CONDITIONAL
    # Own tenant only; the secret one is denied; a missing level errors in the deny rule and
    # so denies (fail closed); another owner's, another tenant's, no tenant's are out.
    assert _agree(p, "read") == {"1"}
    assert t.atom("eq", t.TENANT, "acme") in p.filter.items  # a tenant conjunct


def test_cross_tenant_exception_is_a_disjunct_with_its_condition() -> None:
    p = _plan(roles=["auditor"])
    # Document 7 is another tenant's, but its audit is open: the exception lets the auditor
    # past isolation; then the allow rules still decide (auditors own nothing there).
    assert _agree(p, "read", roles=["auditor"]) == {"1"}
    p = _plan(roles=["auditor"], id="x")
    assert _agree(p, "read", roles=["auditor"], id="x") == {"7"}


def test_principal_only_conditions_fold() -> None:
    p = _plan(roles=["admin"], attr={"clearance": 5})
    # The admins rule folds to true: every document of the tenant except the denied ones.
    assert _agree(p, "read", roles=["admin"], attr={"clearance": 5}) == {"1", "4", "8"}
    p = _plan(roles=["admin"], attr={"clearance": "high"})  # an error: the allow rule is out
    assert _agree(p, "read", roles=["admin"], attr={"clearance": "high"}) == {"1"}


def test_always_denied_reasons() -> None:
    assert _plan(scopes=[]).kind == ALWAYS_DENIED
    assert _plan(scopes=[]).reason == "missing_scope"
    p = _plan(tenant="")
    assert (p.kind, p.reason) == (ALWAYS_DENIED, "missing_tenant")
    p = plan(ENGINE, parse_plan_request({"principal": {"id": "a", "tenant": "acme"},
                                         "resource": {"kind": "nope"}, "action": "read"}))  # fmt: skip
    assert (p.kind, p.reason) == (ALWAYS_DENIED, "unknown_resource_kind")
    assert _plan("delete").reason == "unknown_action"
    assert p.filter == t.FALSE and p.to_dict()["filter"] == {"op": "false"}


def test_fixed_tenant_mismatch_is_always_denied() -> None:
    p = plan(ENGINE, parse_plan_request({
        "principal": {"id": "alice", "tenant": "acme", "scopes": ["docs:read"]},
        "resource": {"kind": "doc", "tenant": "globex"}, "action": "read"}))  # fmt: skip
    assert (p.kind, p.reason) == (ALWAYS_DENIED, "tenant_mismatch")
    p = plan(ENGINE, parse_plan_request({
        "principal": {"id": "alice", "tenant": "acme", "scopes": ["docs:read"]},
        "resource": {"kind": "doc", "tenant": "acme"}, "action": "read"}))  # fmt: skip
    assert p.kind == CONDITIONAL and t.TENANT not in t.fields_of(p.filter)


def test_deny_error_excludes_while_allow_error_does_not_include() -> None:
    p = _plan("strict")
    rows = [
        {"kind": "doc", "id": "a", "tenant": "acme", "attr": {"owner": "alice", "count": 0}},
        {"kind": "doc", "id": "b", "tenant": "acme", "attr": {"owner": "alice", "count": "x"}},
        {"kind": "doc", "id": "c", "tenant": "acme", "attr": {"owner": "alice"}},
        {"kind": "doc", "id": "d", "tenant": "acme", "attr": {"count": 0}},
    ]
    assert [r["id"] for r in rows if p.matches(r)] == ["a"]
    for r in rows:
        assert p.matches(r) == _check(p, "strict", {k: r[k] for k in ("id", "tenant", "attr")})


@pytest.mark.parametrize(("action", "what"), [("regex", "matches"), ("size", "size")])
def test_unplannable_conditions_refuse(action: str, what: str) -> None:
    with pytest.raises(PlanRefused) as e:
        _plan(action)
    assert what in e.value.message and "docs/" in e.value.message


def test_every_plan_renders() -> None:
    p = _plan()
    d = p.to_dict()
    assert d["planVersion"] == 1 and d["kind"] == CONDITIONAL
    assert t.from_json(d["filter"]) == p.filter
    assert 'R.tenant == "acme"' in d["cel"]
    assert _plan("edit", roles=[]).kind == CONDITIONAL


def test_always_allowed() -> None:
    src = load_policy_files({"p.yaml": textwrap.dedent("""
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: open}
        spec:
          resource: page
          tenancy: global
          actions: {view: {}}
          rules:
            - {id: all, actions: [view], effect: allow, condition: "P.id != ''"}
        """).encode()})  # fmt: skip
    eng = Engine(compile_policy_set(src))
    p = plan(eng, parse_plan_request({"principal": {"id": "a"}, "resource": {"kind": "page"},
                                      "action": "view"}))  # fmt: skip
    assert p.kind == ALWAYS_ALLOWED and p.filter == t.TRUE


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resource": {"kind": "doc"}, "action": "read"}, "principal"),
        ({"principal": {"id": "a"}, "action": "read"}, "resource"),
        ({"principal": {"id": "a"}, "resource": {"kind": ""}, "action": "read"}, "resource.kind"),
        ({"principal": {"id": "a"}, "resource": {"kind": "doc", "id": "1"}, "action": "r"},
         "resource.id"),
        ({"principal": {"id": "a"}, "resource": {"kind": "doc", "tenant": 3}, "action": "r"},
         "resource.tenant"),
        ({"principal": {"id": "a"}, "resource": {"kind": "doc"}, "action": 3}, "action"),
        ({"principal": {"id": 1}, "resource": {"kind": "doc"}, "action": "r"}, "principal.id"),
        ({"principal": {"id": "a"}, "resource": {"kind": "doc"}, "action": "r", "x": 1}, "x"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as e:
        parse_plan_request(body)
    assert e.value.field == field


def test_has_on_a_non_map_errors_and_so_denies() -> None:
    src = load_policy_files({"p.yaml": textwrap.dedent("""
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: meta}
        spec:
          resource: item
          tenancy: global
          actions: {view: {}}
          rules:
            - {id: flagged, actions: [view], effect: deny, condition: "has(R.attr.meta.flag)"}
            - {id: all, actions: [view], effect: allow}
        """).encode()})  # fmt: skip
    eng = Engine(compile_policy_set(src))
    p = plan(eng, parse_plan_request({"principal": {"id": "a"}, "resource": {"kind": "item"},
                                      "action": "view"}))  # fmt: skip
    rows = {"map-without": {"meta": {}}, "map-with": {"meta": {"flag": 1}},
            "string": {"meta": "x"}, "list": {"meta": []}, "absent": {}}  # fmt: skip
    got = {k for k, attr in rows.items() if p.matches({"kind": "item", "id": k, "tenant": "",
                                                       "attr": attr})}  # fmt: skip
    assert got == {"map-without"}  # has() on a string, a list or nothing is an error: denied
    req = parse_check_request({"principal": {"id": "a"}, "resources": [
        {"kind": "item", "id": k, "attr": attr, "actions": ["view"]} for k, attr in rows.items()]})  # fmt: skip
    assert {r.id for r in eng.check(req).results if r.actions["view"].allowed} == got


def test_bool_ordering() -> None:
    src = load_policy_files({"p.yaml": textwrap.dedent("""
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: b}
        spec:
          resource: item
          tenancy: global
          actions: {view: {}}
          rules:
            - {id: lt, actions: [view], effect: allow, condition: "R.attr.f < true"}
        """).encode()})  # fmt: skip
    eng = Engine(compile_policy_set(src))
    p = plan(eng, parse_plan_request({"principal": {"id": "a"}, "resource": {"kind": "item"},
                                      "action": "view"}))  # fmt: skip
    assert p.filter == t.atom("eq", ("attr", "f"), False)


def test_a_misjudged_condition_refuses_rather_than_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were the planner to think a resource-reading condition constant, evaluating it would
    read the (empty) plan-time resource: that read is noticed and the plan refuses."""
    from pdp.plan import partial

    monkeypatch.setattr(partial, "reads_resource", lambda node, env: False)
    with pytest.raises(PlanRefused) as e:
        _plan()
    assert "cannot follow" in e.value.message

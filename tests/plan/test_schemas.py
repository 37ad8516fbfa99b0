"""Attribute schemas in plans: Check refuses a resource that breaks its kind's schema before any
rule runs, so the filter leaves it out exactly, or the plan refuses."""

from __future__ import annotations

import json

import pytest

from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_files
from pdp.model.request import parse_check_request
from pdp.plan.planner import ALWAYS_DENIED, PlanRefused, parse_plan_request, plan
from pdp.plan.tree import holds

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  schemas: {resource: note.json, principal: who.json}
  actions: {read: {scopes: []}}
  rules:
    - {id: members, actions: [read], effect: allow, roles: [member]}
"""
WHO = {"type": "object", "properties": {"level": {"type": "number"}}}


def engine(note_schema: dict) -> Engine:
    files = {
        "note.yaml": POLICY.encode(),
        "schemas/note.json": json.dumps(note_schema).encode(),
        "schemas/who.json": json.dumps(WHO).encode(),
    }
    return Engine(compile_policy_set(load_policy_files(files)))


NOTE = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["open", "closed"]},
        "pinned": {"type": "boolean"},
        "meta": {"type": "object", "properties": {"size": {"type": "number"}}},
    },
}
ROWS = [
    {},
    {"status": "open"},
    {"status": "gone"},
    {"status": 1},
    {"pinned": "true"},
    {"pinned": False},
    {"meta": {"size": 3}},
    {"meta": {"size": "3"}},
    {"meta": []},
    {"status": None},
]


def test_the_filter_is_exactly_the_rows_check_allows() -> None:
    e = engine(NOTE)
    principal = {"id": "ann", "tenant": "t", "roles": ["member"], "attr": {"level": 2}}
    p = plan(
        e,
        parse_plan_request(
            {"principal": principal, "resource": {"kind": "note"}, "action": "read"}
        ),
    )
    for attr in ROWS:
        resource = {"kind": "note", "id": "n", "tenant": "t", "attr": attr}
        check = (
            e.check(
                parse_check_request(
                    {"principal": principal, "resources": [{**resource, "actions": ["read"]}]}
                )
            )
            .results[0]
            .actions["read"]
        )
        assert holds(p.filter, resource) == check.allowed, attr
    assert [holds(p.filter, {"kind": "note", "id": "n", "tenant": "t", "attr": a}) for a in ROWS] == [
        True, True, False, False, False, True, True, False, False, False,
    ]  # fmt: skip


def test_a_principal_that_breaks_its_schema_is_always_denied() -> None:
    principal = {"id": "ann", "tenant": "t", "roles": ["member"], "attr": {"level": "high"}}
    p = plan(
        engine(NOTE),
        parse_plan_request(
            {"principal": principal, "resource": {"kind": "note"}, "action": "read"}
        ),
    )
    assert (p.kind, p.reason) == (ALWAYS_DENIED, "schema_violation")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}},
        {"type": "object", "required": ["status"]},
        {"type": "object", "properties": {"n": {"type": "integer"}}},
        {"type": "object", "properties": {"n": {"enum": [1, True]}}},
    ],
    ids=["items", "required", "integer", "mixed-enum"],
)
def test_keywords_without_an_exact_filter_refuse(schema: dict) -> None:
    principal = {"id": "ann", "tenant": "t", "roles": ["member"]}
    with pytest.raises(PlanRefused, match=r"schema `note\.json`"):
        plan(
            engine(schema),
            parse_plan_request(
                {"principal": principal, "resource": {"kind": "note"}, "action": "read"}
            ),
        )

"""An interop scenario written from the AuthZEN 1.0 spec: a todo application whose API gateway
asks pdp (over AuthZEN only) before each route, and whose UI asks in batches which buttons to
show. Users have roles, todos have owners; the policies are in todo_policies/.

    ana  admin   manages every todo (audited)
    ben  editor  manages his own todos, may mark anyone's completed
    cleo editor  likewise
    dov  viewer  reads
    kim  editor  with a read-only token (scopes: todo:read)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import Pdp, assert_error, pdp_serve

TODO_POLICIES = Path(__file__).resolve().parent / "todo_policies"
TENANT = "citadel"
RW = ["todo:read", "todo:write"]
USERS = {
    "ana": {"roles": ["admin"], "scopes": RW},
    "ben": {"roles": ["editor"], "scopes": RW},
    "cleo": {"roles": ["editor"], "scopes": RW},
    "dov": {"roles": ["viewer"], "scopes": RW},
    "kim": {"roles": ["editor"], "scopes": ["todo:read"]},
}
# The application's store: the gateway looks up a todo's owner to send as a property.
TODOS = {
    "t1": {"owner": "ben", "archived": False},
    "t2": {"owner": "cleo", "archived": False},
    "t3": {"owner": "ben", "archived": True},
    "t4": {"owner": "kim", "archived": False},
}
# The gateway's route table: (method, path pattern) -> (AuthZEN action, resource type).
ROUTES = [
    ("GET", r"/users/(?P<id>[^/]+)", "can_read_user", "user"),
    ("GET", r"/todos", "can_read_todos", "todo_list"),
    ("POST", r"/todos", "can_create_todo", "todo_list"),
    ("GET", r"/todos/(?P<id>[^/]+)", "can_read_todo", "todo"),
    ("PUT", r"/todos/(?P<id>[^/]+)", "can_update_todo", "todo"),
    ("DELETE", r"/todos/(?P<id>[^/]+)", "can_delete_todo", "todo"),
]


def subject(user: str) -> dict[str, Any]:
    return {"type": "user", "id": user, "properties": {"tenant": TENANT, **USERS[user]}}


def todo(tid: str) -> dict[str, Any]:
    return {"type": "todo", "id": tid, "properties": {"tenant": TENANT, **TODOS[tid]}}


def gateway_request(
    user: str, method: str, path: str, fields: list[str] | None = None
) -> dict[str, Any]:
    """What a gateway sends for one incoming API call."""
    for m, pattern, action, rtype in ROUTES:
        match = re.fullmatch(pattern, path)
        if m == method and match:
            rid = match.groupdict().get("id", TENANT)
            if rtype == "todo":
                resource = todo(rid)
            elif rtype == "todo_list":
                resource = {"type": "todo_list", "id": rid, "properties": {"tenant": TENANT}}
            else:
                resource = {"type": "user", "id": rid}
            act: dict[str, Any] = {
                "name": action,
                "properties": {"method": method, "route": pattern},
            }
            if fields is not None:
                act["properties"]["fields"] = fields
            return {"subject": subject(user), "action": act, "resource": resource}
    raise AssertionError(f"no route for {method} {path}")


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve(policies=TODO_POLICIES) as p:
        yield p


def allowed(pdp: Pdp, user: str, method: str, path: str, fields: list[str] | None = None) -> bool:
    reply = pdp.post(
        "/access/v1/evaluation",
        gateway_request(user, method, path, fields),
        headers={"X-Request-ID": f"{user} {method} {path}"},
    )
    assert reply.status == 200, reply.body
    assert reply.headers["x-request-id"] == f"{user} {method} {path}"
    return reply.json["decision"]


GATEWAY_CASES = [
    # every member reads users and the list
    *[(u, "GET", "/users/ben", True) for u in ("ana", "ben", "cleo", "dov", "kim")],
    *[(u, "GET", "/todos", True) for u in ("ana", "ben", "cleo", "dov", "kim")],
    # creating needs an editor or admin role and a write scope
    ("ana", "POST", "/todos", True),
    ("ben", "POST", "/todos", True),
    ("dov", "POST", "/todos", False),
    ("kim", "POST", "/todos", False),  # editor, read-only token
    # updates and deletes: owners and admins
    ("ben", "PUT", "/todos/t1", True),
    ("ben", "DELETE", "/todos/t1", True),
    ("cleo", "PUT", "/todos/t1", False),
    ("cleo", "DELETE", "/todos/t1", False),
    ("ana", "PUT", "/todos/t2", True),
    ("ana", "DELETE", "/todos/t2", True),
    ("dov", "PUT", "/todos/t2", False),
    ("dov", "GET", "/todos/t2", True),
    # archived todos are read-only, even for their owner and admins
    ("ben", "PUT", "/todos/t3", False),
    ("ana", "DELETE", "/todos/t3", False),
    ("ben", "GET", "/todos/t3", True),
    # a read-only token cannot touch even its owner's todo
    ("kim", "PUT", "/todos/t4", False),
]


@pytest.mark.parametrize(("user", "method", "path", "expected"), GATEWAY_CASES)
def test_gateway_checks_each_route(
    pdp: Pdp, user: str, method: str, path: str, expected: bool
) -> None:
    assert allowed(pdp, user, method, path) is expected


def test_action_properties_reach_the_policy(pdp: Pdp) -> None:
    # cleo may mark ben's todo completed, but not rename it.
    assert allowed(pdp, "cleo", "PUT", "/todos/t1", fields=["completed"]) is True
    assert allowed(pdp, "cleo", "PUT", "/todos/t1", fields=["completed", "title"]) is False
    assert allowed(pdp, "cleo", "PUT", "/todos/t1", fields=[]) is False
    reply = pdp.post(
        "/access/v1/evaluation", gateway_request("cleo", "PUT", "/todos/t1", ["completed"])
    ).json
    assert reply["context"]["reasons"] == ["completion_only"]


def test_admin_decisions_carry_the_audit_obligation(pdp: Pdp) -> None:
    reply = pdp.post("/access/v1/evaluation", gateway_request("ana", "DELETE", "/todos/t2")).json
    assert reply["decision"] is True
    assert reply["context"]["obligations"] == {"audit": True}
    assert reply["context"]["rule"] == "admin-manages-all"


def test_ui_asks_which_buttons_to_show_in_one_batch(pdp: Pdp) -> None:
    body = {
        "subject": subject("ben"),
        "context": {"ip": "192.0.2.7"},
        "evaluations": [
            {"action": {"name": action}, "resource": todo(tid)}
            for tid in ("t1", "t2", "t3")
            for action in ("can_update_todo", "can_delete_todo")
        ],
    }
    reply = pdp.post("/access/v1/evaluations", body)
    assert reply.status == 200, reply.body
    assert [e["decision"] for e in reply.json["evaluations"]] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    reasons = [e["context"]["reasons"] for e in reply.json["evaluations"]]
    assert reasons[0] == ["owner"] and reasons[4] == ["archived"]


def test_bulk_delete_gate_stops_at_the_first_deny(pdp: Pdp) -> None:
    body = {
        "subject": subject("ana"),
        "action": {"name": "can_delete_todo"},
        "options": {"evaluations_semantic": "deny_on_first_deny"},
        "evaluations": [{"resource": todo(t)} for t in ("t1", "t2", "t3", "t4")],
    }
    got = pdp.post("/access/v1/evaluations", body).json["evaluations"]
    assert [e["decision"] for e in got] == [True, True, False]  # t3 is archived; t4 never asked


def test_edit_menu_shows_when_any_todo_is_editable(pdp: Pdp) -> None:
    def any_editable(user: str) -> list[bool]:
        body = {
            "subject": subject(user),
            "action": {"name": "can_update_todo"},
            "options": {"evaluations_semantic": "permit_on_first_permit"},
            "evaluations": [{"resource": todo(t)} for t in ("t3", "t2", "t1", "t4")],
        }
        return [e["decision"] for e in pdp.post("/access/v1/evaluations", body).json["evaluations"]]

    assert any_editable("ben") == [False, False, True]  # stops at his own t1
    assert any_editable("dov") == [False, False, False, False]  # a viewer: nothing, all asked


def test_action_search_per_user(pdp: Pdp) -> None:
    def actions(user: str, tid: str) -> set[str]:
        reply = pdp.post(
            "/access/v1/search/action", {"subject": subject(user), "resource": todo(tid)}
        )
        assert reply.status == 200, reply.body
        return {r["name"] for r in reply.json["results"]}

    assert actions("ben", "t1") == {"can_read_todo", "can_update_todo", "can_delete_todo"}
    assert actions("cleo", "t1") == {"can_read_todo"}  # completion needs action properties
    assert actions("dov", "t1") == {"can_read_todo"}
    assert actions("ana", "t3") == {"can_read_todo"}
    assert actions("kim", "t4") == {"can_read_todo"}


def test_other_tenants_todos_are_out_of_reach(pdp: Pdp) -> None:
    foreign = {"type": "todo", "id": "x1", "properties": {"tenant": "gazorpazorp", "owner": "ana"}}
    reply = pdp.post(
        "/access/v1/evaluation",
        {"subject": subject("ana"), "action": {"name": "can_read_todo"}, "resource": foreign},
    ).json
    assert reply["decision"] is False
    assert reply["context"]["reasons"] == ["tenant_mismatch"]


def test_a_malformed_gateway_request_is_a_400_not_a_decision(pdp: Pdp) -> None:
    bad = gateway_request("ben", "PUT", "/todos/t1")
    bad["subject"]["properties"]["roles"] = "editor"
    reply = pdp.post("/access/v1/evaluation", bad)
    assert_error(reply, 400, "subject.properties.roles")

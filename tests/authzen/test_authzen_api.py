"""AuthZEN 1.0 over a real `pdp serve --http-listen`, on the example policies: every endpoint,
the three evaluations semantics, defaults, the metadata document, `X-Request-ID`, the mapping
of tenant, roles, scopes and actor, and hidden reasons."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .support import Pdp, assert_error, client_time_flags, pdp_serve

NOW = "2026-03-10T12:00:00Z"
SCOPES = ["docs:read", "docs:write", "docs:delete", "docs:share"]


def subject(
    sid: str, *, tenant: str = "acme", roles: Any = ("user",), scopes: Any = SCOPES, **attr: Any
) -> dict:
    props = {"tenant": tenant, "roles": list(roles), "scopes": list(scopes), **attr}
    return {"type": "user", "id": sid, "properties": props}


ALICE = subject("alice", kbs=["kb-eng"])
CAROL = subject("carol", scopes=["docs:read"], kbs=["kb-eng"])
BOB = subject("bob", kbs=["kb-sales"])
ALICE_DOC = {
    "type": "document",
    "id": "d-100",
    "properties": {
        "tenant": "acme",
        "owner": "alice",
        "shared_with": ["carol"],
        "classification": "internal",
        "kb": "kb-eng",
    },
}
BOB_DOC = {
    "type": "document",
    "id": "d-200",
    "properties": {
        "tenant": "acme",
        "owner": "bob",
        "shared_with": [],
        "classification": "internal",
        "kb": "kb-sales",
    },
}
OFFICE = {"ip": "10.20.30.40", "time": NOW}


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve(*client_time_flags()) as p:
        yield p


def evaluate(
    pdp: Pdp, s: dict, action: str, r: dict, context: dict | None = None, **kw: Any
) -> dict:
    body = {"subject": s, "action": {"name": action}, "resource": r, "context": context or OFFICE}
    reply = pdp.post("/access/v1/evaluation", body, **kw)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    return reply.json


# -- Access Evaluation ----------------------------------------------------------------------------


def test_owner_is_allowed_with_pdp_reasons_in_the_context(pdp: Pdp) -> None:
    answer = evaluate(pdp, ALICE, "read", ALICE_DOC)
    assert answer["decision"] is True
    ctx = answer["context"]
    assert ctx["reasons"] == ["owner"]
    assert ctx["policy"] == "documents"
    assert ctx["rule"] == "owner-full-access"
    assert len(ctx["decision_id"]) >= 16


def test_share_allows_with_obligations(pdp: Pdp) -> None:
    answer = evaluate(pdp, CAROL, "read", ALICE_DOC)
    assert answer["decision"] is True
    assert answer["context"]["rule"] == "shared-read"
    assert answer["context"]["obligations"] == {"mask_fields": ["email", "phone"]}


def test_scopes_come_from_subject_properties(pdp: Pdp) -> None:
    answer = evaluate(pdp, CAROL, "write", ALICE_DOC)
    assert answer["decision"] is False
    assert answer["context"]["reasons"] == ["missing_scope"]
    assert "docs:write" in answer["context"]["message"]


def test_tenant_comes_from_properties_and_mismatch_denies(pdp: Pdp) -> None:
    globex = {**ALICE_DOC, "properties": {**ALICE_DOC["properties"], "tenant": "globex"}}
    answer = evaluate(pdp, ALICE, "read", globex)
    assert answer["decision"] is False
    assert "tenant_mismatch" in answer["context"]["reasons"]
    no_tenant = subject("alice", tenant="", kbs=["kb-eng"])
    answer = evaluate(pdp, no_tenant, "read", ALICE_DOC)
    assert answer["decision"] is False
    assert "missing_tenant" in answer["context"]["reasons"]


def test_actor_comes_from_subject_properties(pdp: Pdp) -> None:
    narrow = {"type": "ai_agent", "id": "summarizer", "properties": {"scopes": ["kb:read"]}}
    via_agent = subject("alice", kbs=["kb-eng"], actor=narrow)
    answer = evaluate(pdp, via_agent, "read", ALICE_DOC)
    assert answer["decision"] is False
    assert "actor_missing_scope" in answer["context"]["reasons"]
    broad = {"type": "ai_agent", "id": "research-agent", "properties": {"scopes": SCOPES}}
    assert (
        evaluate(pdp, subject("alice", kbs=["kb-eng"], actor=broad), "read", ALICE_DOC)["decision"]
        is True
    )


def test_unknown_kind_and_action_deny(pdp: Pdp) -> None:
    answer = evaluate(pdp, ALICE, "read", {"type": "spaceship", "id": "x"})
    assert answer["decision"] is False
    assert answer["context"]["reasons"] == ["unknown_resource_kind"]
    answer = evaluate(pdp, ALICE, "launch", ALICE_DOC)
    assert answer["decision"] is False
    assert answer["context"]["reasons"] == ["unknown_action"]


def test_request_id_is_echoed(pdp: Pdp) -> None:
    body = {"subject": ALICE, "action": {"name": "read"}, "resource": ALICE_DOC, "context": OFFICE}
    reply = pdp.post("/access/v1/evaluation", body, headers={"X-Request-ID": "bfe9eb29-ab87"})
    assert reply.status == 200
    assert reply.headers["x-request-id"] == "bfe9eb29-ab87"
    assert reply.headers["server"] == "pdp"  # not the HTTP library and its version
    bad = pdp.post("/access/v1/evaluation", {"subject": ALICE}, headers={"X-Request-ID": "r-400"})
    assert bad.status == 400
    assert bad.headers["x-request-id"] == "r-400"
    assert "x-request-id" not in pdp.post("/access/v1/evaluation", body).headers


def test_unknown_fields_are_ignored_as_the_spec_requires(pdp: Pdp) -> None:
    # "receivers MUST ignore unknown fields" (HTTPS JSON binding): only properties carry data.
    body = {
        "subject": {**ALICE, "colour": "blue"},
        "action": {"name": "read", "extra": 1},
        "resource": {**ALICE_DOC, "etag": "x"},
        "context": OFFICE,
        "unknown_top_level": {"a": 1},
    }
    reply = pdp.post("/access/v1/evaluation", body)
    assert reply.status == 200
    assert reply.json["decision"] is True


# -- Access Evaluations ---------------------------------------------------------------------------


def test_evaluations_apply_defaults_and_overrides_in_order(pdp: Pdp) -> None:
    body = {
        "subject": CAROL,
        "context": OFFICE,
        "action": {"name": "read"},
        "evaluations": [
            {"resource": ALICE_DOC},
            {"resource": BOB_DOC},
            {"action": {"name": "write"}, "resource": ALICE_DOC},
            {"subject": ALICE, "action": {"name": "write"}, "resource": ALICE_DOC},
        ],
    }
    reply = pdp.post("/access/v1/evaluations", body)
    assert reply.status == 200, reply.body
    got = reply.json["evaluations"]
    assert [e["decision"] for e in got] == [True, False, False, True]
    # Each equals the single evaluation of the same 4-tuple.
    singles = [
        evaluate(pdp, CAROL, "read", ALICE_DOC),
        evaluate(pdp, CAROL, "read", BOB_DOC),
        evaluate(pdp, CAROL, "write", ALICE_DOC),
        evaluate(pdp, ALICE, "write", ALICE_DOC),
    ]
    for batch, one in zip(got, singles, strict=True):
        assert batch["decision"] == one["decision"]
        assert batch["context"]["reasons"] == one["context"]["reasons"]
        assert batch["context"].get("rule") == one["context"].get("rule")


SEMANTIC_BATCH = [
    {"resource": BOB_DOC},  # deny
    {"resource": ALICE_DOC},  # allow
    {"resource": BOB_DOC},  # deny
]


def _semantic(pdp: Pdp, semantic: str | None) -> list[bool]:
    body: dict[str, Any] = {"subject": CAROL, "action": {"name": "read"}, "context": OFFICE}
    body["evaluations"] = SEMANTIC_BATCH
    if semantic is not None:
        body["options"] = {"evaluations_semantic": semantic}
    reply = pdp.post("/access/v1/evaluations", body)
    assert reply.status == 200, reply.body
    return [e["decision"] for e in reply.json["evaluations"]]


def test_execute_all_is_the_default(pdp: Pdp) -> None:
    assert _semantic(pdp, None) == [False, True, False]
    assert _semantic(pdp, "execute_all") == [False, True, False]


def test_deny_on_first_deny_stops_at_the_first_deny(pdp: Pdp) -> None:
    assert _semantic(pdp, "deny_on_first_deny") == [False]


def test_permit_on_first_permit_stops_at_the_first_permit(pdp: Pdp) -> None:
    assert _semantic(pdp, "permit_on_first_permit") == [False, True]


def test_deny_on_first_deny_runs_all_when_all_allow(pdp: Pdp) -> None:
    body = {
        "subject": ALICE,
        "resource": ALICE_DOC,
        "context": OFFICE,
        "options": {"evaluations_semantic": "deny_on_first_deny"},
        "evaluations": [{"action": {"name": a}} for a in ("read", "write", "share")],
    }
    got = pdp.post("/access/v1/evaluations", body).json["evaluations"]
    assert [e["decision"] for e in got] == [True, True, True]


def test_evaluations_without_an_array_is_one_evaluation(pdp: Pdp) -> None:
    body = {"subject": ALICE, "action": {"name": "read"}, "resource": ALICE_DOC, "context": OFFICE}
    for extra in ({}, {"evaluations": []}):
        reply = pdp.post("/access/v1/evaluations", {**body, **extra})
        assert reply.status == 200
        assert reply.json["decision"] is True
        assert [e["decision"] for e in reply.json["evaluations"]] == [True]


def test_evaluations_errors_name_the_field(pdp: Pdp) -> None:
    base = {"action": {"name": "read"}, "context": OFFICE}
    reply = pdp.post(
        "/access/v1/evaluations",
        {
            **base,
            "evaluations": [{"subject": ALICE, "resource": ALICE_DOC}, {"resource": ALICE_DOC}],
        },
    )
    assert_error(reply, 400, "evaluations[1].subject")
    reply = pdp.post(
        "/access/v1/evaluations",
        {
            **base,
            "subject": ALICE,
            "evaluations": [{"resource": ALICE_DOC}, {"resource": {"type": "document"}}],
        },
    )
    assert_error(reply, 400, "evaluations[1].resource.id")
    reply = pdp.post(
        "/access/v1/evaluations",
        {**base, "subject": {"type": "user", "id": 7}, "evaluations": [{"resource": ALICE_DOC}]},
    )
    assert_error(reply, 400, "subject.id")
    reply = pdp.post(
        "/access/v1/evaluations",
        {
            **base,
            "subject": ALICE,
            "resource": ALICE_DOC,
            "options": {"evaluations_semantic": "majority"},
            "evaluations": [{}],
        },
    )
    assert_error(reply, 400, "options.evaluations_semantic")
    reply = pdp.post(
        "/access/v1/evaluations", {**base, "subject": ALICE, "evaluations": {"resource": ALICE_DOC}}
    )
    assert_error(reply, 400, "evaluations")
    # Every evaluation is validated before any is decided: the first would deny (and stop a
    # deny_on_first_deny batch), but the second is malformed, so the whole call is a 400.
    short = {**base, "subject": CAROL, "options": {"evaluations_semantic": "deny_on_first_deny"}}
    short["evaluations"] = [{"resource": BOB_DOC}, {"resource": {"type": "document", "id": 5}}]
    assert_error(pdp.post("/access/v1/evaluations", short), 400, "evaluations[1].resource.id")


def test_evaluations_batch_limit_is_the_grpc_resource_limit(pdp: Pdp) -> None:
    info = pdp.get("/v1/server-info").json
    limit = info["limits"]["maxResources"]
    body = {"subject": ALICE, "action": {"name": "read"}, "context": OFFICE}
    at_limit = pdp.post(
        "/access/v1/evaluations", {**body, "evaluations": [{"resource": ALICE_DOC}] * limit}
    )
    assert at_limit.status == 200
    assert len(at_limit.json["evaluations"]) == limit
    assert all(e["decision"] for e in at_limit.json["evaluations"])
    over = pdp.post(
        "/access/v1/evaluations", {**body, "evaluations": [{"resource": ALICE_DOC}] * (limit + 1)}
    )
    assert_error(over, 400, "evaluations")


# -- Action Search --------------------------------------------------------------------------------


def test_action_search_lists_exactly_the_allowed_declared_actions(pdp: Pdp) -> None:
    body = {"subject": CAROL, "resource": ALICE_DOC, "context": OFFICE}
    reply = pdp.post("/access/v1/search/action", body)
    assert reply.status == 200, reply.body
    names = [r["name"] for r in reply.json["results"]]
    expected = [
        a
        for a in ("read", "write", "delete", "share")
        if evaluate(pdp, CAROL, a, ALICE_DOC)["decision"]
    ]
    assert names == expected == ["read"]
    owner = pdp.post("/access/v1/search/action", {**body, "subject": ALICE}).json["results"]
    assert {r["name"] for r in owner} == {"read", "write", "share"}  # delete needs fresh MFA


def test_action_search_on_an_unknown_kind_is_empty(pdp: Pdp) -> None:
    reply = pdp.post(
        "/access/v1/search/action", {"subject": ALICE, "resource": {"type": "spaceship", "id": "x"}}
    )
    assert reply.status == 200
    assert reply.json == {"results": []}


def test_action_search_errors(pdp: Pdp) -> None:
    assert_error(pdp.post("/access/v1/search/action", {"resource": ALICE_DOC}), 400, "subject")
    assert_error(
        pdp.post("/access/v1/search/action", {"subject": ALICE, "resource": {"type": "document"}}),
        400,
        "resource.id",
    )
    reply = pdp.post(
        "/access/v1/search/action",
        {"subject": ALICE, "resource": ALICE_DOC, "page": {"token": "abc"}},
    )
    assert_error(reply, 400, "page.token")


# -- metadata -------------------------------------------------------------------------------------


def test_metadata_advertises_only_what_is_served(pdp: Pdp) -> None:
    reply = pdp.get("/.well-known/authzen-configuration")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    doc = reply.json
    base = pdp.base_url
    assert doc == {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
        "search_action_endpoint": f"{base}/access/v1/search/action",
    }
    # Every advertised endpoint answers a POST (here: with a 400 for an empty body).
    for key, url in doc.items():
        if key.endswith("_endpoint"):
            path = url[len(base) :]
            assert pdp.post(path, {}).status == 400


def test_public_url_fixes_the_pdp_identifier() -> None:
    with pdp_serve("--http-public-url", "https://pdp.example.com/") as p:
        doc = p.get("/.well-known/authzen-configuration", headers={"Host": "evil.example"}).json
    assert doc["policy_decision_point"] == "https://pdp.example.com"
    assert doc["access_evaluation_endpoint"] == "https://pdp.example.com/access/v1/evaluation"


# -- hidden reasons -------------------------------------------------------------------------------


def test_hide_reasons_keeps_decisions_and_obligations_only() -> None:
    with pdp_serve("--http-hide-reasons", *client_time_flags()) as p:
        shared = evaluate(p, CAROL, "read", ALICE_DOC)
        denied = evaluate(p, CAROL, "write", ALICE_DOC)
        batch = p.post(
            "/access/v1/evaluations",
            {
                "subject": CAROL,
                "action": {"name": "write"},
                "context": OFFICE,
                "evaluations": [{"resource": ALICE_DOC}],
            },
        ).json
    assert shared["decision"] is True
    assert set(shared["context"]) == {"decision_id", "obligations"}
    assert shared["context"]["obligations"] == {"mask_fields": ["email", "phone"]}
    assert denied["decision"] is False
    assert set(denied["context"]) == {"decision_id"}
    assert set(batch["evaluations"][0]["context"]) == {"decision_id"}


def test_reject_unknown_fields_makes_a_typo_an_error() -> None:
    typo = {"subject": ALICE, "action": {"name": "read"}, "resource": ALICE_DOC, "context": OFFICE}
    with pdp_serve("--http-reject-unknown-fields", *client_time_flags()) as p:
        assert p.post("/access/v1/evaluation", typo).json["decision"] is True
        cases = [
            ("/access/v1/evaluation", {**typo, "contxt": {}}, "contxt"),
            (
                "/access/v1/evaluation",
                {**typo, "resource": {**ALICE_DOC, "propertes": {}}},
                "resource.propertes",
            ),
            (
                "/access/v1/evaluation",
                {**typo, "action": {"name": "read", "nme": "x"}},
                "action.nme",
            ),
            (
                "/access/v1/evaluation",
                {**typo, "subject": subject("alice", actor={"type": "ai", "id": "a", "scope": []})},
                "subject.properties.actor.scope",
            ),
            (
                "/access/v1/evaluations",
                {**typo, "options": {"evaluations_semantics": "execute_all"}},
                "options.evaluations_semantics",
            ),
            (
                "/access/v1/evaluations",
                {**typo, "evaluations": [{"resource": ALICE_DOC, "actoin": {}}]},
                "evaluations[0].actoin",
            ),
            (
                "/access/v1/evaluations",
                {**typo, "evaluations": [{"subject": {**ALICE, "ID": "x"}}]},
                "evaluations[0].subject.ID",
            ),
            (
                "/access/v1/search/action",
                {"subject": ALICE, "resource": ALICE_DOC, "page": {"size": 2}},
                "page.size",
            ),
        ]
        for path, body, field in cases:
            assert_error(p.post(path, body), 400, field)
        # Properties and context stay free-form.
        free = {**typo, "context": {**OFFICE, "anything": {"goes": 1}}}
        free["subject"] = subject("alice", kbs=["kb-eng"], colour="blue")
        assert p.post("/access/v1/evaluation", free).json["decision"] is True

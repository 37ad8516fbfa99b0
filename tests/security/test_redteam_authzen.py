"""AuthZEN batches as an attacker shapes them, against a real `pdp serve --http-listen`: defaults
that would be validated once per evaluation, semantics that would validate differently, parts
of an evaluation that would go unchecked depending on where it sits in the batch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, assert_error, pdp_serve

from pdp.model.request import DEFAULT_LIMITS

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
SUBJECT = {
    "type": "user",
    "id": "alice",
    "properties": {"tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
}
RESOURCE = {
    "type": "document",
    "id": "d-100",
    "properties": {"tenant": "acme", "owner": "alice", "classification": "internal"},
}


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve() as p:
        yield p


def _batch(pdp: Pdp, body: dict[str, Any], semantic: str | None = None) -> Any:
    if semantic is not None:
        body = {**body, "options": {"evaluations_semantic": semantic}}
    return pdp.request("POST", "/access/v1/evaluations", raw=json.dumps(body).encode(), headers={})


def test_a_big_default_subject_is_not_validated_once_per_evaluation(pdp: Pdp) -> None:
    # 500 evaluations with their own action properties, and a default subject of 19,000
    # values: each evaluation is its own group, and the subject was validated 500 times (one
    # 150 KB body, ten seconds of the listener's loop). The batch is refused up front.
    subject = json.loads(json.dumps(SUBJECT))
    subject["properties"]["blob"] = list(range(19_000))
    body = {
        "subject": subject,
        "resource": RESOURCE,
        "evaluations": [
            {"action": {"name": "read", "properties": {"n": i}}}
            for i in range(DEFAULT_LIMITS.max_resources)
        ],
    }
    for semantic in SEMANTICS:
        err = assert_error(_batch(pdp, body, semantic), 400, "evaluations")
        assert str(DEFAULT_LIMITS.max_attr_values) in err["message"]


def test_many_groups_of_a_small_subject_are_still_decided(pdp: Pdp) -> None:
    body = {
        "subject": SUBJECT,
        "resource": RESOURCE,
        "evaluations": [{"action": {"name": "read", "properties": {"n": i}}} for i in range(50)],
    }
    reply = _batch(pdp, body)
    assert reply.status == 200, reply.body
    assert [e["decision"] for e in reply.json["evaluations"]] == [True] * 50


def test_every_semantic_validates_a_batch_alike(pdp: Pdp) -> None:
    # Two evaluations of one subject whose resources together pass the value budget: one
    # request under execute_all (refused), but each evaluation was a request of its own under
    # the short-circuit semantics (accepted), so the same body was valid or not by its options.
    half = DEFAULT_LIMITS.max_attr_values * 3 // 4
    resource = {**RESOURCE, "properties": {**RESOURCE["properties"], "blob": list(range(half))}}
    body = {
        "subject": SUBJECT,
        "action": {"name": "read"},
        "evaluations": [{"resource": resource}, {"resource": {**resource, "id": "d-101"}}],
    }
    for semantic in SEMANTICS:
        err = assert_error(_batch(pdp, body, semantic), 400)
        assert err["field"].startswith("evaluations[1].resource.properties"), (semantic, err)


def test_short_circuit_semantics_decide_in_order_over_groups(pdp: Pdp) -> None:
    # Evaluations of two subjects interleaved: grouped for validation, still decided and
    # answered in the caller's order, stopping at the first deny.
    bob = {**SUBJECT, "id": "bob"}
    body = {
        "resource": RESOURCE,
        "action": {"name": "read"},
        "evaluations": [{"subject": SUBJECT}, {"subject": SUBJECT}, {"subject": bob}, {}],
    }
    body["subject"] = SUBJECT
    reply = _batch(pdp, body, "deny_on_first_deny")
    assert reply.status == 200, reply.body
    assert [e["decision"] for e in reply.json["evaluations"]] == [True, True, False]
    reply = _batch(pdp, body, "permit_on_first_permit")
    assert [e["decision"] for e in reply.json["evaluations"]] == [True]
    reply = _batch(pdp, body, "execute_all")
    assert [e["decision"] for e in reply.json["evaluations"]] == [True, True, False, True]


@pytest.mark.parametrize("props", [[], 0, "", False])
@pytest.mark.parametrize("semantic", SEMANTICS)
def test_bad_action_properties_are_refused_wherever_they_sit(
    pdp: Pdp, props: Any, semantic: str
) -> None:
    # Empty (falsy) properties put an evaluation in the group of the one before it, whose
    # action alone was read for the context: the second one's were never checked.
    body = {
        "subject": SUBJECT,
        "resource": RESOURCE,
        "evaluations": [
            {"action": {"name": "read"}},
            {"action": {"name": "read", "properties": props}},
        ],
    }
    assert_error(_batch(pdp, body, semantic), 400, "evaluations[1].action.properties")


@pytest.mark.parametrize(
    "host",
    ['evil.example"<x>', "evil.example/path", "a b", "evil.example:99999999", "user@evil", ""],
)
def test_a_host_that_is_no_host_never_reaches_the_metadata(pdp: Pdp, host: str) -> None:
    # Without --http-public-url the metadata's endpoint URLs are built from `Host`.
    reply = pdp.get("/.well-known/authzen-configuration", headers={"Host": host})
    assert_error(reply, 400, "Host")


@pytest.mark.parametrize("host", ["pdp.example:3592", "127.0.0.1:8080", "[::1]:3592", "pdp_1"])
def test_a_real_host_builds_the_metadata(pdp: Pdp, host: str) -> None:
    reply = pdp.get("/.well-known/authzen-configuration", headers={"Host": host})
    assert reply.status == 200, reply.body
    assert reply.json["policy_decision_point"] == f"http://{host}"
    assert reply.json["access_evaluation_endpoint"] == f"http://{host}/access/v1/evaluation"


def test_hide_reasons_does_not_leave_the_pdp_v1_mirror_open() -> None:
    # --http-hide-reasons is for untrusted callers; /v1/check with `explain` answered them the
    # deciding rule, reasons and a trace of every rule with its CEL condition, and /v1/plan the
    # whole filter, on the same listener.
    check = {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
        "resources": [
            {"kind": "document", "id": "d-1", "tenant": "acme",
             "attr": {"owner": "bob", "classification": "secret"}, "actions": ["read"]}
        ],
        "explain": True,
    }  # fmt: skip
    plan = {"principal": check["principal"], "resource": {"kind": "document"}, "action": "read"}
    with pdp_serve("--http-hide-reasons") as p:
        for path, body in (("/v1/check", check), ("/v1/plan", plan)):
            reply = p.post(path, body)
            assert_error(reply, 404, "path")
            assert b"condition" not in reply.body and b"rule" not in reply.body
        meta = p.get("/.well-known/authzen-configuration").json
        assert "access_evaluation_endpoint" in meta
        body = {
            "subject": SUBJECT,
            "action": {"name": "read"},
            "resource": {**RESOURCE, "properties": {**RESOURCE["properties"], "owner": "bob"}},
        }
        answer = p.post("/access/v1/evaluation", body).json
        assert answer["decision"] is False
        assert set(answer["context"]) == {"decision_id"}

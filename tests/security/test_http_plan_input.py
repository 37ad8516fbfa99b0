"""Hostile bodies against `POST /v1/plan` and AuthZEN resource search on a real `pdp serve`
with `--search-db` over a real SQLite file: every one is a 4xx JSON error (or a 422 refusal),
never a 5xx or a stack trace; a search that answers returns exactly the ids the same server's
Check allows that subject, never more; tokens from elsewhere only move the cursor."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.search_db import authzen_resource, search_setup
from authzen.support import POLICIES, Pdp, Reply, assert_error, pdp_serve

SEARCH = "/access/v1/search/resource"
PLAN = "/v1/plan"
MAX_BODY = 64 * 1024
SEARCH_OK = {
    "subject": {"type": "user", "id": "alice",
                "properties": {"tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]}},
    "action": {"name": "read"},
    "resource": {"type": "document"},
    "context": {"ip": "10.20.30.40"},
}  # fmt: skip
PLAN_OK = {
    "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
    "resource": {"kind": "document"},
    "action": "read",
    "context": {"ip": "10.20.30.40"},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pdp, list[dict]]]:
    tmp = tmp_path_factory.mktemp("hostile")
    flags, data, pol = search_setup(tmp, POLICIES)
    with pdp_serve(*flags, "--max-message-bytes", str(MAX_BODY), policies=pol) as p:
        yield p, data


def _raw(pdp: Pdp, path: str, data: bytes) -> Reply:
    return pdp.request("POST", path, raw=data, headers={"Content-Type": "application/json"})


def _no_5xx(reply: Reply) -> None:
    assert reply.status < 500, (reply.status, reply.body[:300])
    assert b"Traceback" not in reply.body
    assert reply.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("path", [PLAN, SEARCH])
@pytest.mark.parametrize(
    "data",
    [b"{not json", b"", b"[]", b'"s"', b"\xff\xfe{}", b'{"a": NaN}', b'{"a": "\\ud800"}',
     b"[" * 10_000 + b"]" * 10_000, b'{"a": ' + b"9" * 5000 + b"}",
     b'{"page": {"token": "x"}, "page": {}}'],
)  # fmt: skip
def test_malformed_bodies_are_400(served: Any, path: str, data: bytes) -> None:
    pdp, _ = served
    assert_error(_raw(pdp, path, data), 400)


@pytest.mark.parametrize("path", [PLAN, SEARCH])
def test_oversized_bodies_are_400(served: Any, path: str) -> None:
    pdp, _ = served
    body = dict(SEARCH_OK if path == SEARCH else PLAN_OK)
    body["context"] = {"ip": "10.20.30.40", "pad": "x" * MAX_BODY}
    assert_error(pdp.post(path, body), 400, "body")


def test_a_duplicate_key_cannot_smuggle_a_tenant_into_a_search(served: Any) -> None:
    pdp, _ = served
    text = json.dumps(SEARCH_OK).replace('"tenant": "acme"', '"tenant": "globex", "tenant": "acme"')
    assert_error(_raw(pdp, SEARCH, text.encode()), 400, "tenant")


def _check_allowed(pdp: Pdp, data: list[dict], body: dict) -> set[str] | None:
    """What the server's Check allows this search's subject (None: Check refuses the subject)."""
    evals = {"subject": body["subject"], "action": body["action"], "context": body.get("context"),
             "evaluations": [{"resource": authzen_resource(r)} for r in data]}  # fmt: skip
    reply = pdp.post("/access/v1/evaluations", evals)
    if reply.status != 200:
        return None
    answers = reply.json["evaluations"]
    return {r["id"] for r, a in zip(data, answers, strict=True) if a["decision"] is True}


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=8),
                    st.sampled_from(["acme", "globex", "admin", "user", "support", "docs:read",
                                     "", "*", "alice", "10.20.30.40", "2026-03-10T12:00:00Z"]))  # fmt: skip
values = st.recursive(scalars, lambda i: st.lists(i, max_size=3)
                      | st.dictionaries(st.text(max_size=6), i, max_size=3), max_leaves=8)  # fmt: skip
roles = st.one_of(values, st.lists(st.sampled_from(["user", "admin", "support"]), max_size=3))
scopes = st.one_of(values, st.lists(st.sampled_from(["docs:read", "docs:*", "*"]), max_size=2))
props = st.fixed_dictionaries(
    {},
    optional={"tenant": st.one_of(values, st.sampled_from(["acme", "globex", "platform"])),
              "roles": roles, "scopes": scopes, "kbs": values, "attr": values,
              "actor": st.one_of(values, st.fixed_dictionaries(
                  {"id": values, "type": values}, optional={"properties": values}))},
)  # fmt: skip
subjects = st.one_of(
    values,
    st.fixed_dictionaries(
        {"type": st.one_of(st.just("user"), values), "id": st.one_of(st.just("alice"), values)},
        optional={"properties": st.one_of(props, values)},
    ),
)
contexts = st.one_of(st.none(), values, st.fixed_dictionaries(
    {}, optional={"ip": st.one_of(values, st.just("10.20.30.40")), "time": values,
                  "support_ticket": values, "country": values}))  # fmt: skip
resources = st.one_of(values, st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["document", "note", "model"]), values)},
    optional={"id": values, "properties": st.one_of(
        values, st.fixed_dictionaries({}, optional={"tenant": values}))}))  # fmt: skip
pages = st.one_of(st.none(), values, st.fixed_dictionaries(
    {}, optional={"limit": st.one_of(st.integers(-5, 2000), values), "token": values}))  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@example(subject=SEARCH_OK["subject"], context=SEARCH_OK["context"], resource={"type": "document"},
         page=None, action={"name": "read"})  # fmt: skip
@example(subject=SEARCH_OK["subject"], context=SEARCH_OK["context"], resource={"type": "document"},
         page={"limit": 3}, action={"name": "read"})  # fmt: skip
@given(subject=subjects, context=contexts, resource=resources, page=pages,
       action=st.one_of(st.just({"name": "read"}), values))  # fmt: skip
def test_hostile_searches_are_4xx_or_exactly_what_check_allows(
    served: Any, subject: Any, context: Any, resource: Any, page: Any, action: Any
) -> None:
    pdp, data = served
    body: dict[str, Any] = {"subject": subject, "action": action, "resource": resource}
    if context is not None:
        body["context"] = context
    if page is not None:
        body["page"] = page
    reply = pdp.post(SEARCH, body)
    _no_5xx(reply)
    if reply.status != 200:
        assert reply.status in (400, 422), reply.body
        return
    ids = {r["id"] for r in reply.json["results"]}
    if body == SEARCH_OK:
        assert len(ids) > 3  # the valid search answers rows: the branch below is exercised
    if not ids:
        return
    # It answered with rows: the request was a document search by a valid subject.
    assert resource["type"] == "document"
    allowed = _check_allowed(pdp, data, body)
    assert allowed is not None
    assert ids <= allowed  # one page of them (a token moves the cursor, a limit cuts the page)
    if not (isinstance(page, dict) and page.get("token")) and len(ids) < page_limit(page):
        assert ids == allowed


def page_limit(page: Any) -> int:
    if isinstance(page, dict) and "limit" in page:
        return int(page["limit"])
    return 100


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(principal=st.one_of(values, st.fixed_dictionaries(
    {"id": st.one_of(st.just("alice"), values)},
    optional={"tenant": values, "roles": roles, "scopes": scopes, "attr": values, "actor": values})),
    resource=st.one_of(values, st.fixed_dictionaries(
        {"kind": st.one_of(st.sampled_from(["document", "note"]), values)},
        optional={"tenant": values, "id": values})),
    action=st.one_of(st.just("read"), values), context=contexts)  # fmt: skip
def test_hostile_plan_requests_are_4xx_or_a_plan(
    served: Any, principal: Any, resource: Any, action: Any, context: Any
) -> None:
    pdp, _ = served
    body: dict[str, Any] = {"principal": principal, "resource": resource, "action": action}
    if context is not None:
        body["context"] = context
    reply = pdp.post(PLAN, body)
    _no_5xx(reply)
    if reply.status == 200:
        assert reply.json["planVersion"] == 1 and reply.json["resourceKind"] == resource["kind"]
    elif reply.status == 422:
        assert reply.json["error"]["code"] == "plan_refused"
    else:
        assert_error(reply, 400)

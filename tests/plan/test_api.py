"""plan_json and AuthZEN resource search, in process, over a real SQLite table."""

from __future__ import annotations

from typing import Any

import pytest

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.errors import NoPoliciesError, RequestError
from pdp.model.loader import load_policy_dir, load_policy_files
from pdp.plan import PlanRefused
from pdp.plan.api import plan_json, search_resource
from pdp.plan.sqlalchemy import candidates

from . import _gen as g

ENGINE = Engine(compile_policy_set(load_policy_dir(g.POLICIES)))
ROWS = [
    {"kind": "document", "id": f"d{i:04d}", "tenant": ["acme", "globex"][i % 5 == 0],
     "attr": {"owner": g.IDS[i % 3], "classification": ["public", "secret", "internal"][i % 4 % 3]}}
    for i in range(700)
]  # fmt: skip
DB = g.sqlite_table(ROWS)
SOURCE = candidates(DB, g.TABLE.c.id, g.COLUMNS)
ALICE = {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"],
         "attr": {"kbs": ["kb-eng"]}}  # fmt: skip
CONTEXT = {"ip": "10.20.30.40", "time": g.NOW}


def test_plan_json_from_a_holder() -> None:
    out = plan_json(EngineHolder(ENGINE), {"principal": ALICE, "resource": {"kind": "document"},
                                           "action": "read", "context": CONTEXT})  # fmt: skip
    assert out["planVersion"] == 1 and out["kind"] == "CONDITIONAL"
    assert out["filter"]["op"] == "and" and out["cel"].startswith("(")
    with pytest.raises(NoPoliciesError):
        plan_json(EngineHolder(), {"principal": ALICE, "resource": {"kind": "x"}, "action": "r"})


def test_plan_json_refusal_is_an_error_not_a_plan() -> None:
    engine = Engine(compile_policy_set(load_policy_files(g.policy_files_with_refusal())))
    body = {"principal": ALICE, "resource": {"kind": "note"},
            "action": "read", "context": CONTEXT}  # fmt: skip
    with pytest.raises(PlanRefused) as e:
        plan_json(engine, body)
    assert e.value.to_dict()["error"]["code"] == "plan_refused"
    assert "startsWith" in e.value.message and e.value.rule == "drafts-by-prefix"


def _search(page: dict[str, Any] | None = None, **subject: Any) -> dict[str, Any]:
    # The AuthZEN mapping (pdp.http.authzen): principal attributes are the other properties.
    props = {k: v for k, v in ALICE.items() if k not in ("id", "attr")} | ALICE["attr"]
    body: dict[str, Any] = {
        "subject": {"type": "user", "id": "alice", "properties": {**props, **subject}},
        "action": {"name": "read"},
        "resource": {"type": "document"},
        "context": CONTEXT,
    }
    if page is not None:
        body["page"] = page
    return search_resource(ENGINE, body, SOURCE)


def test_search_pages_through_exactly_what_check_allows() -> None:
    want = g.allowed_by_check(ENGINE, ALICE, CONTEXT, ROWS, ["read"])["read"]
    assert len(want) > 25  # several pages
    got: list[str] = []
    token = ""
    pages = 0
    while True:
        out = _search({"limit": 10, "next_token": token} if token else {"limit": 10})
        assert all(r["type"] == "document" for r in out["results"])
        got += [r["id"] for r in out["results"]]
        pages += 1
        token = out["page"]["next_token"]
        if not token:
            break
    assert sorted(got) == sorted(want) and len(got) == len(set(got))
    assert pages == -(-len(want) // 10) or pages == len(want) // 10 + 1


def test_search_denied_subject_gets_nothing() -> None:
    assert _search(scopes=[]) == {"results": [], "page": {"next_token": ""}}


@pytest.mark.parametrize(
    ("page", "field"),
    [({"limit": 0}, "page.limit"), ({"limit": "5"}, "page.limit"),
     ({"next_token": "!!"}, "page.next_token"), ({"next_token": "e30"}, "page.next_token")],
)  # fmt: skip
def test_search_bad_pages(page: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as e:
        _search(page)
    assert e.value.field == field


def test_a_forged_cursor_cannot_widen_the_result() -> None:
    """A token only moves the cursor: the filter is planned again on every page."""
    import base64
    import json

    forged = base64.urlsafe_b64encode(json.dumps({"v": 1, "after": ""}).encode()).decode()
    out = _search({"limit": 1000, "next_token": forged.rstrip("=")})
    want = g.allowed_by_check(ENGINE, ALICE, CONTEXT, ROWS, ["read"])["read"]
    assert {r["id"] for r in out["results"]} == want

"""AuthZEN resource search (`POST /access/v1/search/resource`) over a real `pdp serve` with
`--search-db` on a real SQLite file: the ids it pages out are exactly the ids the same server's
Access Evaluations endpoint allows, for several principals; tokens cannot widen a page; the
metadata advertises the endpoint only when it is configured; every search is in the decision
log; bad flags stop the server with the file and key named."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.decision_logs import complete_records

from .search_db import authzen_resource, search_setup
from .support import POLICIES, Pdp, assert_error, client_time_flags, pdp_serve

SEARCH = "/access/v1/search/resource"
NOW = "2026-03-10T12:00:00Z"
OFFICE = {"ip": "10.20.30.40", "time": NOW}
ALL = ["docs:read", "docs:write", "docs:delete", "docs:share"]


def subject(sid: str, tenant: str = "acme", roles: Any = ("user",), scopes: Any = ALL, **a: Any):
    props = {"tenant": tenant, "roles": list(roles), "scopes": list(scopes), **a}
    return {"type": "user", "id": sid, "properties": props}


MFA = {**OFFICE, "mfa": True, "auth_time": "2026-03-10T11:55:00Z"}  # delete needs step-up
TICKET = {**OFFICE, "support_ticket": {"id": "T-1", "tenant": "acme", "status": "open"}}
CASES = {
    "alice-read": (subject("alice", kbs=["kb-eng"]), "read", OFFICE),
    "carol-read": (subject("carol", scopes=["docs:read"], kbs=["kb-eng"]), "read", OFFICE),
    "bob-share": (subject("bob", kbs=["kb-sales"]), "share", OFFICE),
    "dana-admin-delete": (subject("dana", roles=["admin"]), "delete", MFA),
    "globex-read": (subject("dana", tenant="globex", kbs=["kb-eng"]), "read", OFFICE),
    "support-ticket": (subject("sam", tenant="platform", roles=["support"]), "read", TICKET),
    "no-scope": (subject("alice", scopes=[]), "read", OFFICE),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pdp, list[dict], Path]]:
    tmp = tmp_path_factory.mktemp("search")
    flags, data, pol = search_setup(tmp, POLICIES)
    log = tmp / "decisions.jsonl"
    extra = ["--decision-log", str(log), "--telemetry-writer", "thread"]
    with pdp_serve(*flags, *extra, *client_time_flags(), policies=pol) as p:
        yield p, data, log


def allowed(pdp: Pdp, data: list[dict], s: dict, action: str, ctx: dict) -> set[str]:
    """The oracle: the same server's Check (AuthZEN evaluations), row by row."""
    body = {
        "subject": s,
        "action": {"name": action},
        "context": ctx,
        "evaluations": [{"resource": authzen_resource(row)} for row in data],
    }
    reply = pdp.post("/access/v1/evaluations", body)
    assert reply.status == 200, reply.body
    answers = reply.json["evaluations"]
    assert len(answers) == len(data)
    return {row["id"] for row, a in zip(data, answers, strict=True) if a["decision"] is True}


def search_all(pdp: Pdp, s: dict, action: str, ctx: dict, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    token, pages = "", 0
    while True:
        page: dict[str, Any] = {"limit": limit}
        if token:
            page["token"] = token
        body = {"subject": s, "action": {"name": action}, "resource": {"type": "document"},
                "context": ctx, "page": page}  # fmt: skip
        reply = pdp.post(SEARCH, body)
        assert reply.status == 200, reply.body
        out = reply.json
        assert set(out) == {"results", "page"}
        assert all(set(r) == {"type", "id"} and r["type"] == "document" for r in out["results"])
        assert len(out["results"]) <= limit
        ids += [r["id"] for r in out["results"]]
        pages += 1
        token = out["page"]["next_token"]
        if not token:
            return ids, pages
        assert pages < 1000


@pytest.mark.parametrize("case", sorted(CASES))
def test_search_pages_out_exactly_what_check_allows(setup: Any, case: str) -> None:
    pdp, data, _ = setup
    s, action, ctx = CASES[case]
    want = allowed(pdp, data, s, action, ctx)
    got, pages = search_all(pdp, s, action, ctx, limit=7)
    assert len(got) == len(set(got))  # no id twice across pages
    assert set(got) == want
    assert got == sorted(got)  # pages follow the id order
    assert pages == max(1, -(-len(want) // 7)) or pages == len(want) // 7 + 1
    if case == "no-scope":
        assert want == set()
    if case in ("alice-read", "carol-read", "dana-admin-delete", "support-ticket"):
        assert 0 < len(want) < len(data)  # the filter selects, neither nothing nor all


def test_the_cases_are_not_all_alike(setup: Any) -> None:
    pdp, data, _ = setup
    seen = {allowed(pdp, data, *CASES[c]).__repr__() for c in CASES}
    assert len(seen) >= 5


def _forge(after: str) -> str:
    raw = json.dumps({"v": 1, "after": after}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_a_forged_token_only_moves_the_cursor(setup: Any) -> None:
    pdp, data, _ = setup
    s, action, ctx = CASES["carol-read"]
    want = allowed(pdp, data, s, action, ctx)
    body = {"subject": s, "action": {"name": action}, "resource": {"type": "document"},
            "context": ctx, "page": {"limit": 1000, "token": _forge("")}}  # fmt: skip
    reply = pdp.post(SEARCH, body)
    assert reply.status == 200
    assert {r["id"] for r in reply.json["results"]} == want
    # A token of another (wider) principal's search gives carol her own rows after it, no more.
    body["page"] = {"limit": 1000, "token": _forge("doc-080")}
    got = {r["id"] for r in pdp.post(SEARCH, body).json["results"]}
    assert got == {i for i in want if i > "doc-080"}


@pytest.mark.parametrize(
    "page",
    [{"token": "!!"}, {"token": "e30"}, {"token": _forge("x")[:-3] + "***"}, {"token": 7},
     {"token": "A" * 5000}, {"token": base64.urlsafe_b64encode(b'{"v": 2, "after": ""}').decode()},
     {"token": base64.urlsafe_b64encode(b'{"v": 1, "after": 5}').decode()}],
)  # fmt: skip
def test_garbage_tokens_are_a_400_never_results(setup: Any, page: dict) -> None:
    pdp, _, _ = setup
    s, action, ctx = CASES["alice-read"]
    body = {"subject": s, "action": {"name": action}, "resource": {"type": "document"},
            "context": ctx, "page": page}  # fmt: skip
    assert_error(pdp.post(SEARCH, body), 400, "page.token")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": {"name": "read"}, "resource": {"type": "document"}}, "subject"),
        ({"subject": {"type": "user", "id": "a"}, "resource": {"type": "document"}}, "action"),
        ({"subject": {"type": "user", "id": "a"}, "action": {"name": "read"}}, "resource"),
        ({"subject": {"type": "user", "id": "a"}, "action": {"name": "read"},
          "resource": {"type": "document", "properties": {"owner": "a"}}},
         "resource.properties.owner"),
        ({"subject": {"type": "user", "id": "a", "properties": {"roles": "admin"}},
          "action": {"name": "read"}, "resource": {"type": "document"}},
         "subject.properties.roles"),
        ({"subject": {"type": "user", "id": "a"}, "action": {"name": "read"},
          "resource": {"type": "document"}, "page": {"limit": 0}}, "page.limit"),
        ({"subject": {"type": "user", "id": "a"}, "action": {"name": ""},
          "resource": {"type": "document"}}, "action.name"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(setup: Any, body: dict, field: str) -> None:
    pdp, _, _ = setup
    assert_error(pdp.post(SEARCH, body), 400, field)


def test_a_kind_without_a_table_or_that_cannot_be_planned_is_a_422(setup: Any) -> None:
    pdp, _, _ = setup
    s = subject("alice")
    body = {"subject": s, "action": {"name": "read"}, "resource": {"type": "note"}}
    reply = pdp.post(SEARCH, body)
    assert reply.status == 422, reply.body
    assert reply.json["error"]["code"] == "plan_refused"
    assert reply.json["error"]["rule"] == "drafts-by-prefix"
    # Planned (not always denied), but no table is mapped for the kind.
    body["subject"] = subject("alice", scopes=["kb:read"])
    body["resource"] = {"type": "knowledge_base"}
    reply = pdp.post(SEARCH, body)
    assert reply.status == 422 and "no table" in reply.json["error"]["message"]
    body["resource"] = {"type": "no-such-kind"}  # always denied: no candidates asked
    assert pdp.post(SEARCH, body).json == {"results": [], "page": {"next_token": ""}}


def test_metadata_advertises_search_only_when_configured(setup: Any) -> None:
    pdp, _, _ = setup
    doc = pdp.get("/.well-known/authzen-configuration").json
    assert doc["search_resource_endpoint"] == f"{pdp.base_url}{SEARCH}"
    assert "search_subject_endpoint" not in doc
    with pdp_serve() as plain:
        doc = plain.get("/.well-known/authzen-configuration").json
        assert "search_resource_endpoint" not in doc
        assert plain.post(SEARCH, {}).status == 404


def test_searches_reach_the_decision_log(setup: Any) -> None:
    pdp, _, log = setup
    s, action, ctx = CASES["carol-read"]
    body = {"subject": s, "action": {"name": action}, "resource": {"type": "document"},
            "context": ctx}  # fmt: skip
    assert pdp.post(SEARCH, body, headers={"X-Request-ID": "search-1"}).status == 200
    body["resource"] = {"type": "note"}
    assert pdp.post(SEARCH, body, headers={"X-Request-ID": "search-2"}).status == 422
    found: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while len(found) < 2 and time.monotonic() < deadline:
        found = {r["request_id"]: r for r in complete_records(log)
                 if r.get("request_id") in ("search-1", "search-2")}  # fmt: skip
        time.sleep(0.05)
    ok, refused = found["search-1"], found["search-2"]
    assert ok["rpc"] == f"POST {SEARCH}" and ok["principal"]["id"] == "carol"
    assert ok["decisions"][0]["kind"] == "document" and ok["decisions"][0]["id"] == "*"
    assert ok["decisions"][0]["actions"]["read"]["reasons"][0] == "plan_conditional"
    assert refused["error"]["code"] == "FAILED_PRECONDITION" and "decisions" not in refused


def _serve_fails(*argv: str, block_sqlalchemy: bool = False) -> str:
    code = "import sys\n"
    if block_sqlalchemy:
        code += "sys.modules['sqlalchemy'] = None\n"
    code += "from pdp.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    cmd = [sys.executable, "-c", code, "serve", "--policies", str(POLICIES), "--listen",
           "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *argv]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode != 0, out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr


def test_bad_search_flags_stop_the_server_naming_what_is_wrong(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    flags, _, _ = search_setup(tmp_path, POLICIES)
    good_map = flags[3]
    err = _serve_fails(*flags, block_sqlalchemy=True)  # one start, either wording
    assert "need SQLAlchemy" in err or "needs SQLAlchemy" in err
    assert "go together" in _serve_fails("--search-db", f"sqlite:///{db}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("document: {table: documents, id: id, attributes: {owner: nope}}\n")
    err = _serve_fails("--search-db", flags[1], "--search-map", str(bad))
    assert "attributes.owner" in err and "no `nope`" in err
    bad.write_text("document: {table: documents, id: id, colour: x}\n")
    assert "unknown key `colour`" in _serve_fails("--search-db", flags[1], "--search-map", str(bad))
    bad.write_text("document: {table: missing, id: id}\n")
    assert "missing" in _serve_fails("--search-db", flags[1], "--search-map", str(bad))
    assert good_map.endswith("search.yaml")


def test_hidden_reasons_and_strict_fields_apply_to_search(tmp_path: Path) -> None:
    flags, _, pol = search_setup(tmp_path, POLICIES)
    strict = ["--http-hide-reasons", "--http-reject-unknown-fields"]
    with pdp_serve(*flags, *strict, policies=pol) as p:
        body: dict[str, Any] = {"subject": subject("alice"), "action": {"name": "read"},
                                "resource": {"type": "note"}}  # fmt: skip
        reply = p.post(SEARCH, body)
        assert reply.status == 422
        err = reply.json["error"]
        assert err["code"] == "plan_refused" and err["rule"] == "" and err["policy"] == ""
        assert "startsWith" not in err["message"]
        body["resource"] = {"type": "document"}
        assert p.post(SEARCH, body).status == 200
        assert_error(p.post(SEARCH, {**body, "options": {}}), 400, "options")
        assert_error(p.post(SEARCH, {**body, "page": {"cursor": "x"}}), 400, "page.cursor")

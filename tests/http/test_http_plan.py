"""`POST /v1/plan` over a real `pdp serve --http-listen`: the same plan as `pdp.plan.api.plan_json`
in process (and the filter, run as SQL over a real SQLite file, selects exactly what the
server's `/v1/check` allows), refusals as 422, bad requests as 400 naming the field, no bundle
as 503, and every call in the decision log as the Plan RPC records it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from authzen.search_db import rows, search_setup, seed
from authzen.support import POLICIES, Pdp, assert_error, client_time_flags, pdp_serve

from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_dir
from pdp.plan.api import plan_json
from pdp.plan.sqlalchemy import ColumnMap, where_clause
from tests.decision_logs import complete_records

NOW = "2026-03-10T12:00:00Z"
CONTEXT = {"ip": "10.20.30.40", "time": NOW}
ALICE = {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"],
         "attr": {"kbs": ["kb-eng"]}}  # fmt: skip
PLANS = {
    "conditional": {"principal": ALICE, "resource": {"kind": "document"}, "action": "read",
                    "context": CONTEXT},
    "fixed-tenant": {"principal": ALICE, "resource": {"kind": "document", "tenant": "acme"},
                     "action": "read", "context": CONTEXT, "request_id": "mine"},
    "admin": {"principal": {**ALICE, "id": "dana", "roles": ["admin"]},
              "resource": {"kind": "document"}, "action": "read", "context": CONTEXT},
    "denied": {"principal": ALICE, "resource": {"kind": "document"}, "action": "write",
               "context": CONTEXT},
    "unknown-kind": {"principal": ALICE, "resource": {"kind": "nothing"}, "action": "read"},
}  # fmt: skip
# The per-call and per-bundle fields; everything else must be identical.
VOLATILE = ("planId", "evaluatedAt", "bundle")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pdp, Path, Engine, Path]]:
    tmp = tmp_path_factory.mktemp("plan")
    _, _, pol = search_setup(tmp, POLICIES)
    log = tmp / "decisions.jsonl"
    flags = ["--decision-log", str(log), "--telemetry-writer", "thread", *client_time_flags()]
    engine = Engine(compile_policy_set(load_policy_dir(pol)))
    with pdp_serve(*flags, policies=pol) as p:
        yield p, log, engine, tmp


@pytest.mark.parametrize("name", sorted(PLANS))
def test_v1_plan_is_the_in_process_plan(setup: Any, name: str) -> None:
    pdp, _, engine, _ = setup
    reply = pdp.post("/v1/plan", PLANS[name], headers={"X-Request-ID": "hdr-1"})
    assert reply.status == 200, reply.body
    got = reply.json
    want = plan_json(engine, {"request_id": "hdr-1", **PLANS[name]})
    assert {k: v for k, v in got.items() if k not in VOLATILE} == {
        k: v for k, v in want.items() if k not in VOLATILE
    }
    assert got["bundle"]["name"] == "policies" and got["planId"]
    expected_kind = {"denied": "ALWAYS_DENIED", "unknown-kind": "ALWAYS_DENIED"}
    assert got["kind"] == expected_kind.get(name, "CONDITIONAL")
    assert got["requestId"] == ("mine" if name == "fixed-tenant" else "hdr-1")
    if name == "denied":
        assert got["reason"] == "missing_scope"


def _check_allowed(pdp: Pdp, principal: dict, data: list[dict]) -> set[str]:
    resources = []
    for row in data:
        attr = {k: row[k] for k in ("owner", "classification", "kb", "shared_with")
                if row[k] is not None} | row["attrs"]  # fmt: skip
        res = {"kind": "document", "id": row["id"], "attr": attr, "actions": ["read"]}
        if row["tenant"] is not None:
            res["tenant"] = row["tenant"]
        resources.append(res)
    body = {"principal": principal, "resources": resources, "context": CONTEXT}
    reply = pdp.post("/v1/check", body)
    assert reply.status == 200, reply.body
    return {
        r["id"] for r in reply.json["results"] if r["actions"]["read"]["effect"] == "EFFECT_ALLOW"
    }


def test_the_served_filter_selects_what_v1_check_allows(setup: Any, tmp_path: Path) -> None:
    pdp, _, _, _ = setup
    data = rows(120, seed=3)
    seed(tmp_path / "d.db", data)
    db = sa.create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    t = sa.Table("documents", sa.MetaData(), autoload_with=db)
    columns = ColumnMap(
        fields={"resource.id": t.c.id, "resource.tenant": t.c.tenant,
                **{f"resource.attr.{k}": t.c[k] for k in ("owner", "classification", "kb")}},
        json={"resource.attr.shared_with": t.c.shared_with, "resource.attr": t.c.attrs},
    )  # fmt: skip
    for principal in (ALICE, {**ALICE, "id": "carol"}, {**ALICE, "roles": ["admin"]}):
        body = {"principal": principal, "resource": {"kind": "document"}, "action": "read",
                "context": CONTEXT}  # fmt: skip
        plan = pdp.post("/v1/plan", body).json
        with db.connect() as conn:
            got = set(conn.scalars(sa.select(t.c.id).where(where_clause(plan, columns))))
        want = _check_allowed(pdp, principal, data)
        assert got == want
        assert 0 < len(want) < len(data)
    db.dispose()


def test_a_refused_plan_is_a_422_with_its_reason(setup: Any) -> None:
    pdp, _, _, _ = setup
    body = {"principal": ALICE, "resource": {"kind": "note"}, "action": "read"}
    reply = pdp.post("/v1/plan", body)
    assert reply.status == 422, reply.body
    err = reply.json["error"]
    assert err["code"] == "plan_refused" and err["rule"] == "drafts-by-prefix"
    assert err["policy"] == "notes" and "startsWith" in err["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resource": {"kind": "document"}, "action": "read"}, "principal"),
        ({"principal": ALICE, "action": "read"}, "resource"),
        ({"principal": ALICE, "resource": {"kind": ""}, "action": "read"}, "resource.kind"),
        ({"principal": ALICE, "resource": {"kind": "document", "id": "x"}, "action": "read"},
         "resource.id"),
        ({"principal": ALICE, "resource": {"kind": "document"}, "action": 3}, "action"),
        ({"principal": {**ALICE, "roles": "admin"}, "resource": {"kind": "document"},
          "action": "read"}, "principal.roles"),
        ({"principal": ALICE, "resource": {"kind": "document"}, "action": "read",
          "context": {"ip": "not-an-ip"}}, "context.ip"),
        ({"principal": ALICE, "resource": {"kind": "document"}, "action": "read", "x": 1}, "x"),
    ],
)  # fmt: skip
def test_bad_plan_requests_name_the_field(setup: Any, body: dict, field: str) -> None:
    pdp, _, _, _ = setup
    assert_error(pdp.post("/v1/plan", body), 400, field)


def test_plans_reach_the_decision_log_as_the_plan_rpc_records_them(setup: Any) -> None:
    pdp, log, _, _ = setup
    ids = {"plan-ok": PLANS["conditional"], "plan-denied": PLANS["denied"],
           "plan-refused": {"principal": ALICE, "resource": {"kind": "note"}, "action": "read"},
           "plan-bad": {"principal": ALICE, "action": "read"}}  # fmt: skip
    for rid, body in ids.items():
        pdp.post("/v1/plan", body, headers={"X-Request-ID": rid})
    found: dict[str, dict] = {}
    deadline = time.monotonic() + 30
    while len(found) < len(ids) and time.monotonic() < deadline:
        records = [r for r in complete_records(log) if r.get("rpc") == "POST /v1/plan"]
        found = {r["request_id"]: r for r in records if r.get("request_id") in ids}
        # A body that does not parse has no request, so no request id: found by its error,
        # which names the missing field (other tests of this module log other bad bodies).
        bad = [
            r
            for r in records
            if r.get("error", {}).get("code") == "INVALID_ARGUMENT"
            and "resource" in r["error"]["message"]
        ]
        if bad:
            found["plan-bad"] = bad[-1]
        time.sleep(0.05)
    assert set(found) == set(ids)
    assert all(r["rpc"] == "POST /v1/plan" for r in found.values())
    ok = found["plan-ok"]
    assert ok["principal"]["id"] == "alice"
    assert (ok["decisions"][0]["kind"], ok["decisions"][0]["id"]) == ("document", "*")
    assert ok["decisions"][0]["actions"]["read"]["reasons"][0] == "plan_conditional"
    assert ok["decisions"][0]["actions"]["read"]["effect"] == "allow"
    denied = found["plan-denied"]["decisions"][0]["actions"]["write"]
    assert denied["effect"] == "deny"
    assert denied["reasons"] == ["plan_always_denied", "missing_scope"]
    refused, bad = found["plan-refused"], found["plan-bad"]
    assert refused["error"]["code"] == "FAILED_PRECONDITION" and "decisions" not in refused
    assert refused["principal"]["id"] == "alice"  # the request was valid: it is recorded
    assert "decisions" not in bad and "resource" in bad["error"]["message"]


def test_no_bundle_is_a_503_never_a_plan() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    bundle = f"http://127.0.0.1:{dead}/b.tar.gz"
    with pdp_serve("--bundle", bundle, *client_time_flags(), wait_ready=False) as p:
        reply = p.post("/v1/plan", PLANS["conditional"])
        assert_error(reply, 503)
        assert b"filter" not in reply.body

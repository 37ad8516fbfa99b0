"""Generators of principals, contexts and resources for the planner's soundness tests.

Values are drawn to hit the example policies' conditions (the ids, tenants, classifications,
statuses they test) and to confuse them (a number where a string is expected, a map where a
list is, a missing key, an empty string).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st

from pdp.engine import Engine
from pdp.model.request import ResourceRequest, make_check_request
from pdp.plan.sqlalchemy import ColumnMap

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
NOW = "2026-03-10T12:00:00Z"

IDS = ["alice", "bob", "carol", "dana", "sam"]
TENANTS = ["acme", "globex", "platform"]
ROLES = ["user", "admin", "developer", "support", "compliance", "service", "guest",
         "catalog_editor"]  # fmt: skip
WORDS = ["public", "internal", "confidential", "secret", "top-secret", "kb-eng", "kb-sales",
         "active", "deprecated", "retired", "tenant", "private", "high", "low", "US", "GB",
         "open", "docs:read", "kb:read"]  # fmt: skip
ATTR_KEYS = ["owner", "shared_with", "classification", "kb", "status", "fine_tunable",
             "archived", "legal_hold", "members", "editors", "visibility", "enabled", "risk",
             "scopes", "published", "restricted_countries"]  # fmt: skip
IPS = ["10.20.30.40", "81.2.69.160", "198.51.100.200", "2001:db8:c0::10", "192.0.2.10", ""]


def scopes_of(engine: Engine) -> list[str]:
    out: set[str] = set()
    for kind in engine.policy_set.kinds.values():
        for action in kind.actions.values():
            out |= action.scopes
    return sorted(out)


# --- resources (random.Random: thousands of rows, quickly) ----------------------------------


def _scalar(r: random.Random) -> Any:
    return r.choice([*IDS, *WORDS, *TENANTS, "", True, False, 0, 1, -1, 1.0, 2.5, None, "1"])


def _value(r: random.Random, key: str, depth: int = 0) -> Any:
    roll = r.random()
    if key in ("shared_with", "members", "editors", "scopes", "restricted_countries"):
        if roll < 0.6:
            return [_scalar(r) for _ in range(r.randint(0, 3))]
        if roll < 0.75:
            return {r.choice(IDS): _scalar(r) for _ in range(r.randint(0, 2))}
    if roll < 0.1 and depth < 2:
        return [_value(r, key, depth + 1) for _ in range(r.randint(0, 2))]
    if roll < 0.15 and depth < 2:
        return {r.choice(ATTR_KEYS): _value(r, key, depth + 1)}
    return _scalar(r)


def random_resources(kind: str, n: int, seed: int) -> list[dict[str, Any]]:
    r = random.Random(f"{kind}:{seed}")
    out = []
    for i in range(n):
        attr = {k: _value(r, k) for k in ATTR_KEYS if r.random() < 0.6}
        out.append(
            {
                "kind": kind,
                "id": f"{kind}-{i}",
                "tenant": r.choice([*TENANTS, *TENANTS, ""]),
                "attr": attr,
            }
        )
    return out


# --- resources (hypothesis: small tables that shrink) ---------------------------------------

scalars = st.one_of(
    st.sampled_from([*IDS, *WORDS, *TENANTS, ""]),
    st.booleans(),
    st.none(),
    st.integers(min_value=-3, max_value=3),
    st.sampled_from([0.0, 1.0, -1.5, 2.5]),
    st.text(max_size=4),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([*IDS, *ATTR_KEYS]), inner, max_size=3)
    ),
    max_leaves=6,
)
attrs = st.dictionaries(st.sampled_from(ATTR_KEYS), json_values, max_size=6)


def resources_strategy(kind: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.fixed_dictionaries({"tenant": st.sampled_from([*TENANTS, ""]), "attr": attrs})
    return st.lists(one, min_size=1, max_size=40).map(
        lambda rows: [{"kind": kind, "id": f"r{i}", **row} for i, row in enumerate(rows)]
    )


# --- principals and contexts ----------------------------------------------------------------


def principals(all_scopes: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    scope_sets = st.one_of(
        st.just(all_scopes), st.lists(st.sampled_from(all_scopes), unique=True, max_size=8)
    )
    actor = st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {
                "id": st.sampled_from(["agent", "svc"]),
                "type": st.sampled_from(["ai_agent", "service", "browser_extension"]),
                "scopes": scope_sets,
            }
        ),
    )
    pattr = st.fixed_dictionaries(
        {},
        optional={
            "kbs": st.one_of(
                st.lists(st.sampled_from(["kb-eng", "kb-sales", "kb-x"]), max_size=2),
                st.just("kb-eng"),
            ),
            "quota_remaining": st.sampled_from([0, 10, -1.5, "lots", 250000]),
        },
    )
    return st.fixed_dictionaries(
        {
            "id": st.sampled_from(IDS),
            "tenant": st.sampled_from([*TENANTS, ""]),
            "roles": st.lists(st.sampled_from(ROLES), unique=True, max_size=3),
            "scopes": scope_sets,
            "attr": pattr,
            "actor": actor,
        }
    )


def contexts() -> st.SearchStrategy[dict[str, Any]]:
    ticket = st.fixed_dictionaries(
        {"id": st.just("T-1")},
        optional={
            "tenant": st.sampled_from([*TENANTS, 7]),
            "status": st.sampled_from(["open", "closed"]),
        },
    )
    cattr = st.fixed_dictionaries(
        {},
        optional={
            "mfa": st.sampled_from([True, False, "yes"]),
            "auth_time": st.sampled_from(
                ["2026-03-10T11:55:00Z", "2026-03-10T11:00:00Z", "garbled"]
            ),
            "support_ticket": ticket,
            "human_approval": st.booleans(),
        },
    )
    return st.fixed_dictionaries(
        {"ip": st.sampled_from(IPS), "time": st.just(NOW), "attr": cattr},
        optional={"country": st.sampled_from(["US", "RU", "GB"])},
    )


# --- the oracle: Engine.check, row by row ---------------------------------------------------


def access_engine(engine: Engine) -> Engine:
    """The same policies without rate limits (when the policy set has any): limits meter calls,
    not resources, so a plan neither consults nor consumes them, and an oracle that checks
    thousands of rows must not run out of quota halfway."""
    if not getattr(engine.policy_set, "limits", None):
        return engine
    return Engine(dataclasses.replace(engine.policy_set, limits={}), engine.bundle)


def allowed_by_check(
    engine: Engine,
    principal: dict[str, Any],
    context: dict[str, Any],
    resources: list[dict[str, Any]],
    actions: Iterable[str],
) -> dict[str, set[str]]:
    """For each action, the ids of the resources Check allows."""
    from pdp.model.request import parse_check_request

    base = parse_check_request(
        {"principal": principal, "context": context,
         "resources": [{"kind": "k", "id": "x", "actions": ["a"]}]}
    )  # fmt: skip
    actions = tuple(actions)
    engine = access_engine(engine)
    out: dict[str, set[str]] = {a: set() for a in actions}
    for start in range(0, len(resources), 500):
        chunk = [
            ResourceRequest(resource=r, actions=actions) for r in resources[start : start + 500]
        ]
        req = make_check_request(base.principal, chunk, base.context, time=base.time)
        for res in engine.check(req).results:
            for a, dec in res.actions.items():
                if dec.allowed:
                    out[a].add(res.id)
    return out


TABLE = sa.Table(
    "res",
    sa.MetaData(),
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("tenant", sa.String, nullable=False),
    sa.Column("attrs", sa.Text),
)
COLUMNS = ColumnMap(
    fields={"resource.id": TABLE.c.id, "resource.tenant": TABLE.c.tenant},
    json={"resource.attr": TABLE.c.attrs},
)


def sqlite_table(resources: list[dict[str, Any]], path: str = "") -> sa.Engine:
    """A real SQLite database (a file when `path` is given) holding the resources."""
    db = sa.create_engine(f"sqlite:///{path}" if path else "sqlite://")
    TABLE.metadata.create_all(db)
    with db.begin() as conn:
        conn.execute(
            TABLE.insert(),
            [{"id": r["id"], "tenant": r["tenant"], "attrs": json.dumps(r["attr"])}
             for r in resources],
        )  # fmt: skip
    return db


def selected(db: sa.Engine, clause: Any) -> set[str]:
    with db.connect() as conn:
        return set(conn.scalars(sa.select(TABLE.c.id).where(clause)))


# A kind the planner must refuse: a string function applied to a resource attribute.
NOTE_POLICY = b"""apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions: {read: {}}
  rules:
    - id: drafts-by-prefix
      actions: [read]
      effect: allow
      condition: R.attr.title.startsWith("draft-")
"""


def policy_files_with_refusal() -> dict[str, bytes]:
    """The example policies plus `resources/note.yaml`, which cannot be planned."""
    files = {
        str(p.relative_to(POLICIES)): p.read_bytes() for p in POLICIES.rglob("*") if p.is_file()
    }
    files["resources/note.yaml"] = NOTE_POLICY
    return files

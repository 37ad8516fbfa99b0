"""AuthZEN resource search against Check over integers beyond 2^53.

Check reads a request number as a double when it is not an integer within ±2^53 (see
docs/POLICY_FORMAT.md, "Numbers in requests"): a row storing 2^53 + 1 is the resource
`{"n": 9007199254740993}`, which Check reads as 2^53. SQLite compares the stored integer
exactly, so the filter `n > 2^53` selected that row (and `n != 2^53`, `n in [2^53 + 1]`,
`n < 2^53 + 4` rows around it) while Check denied it on the same row. A comparison constant
within ±2^53 (exclusive) never disagrees (a stored value beyond it is beyond the constant
whichever way it is rounded), so those keep their plain, indexable SQL; a constant at or
beyond ±2^53 is refused (HTTP 422, naming it) instead of answered wrongly.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import pdp_serve

from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_files
from pdp.plan import parse_plan_request, plan
from pdp.plan.sqlalchemy import ColumnMap, InexactNumber, where_clause

P53 = 2**53
# action: condition. `n` is an INTEGER column; `doc` a JSON column holding `{"n": ...}` too.
ACTIONS = {
    "gt": f"R.attr.n > {P53}",
    "ne": f"R.attr.n != {P53}",
    "in": f"R.attr.n in [{P53 + 1}, 7]",
    "lt": f"R.attr.n < {P53 + 4}",
    "ge-max": f"R.attr.n >= {2**63 - 1}",
    "lt-neg": f"R.attr.n < -{P53}",
    "json-gt": f"R.attr.doc.n > {P53}",
    "json-ne": f"R.attr.doc.n != {P53}",
    "double": "R.attr.n > 9.1e15",
    # Constants within ±2^53: exact, and planned as before.
    "small-gt": "R.attr.n > 5",
    "near-ge": f"R.attr.n >= {P53 - 1}",
    "small-ne": "R.attr.n != 7",
    "small-lt": f"R.attr.n < -{P53 - 1}",
    "json-small": "R.attr.doc.n > 5",
}
BIG = {"gt", "ne", "in", "lt", "ge-max", "lt-neg", "json-gt", "json-ne", "double"}
ROWS = [
    ("r-01", 7),
    ("r-02", P53 - 1),
    ("r-03", P53),
    ("r-04", P53 + 1),  # Check reads 2^53
    ("r-05", P53 + 3),  # Check reads 2^53 + 4
    ("r-06", 2**63 - 1),  # Check reads 2^63
    ("r-07", -(P53 + 1)),  # Check reads -2^53
    ("r-08", 9_100_000_000_000_001),
]
SUBJECT = {"type": "user", "id": "ann", "properties": {"tenant": "acme", "roles": ["auditor"]}}


def _policy() -> str:
    rules = "".join(
        f"""
    - id: rule-{action}
      actions: [{action}]
      effect: allow
      roles: [auditor]
      condition: '{condition}'"""
        for action, condition in ACTIONS.items()
    )
    actions = "".join(f"\n    {a}: {{}}" for a in ACTIONS)
    return (
        textwrap.dedent("""
        apiVersion: pdp/v1
        kind: ResourcePolicy
        metadata: {id: counters}
        spec:
          resource: counter
          actions:""").lstrip()
        + textwrap.indent(actions, "  ")
        + "\n  rules:"
        + textwrap.indent(rules, "  ")
        + "\n"
    )


def _database(root: Path) -> list[str]:
    (root / "policies").mkdir()
    (root / "policies" / "counters.yaml").write_text(_policy())
    with sqlite3.connect(root / "counters.db") as db:
        db.execute("CREATE TABLE counters (id TEXT PRIMARY KEY, tenant TEXT, n INTEGER, doc TEXT)")
        db.executemany(
            "INSERT INTO counters VALUES (?, 'acme', ?, ?)",
            [(rid, n, f'{{"n": {n}}}') for rid, n in ROWS],
        )
        # The values are stored exactly, as integers (the premise of the bug).
        stored = db.execute("SELECT n, json_extract(doc, '$.n'), typeof(n) FROM counters")
        assert [(a, b, c) for a, b, c in stored] == [(n, n, "integer") for _, n in ROWS]
    (root / "search.yaml").write_text(
        "counter:\n  table: counters\n  id: id\n  tenant: tenant\n"
        "  attributes:\n    n: n\n  json_attributes:\n    doc: doc\n"
    )
    return [
        "--search-db",
        f"sqlite:///{root / 'counters.db'}",
        "--search-map",
        str(root / "search.yaml"),
    ]


def test_search_never_lists_a_row_check_denies_beyond_2_pow_53(tmp_path: Path) -> None:
    flags = _database(tmp_path)
    with pdp_serve(*flags, policies=tmp_path / "policies") as pdp:
        for action in ACTIONS:
            body = {"subject": SUBJECT, "action": {"name": action}}
            evaluations = [
                {"resource": {"type": "counter", "id": rid, "properties": {
                    "tenant": "acme", "n": n, "doc": {"n": n}}}}
                for rid, n in ROWS
            ]  # fmt: skip
            checked = pdp.post("/access/v1/evaluations", {**body, "evaluations": evaluations})
            assert checked.status == 200, checked.body[:300]
            allowed = [r[0] for r, e in zip(ROWS, checked.json["evaluations"]) if e["decision"]]
            reply = pdp.post(
                "/access/v1/search/resource", {**body, "resource": {"type": "counter"}}
            )
            if action in BIG:
                # Refused, naming the constant: never a list with a row Check denies.
                assert reply.status == 422, (action, reply.body[:300])
                assert "2^53" in reply.body.decode(), reply.body[:300]
            else:
                assert reply.status == 200, (action, reply.body[:300])
                listed = [r["id"] for r in reply.json["results"]]
                # Exactly Check's answer, rows beyond 2^53 included.
                assert listed == allowed, (action, listed, allowed)


def test_check_reads_a_stored_integer_beyond_2_pow_53_rounded() -> None:
    """The premise, through the engine: the row Check sees holds 2^53 for 2^53 + 1, so the
    exact SQL comparison is not Check's (without the refusal, these rows would be listed)."""
    engine = Engine(compile_policy_set(load_policy_files({"c.yaml": _policy().encode()})))
    from pdp.model.request import parse_check_request

    def allowed(action: str, n: int) -> bool:
        req = parse_check_request(
            {
                "principal": {"id": "ann", "tenant": "acme", "roles": ["auditor"]},
                "resources": [
                    {"kind": "counter", "id": "x", "tenant": "acme",
                     "attr": {"n": n, "doc": {"n": n}}, "actions": [action]}
                ],
            }
        )  # fmt: skip
        (result,) = engine.check(req).results
        return result.actions[action].effect == "allow"

    assert not allowed("gt", P53 + 1)  # SQL: 2^53 + 1 > 2^53
    assert not allowed("ne", P53 + 1)  # SQL: 2^53 + 1 != 2^53
    assert not allowed("in", P53 + 1)  # SQL: 2^53 + 1 in (2^53 + 1, 7)
    assert not allowed("lt", P53 + 3)  # SQL: 2^53 + 3 < 2^53 + 4
    assert not allowed("json-gt", P53 + 1)


def _plan_sql(action: str) -> tuple[Any, ColumnMap]:
    engine = Engine(compile_policy_set(load_policy_files({"c.yaml": _policy().encode()})))
    table = sa.Table(
        "counters",
        sa.MetaData(),
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("tenant", sa.String),
        sa.Column("n", sa.Integer),
        sa.Column("doc", sa.String),
    )
    columns = ColumnMap(
        fields={"resource.id": table.c.id, "resource.tenant": table.c.tenant,
                "resource.attr.n": table.c.n},
        json={"resource.attr.doc": table.c.doc},
    )  # fmt: skip
    principal = {"id": "ann", "tenant": "acme", "roles": ["auditor"]}
    p = plan(engine, parse_plan_request({"principal": principal, "action": action,
                                          "resource": {"kind": "counter"}}))  # fmt: skip
    return p, columns


@pytest.mark.parametrize("action", sorted(BIG))
def test_a_constant_at_or_beyond_2_pow_53_is_refused(action: str) -> None:
    p, columns = _plan_sql(action)
    with pytest.raises(InexactNumber, match=r"2\^53"):
        where_clause(p, columns)


@pytest.mark.parametrize("action", sorted(set(ACTIONS) - BIG))
def test_a_constant_within_2_pow_53_keeps_its_plain_comparison(action: str) -> None:
    p, columns = _plan_sql(action)
    sql = str(where_clause(p, columns).compile(compile_kwargs={"literal_binds": True}))
    assert "CAST" not in sql.upper()

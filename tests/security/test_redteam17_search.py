"""AuthZEN resource search over a plain column holding a value of another type than declared.

SQLite types values, not columns: an `INTEGER` column keeps `'n/a'` as text (what an
application that writes the table without `STRICT` stores when its form takes free text),
and a `TEXT` column keeps a BLOB. The filter compared plain columns without asking the
stored type, and SQLite orders every text above every number and every BLOB above every
text, so `R.attr.risk_score >= 70` selected the row holding `'n/a'`: a real `pdp serve`
listed it to a subject that `/access/v1/evaluations` (and Check) denies on the same row
(`"n/a" >= 70` has no overload in CEL: not an allow). JSON attributes were guarded with
`json_type` already; plain columns now are with `typeof`, and the search returns exactly
what Check allows.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

# tests/ on the path for the shared HTTP server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import pdp_serve

from pdp.engine import Engine, compile_policy_set
from pdp.model.loader import load_policy_dir, load_policy_files
from pdp.plan import parse_plan_request, plan
from pdp.plan.sqlalchemy import ColumnMap, where_clause

POLICY = """
    apiVersion: pdp/v1
    kind: ResourcePolicy
    metadata: {id: findings}
    spec:
      resource: finding
      actions:
        read: {}
        close: {}
        review: {}
      rules:
        - id: auditors-read-high-risk
          actions: [read]
          effect: allow
          roles: [auditor]
          condition: R.attr.risk_score >= 70
          reason: high_risk
        - id: auditors-close-past-deadline
          actions: [close]
          effect: allow
          roles: [auditor]
          condition: R.attr.due > "2026-01-01"
          reason: past_due
        - id: auditors-review-weighted
          actions: [review]
          effect: allow
          roles: [auditor]
          condition: R.attr.weight > 0.5
          reason: weighted
"""
SEARCH_MAP = """\
finding:
  table: findings
  id: id
  tenant: tenant
  attributes:
    risk_score: risk_score
    due: due
    weight: weight
"""
# (id, tenant, risk_score INTEGER, due TEXT, weight REAL): f-2 holds text where numbers are
# declared, f-3 a BLOB where text is.
ROWS: list[tuple[Any, ...]] = [
    ("f-1", "acme", 90, "2026-03-01", 0.9),
    ("f-2", "acme", "n/a", "2026-03-01", "heavy"),
    ("f-3", "acme", 95, b"2026-03-01", 0.75),
    ("f-4", "acme", 10, "2025-01-01", 0.25),
]
SUBJECT = {"type": "user", "id": "ann", "properties": {"tenant": "acme", "roles": ["auditor"]}}


def _database(root: Path) -> list[str]:
    (root / "policies").mkdir()
    (root / "policies" / "findings.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with sqlite3.connect(root / "findings.db") as db:
        db.execute(
            "CREATE TABLE findings (id TEXT PRIMARY KEY, tenant TEXT, risk_score INTEGER, "
            "due TEXT, weight REAL)"
        )
        db.executemany("INSERT INTO findings VALUES (?, ?, ?, ?, ?)", ROWS)
        stored = db.execute("SELECT typeof(risk_score), typeof(due), typeof(weight) FROM findings")
        assert stored.fetchall()[1:3] == [("text", "text", "text"), ("integer", "blob", "real")]
    (root / "search.yaml").write_text(SEARCH_MAP)
    return [
        "--search-db",
        f"sqlite:///{root / 'findings.db'}",
        "--search-map",
        str(root / "search.yaml"),
    ]


def _policy_dir(read_condition: str, root: Path | None = None) -> Any:
    """The policies with `read`'s condition replaced, loaded."""
    policy = textwrap.dedent(POLICY).replace("R.attr.risk_score >= 70", json.dumps(read_condition))
    if root is None:
        return load_policy_files({"findings.yaml": policy.encode()})
    (root / "findings.yaml").write_text(policy)
    return load_policy_dir(root)


def _properties(row: tuple[Any, ...]) -> dict[str, Any]:
    """The resource a row stands for (a BLOB is no JSON value: its text, which Check compares
    as a string would be the generous reading; it is the one the test takes)."""
    _, tenant, risk, due, weight = row
    due = due.decode() if isinstance(due, bytes) else due
    return {"tenant": tenant, "risk_score": risk, "due": due, "weight": weight}


def test_search_lists_only_what_check_allows_whatever_a_plain_column_stores(
    tmp_path: Path,
) -> None:
    flags = _database(tmp_path)
    with pdp_serve(*flags, policies=tmp_path / "policies") as pdp:
        # action: (what Check allows, what the search lists). f-3's BLOB read as text is
        # allowed by Check; a filter that leaves it out errs on the closed side.
        for action, (allowed, listed) in {
            "read": (["f-1", "f-3"], ["f-1", "f-3"]),
            "close": (["f-1", "f-2", "f-3"], ["f-1", "f-2"]),
            "review": (["f-1", "f-3"], ["f-1", "f-3"]),
        }.items():
            body = {"subject": SUBJECT, "action": {"name": action}}
            evaluations = [
                {"resource": {"type": "finding", "id": row[0], "properties": _properties(row)}}
                for row in ROWS
            ]
            checked = pdp.post("/access/v1/evaluations", {**body, "evaluations": evaluations})
            assert checked.status == 200, checked.body[:300]
            by_check = [r[0] for r, e in zip(ROWS, checked.json["evaluations"]) if e["decision"]]
            assert by_check == allowed, (action, by_check)
            search = {**body, "resource": {"type": "finding"}}
            reply = pdp.post("/access/v1/search/resource", search)
            assert reply.status == 200, reply.body[:300]
            assert [r["id"] for r in reply.json["results"]] == listed, action


@pytest.mark.parametrize(
    ("condition", "stored", "declared"),
    [
        ("R.attr.x > 3", "'abc'", "INTEGER"),
        ("R.attr.x >= 3.5", "'abc'", "REAL"),
        ("R.attr.x > 'a'", "x'62'", "TEXT"),
        ("R.attr.x >= 'a'", "x'62'", "VARCHAR(8)"),
        ("R.attr.x < 3", "x'00'", "INTEGER"),
        ("R.attr.x == 1", "'1x'", "INTEGER"),
        ("R.attr.x in ['b', 'c']", "x'62'", "TEXT"),
        ("!(R.attr.x > 3)", "'abc'", "INTEGER"),
        ("!(R.attr.x <= 'a')", "x'62'", "TEXT"),
    ],
)
def test_a_value_of_another_storage_class_is_never_selected(
    tmp_path: Path, condition: str, stored: str, declared: str
) -> None:
    engine = Engine(compile_policy_set(_policy_dir(condition, tmp_path)))
    db = sa.create_engine("sqlite://")
    with db.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE t (id TEXT PRIMARY KEY, tenant TEXT, x {declared})")
        conn.exec_driver_sql(f"INSERT INTO t VALUES ('odd', 'acme', {stored})")
    table = sa.Table("t", sa.MetaData(), autoload_with=db)
    columns = ColumnMap(
        fields={"resource.id": table.c.id, "resource.tenant": table.c.tenant,
                "resource.attr.x": table.c.x}
    )  # fmt: skip
    principal = {"id": "ann", "tenant": "acme", "roles": ["auditor"]}
    p = plan(engine, parse_plan_request({"principal": principal, "action": "read",
                                          "resource": {"kind": "finding"}}))  # fmt: skip
    with db.connect() as conn:
        assert conn.scalars(sa.select(table.c.id).where(where_clause(p, columns))).all() == []


def test_a_strictly_typed_database_gets_no_sqlite_function() -> None:
    table = sa.Table(
        "t",
        sa.MetaData(),
        *(sa.Column(name, sa.String) for name in ("id", "tenant")),
        sa.Column("x", sa.Integer),
    )
    engine = Engine(compile_policy_set(_policy_dir("R.attr.x > 3")))
    p = plan(engine, parse_plan_request({"principal": {"id": "ann", "tenant": "acme",
             "roles": ["auditor"]}, "action": "read", "resource": {"kind": "finding"}}))  # fmt: skip
    fields = {"resource.id": table.c.id, "resource.tenant": table.c.tenant}
    columns = ColumnMap(fields={**fields, "resource.attr.x": table.c.x})
    for dialect, typeof in [(postgresql.dialect(), False), (sqlite.dialect(), True)]:
        sql = str(where_clause(p, columns).compile(dialect=dialect))
        assert ("typeof(" in sql) is typeof, sql

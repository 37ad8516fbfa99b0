"""`where_clause` refuses a mapped column whose declared collation does not compare exactly.

`pdp serve --search-db` refuses a `NOCASE`/`RTRIM` text column at start-up
(test_redteam16_search.py), but the library path did not: a caller of
`pdp.plan.sqlalchemy.where_clause` mapping `tenant = Column(String(collation="NOCASE"))` got
a clause that, for tenant `acme`, selected tenant `ACME`'s rows. A collation declared on the
SQLAlchemy type (or by `.collate(...)`) is visible in the column map, so the clause is refused
with `InexactColumn` naming the column. Over real SQLite.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from pdp.plan.sqlalchemy import ColumnMap, InexactColumn, UnmappedField, where_clause

ACME = {"op": "eq", "args": [{"field": "resource.tenant"}, {"value": "acme"}]}
ROWS = [("doc-1", "acme"), ("doc-2", "ACME"), ("doc-3", "acme ")]


def _db(collation: str | None) -> tuple[sa.Engine, sa.Table]:
    tbl = sa.Table(
        "documents",
        sa.MetaData(),
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("tenant", sa.String(collation=collation)),
    )
    db = sa.create_engine("sqlite://")
    tbl.metadata.create_all(db)
    with db.begin() as conn:
        conn.execute(tbl.insert(), [{"id": i, "tenant": ten} for i, ten in ROWS])
    return db, tbl


def _ids(db: sa.Engine, tbl: sa.Table, clause: Any) -> list[str]:
    with db.connect() as conn:
        return list(conn.scalars(sa.select(tbl.c.id).where(clause).order_by(tbl.c.id)))


@pytest.mark.parametrize("collation", ["NOCASE", "RTRIM", "nocase"])
def test_a_declared_inexact_collation_is_refused_naming_the_column(collation: str) -> None:
    db, tbl = _db(collation)
    # What the clause would have done: the database compares by the column's collation.
    leaked = _ids(db, tbl, tbl.c.tenant == "acme")
    assert leaked != ["doc-1"], leaked
    cols = ColumnMap(fields={"resource.id": tbl.c.id, "resource.tenant": tbl.c.tenant})
    with pytest.raises(InexactColumn) as info:
        where_clause(ACME, cols)
    message = str(info.value)
    assert "documents.tenant" in message and "resource.tenant" in message, message
    assert collation in message, message
    assert isinstance(info.value, UnmappedField)  # callers that refuse unmapped fields refuse it


def test_a_collate_expression_is_refused_too() -> None:
    db, tbl = _db(None)
    assert _ids(db, tbl, tbl.c.tenant.collate("NOCASE") == "acme") == ["doc-1", "doc-2"]
    cols = ColumnMap(fields={"resource.tenant": tbl.c.tenant.collate("NOCASE")})
    with pytest.raises(InexactColumn, match="NOCASE"):
        where_clause(ACME, cols)


@pytest.mark.parametrize("collation", [None, "BINARY"])
def test_an_exact_column_selects_only_its_tenant(collation: str | None) -> None:
    db, tbl = _db(collation)
    cols = ColumnMap(fields={"resource.id": tbl.c.id, "resource.tenant": tbl.c.tenant})
    assert _ids(db, tbl, where_clause(ACME, cols)) == ["doc-1"]

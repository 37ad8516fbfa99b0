"""The filter language: one meaning, three renderings.

For generated formulas (every operator, under negation) and generated resources (JSON values
of every type, missing keys, nesting), the reference evaluator `holds`, the SQLAlchemy clause
on real SQLite, the CEL text compiled by pdp's CEL, and the JSON round trip all agree.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.cel import CelEnv, compile_cel
from pdp.plan import tree as t
from pdp.plan.sqlalchemy import ColumnMap, UnmappedField, where_clause

from . import _gen as g

PATHS = [("id",), ("tenant",), ("attr",), ("attr", "a"), ("attr", "b"), ("attr", "a", "b")]
SCALARS = st.one_of(
    st.sampled_from(["x", "y", "", "1", "a", "b"]),
    st.booleans(),
    st.none(),
    st.integers(-2, 2),
    st.sampled_from([1.0, -0.5, 2.0]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "x", "y"]), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def atoms(draw: st.DrawFn) -> t.Formula:
    path = draw(st.sampled_from(PATHS))
    op = draw(st.sampled_from(sorted(t.ATOM_OPS)))
    if op == "exists":
        return t.atom(op, path)
    if op == "is":
        return t.atom(op, path, draw(st.sampled_from(t.TYPES)))
    if op in ("in", "subset"):
        return t.atom(op, path, draw(st.lists(SCALARS, max_size=3)))
    if op == "has_key":
        return t.atom(op, path, draw(st.sampled_from(["a", "b", "x"])))
    if op in t.COMPARE_OPS:
        return t.atom(op, path, draw(st.sampled_from(["a", "x", "", 0, 1, 1.5, -1])))
    return t.atom(op, path, draw(SCALARS))


formulas = st.recursive(
    atoms(),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: t.and_(*xs))
        | st.lists(inner, min_size=1, max_size=3).map(lambda xs: t.or_(*xs))
        | inner.map(t.not_)
    ),
    max_leaves=8,
)
resources = st.lists(
    st.fixed_dictionaries(
        {
            "tenant": st.sampled_from(["x", "", "a"]),
            "attr": st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, max_size=3),
        }
    ),
    min_size=1,
    max_size=25,
).map(lambda rows: [{"kind": "k", "id": f"{'xya'[i % 3]}{i}", **r} for i, r in enumerate(rows)])


def _cel(f: t.Formula) -> Any:
    return compile_cel(t.to_cel(f), CelEnv(), require_bool=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(f=formulas, rows=resources)
def test_sql_cel_json_and_reference_agree(f: t.Formula, rows: list[dict[str, Any]]) -> None:
    want = {r["id"] for r in rows if t.holds(f, r)}
    db = g.sqlite_table(rows)
    assert (
        g.selected(db, where_clause({"planVersion": 1, "filter": t.to_json(f)}, g.COLUMNS)) == want
    )
    fn = _cel(f)
    assert {r["id"] for r in rows if fn({"resource": r}) is True} == want
    back = t.from_json(t.to_json(f))
    assert {r["id"] for r in rows if t.holds(back, r)} == want


def test_atoms_follow_cel_equality() -> None:
    r = {"kind": "k", "id": "1", "tenant": "a", "attr": {"n": 1, "f": True, "s": "1", "x": None}}
    assert t.holds(t.atom("eq", ("attr", "n"), 1.0), r)  # 1 == 1.0
    assert not t.holds(t.atom("eq", ("attr", "f"), 1), r)  # true != 1
    assert not t.holds(t.atom("eq", ("attr", "s"), 1), r)  # "1" != 1
    assert t.holds(t.atom("eq", ("attr", "x"), None), r)
    assert not t.holds(t.atom("exists", ("attr", "missing")), r)
    assert not t.holds(t.atom("eq", ("attr", "missing"), None), r)  # absent is not null


def test_constructors_fold_what_types_decide() -> None:
    assert t.atom("eq", t.ID, 3) == t.FALSE  # ids are strings
    assert t.atom("exists", t.TENANT) == t.TRUE
    assert t.atom("is", t.ATTR, "map") == t.TRUE
    assert t.atom("contains", t.TENANT, "a") == t.FALSE
    owner = t.atom("eq", ("attr", "owner"), "alice")
    assert t.and_(t.atom("exists", ("attr", "owner")), owner) == owner
    assert t.and_(owner, t.not_(owner)) == t.FALSE
    assert t.or_(owner, t.not_(owner)) == t.TRUE
    assert t.or_(owner, t.and_(owner, t.atom("eq", t.ID, "x"))) == owner
    # true and 1 stay distinct atoms (Python's == would merge them).
    a, b = t.atom("eq", ("attr", "f"), True), t.atom("eq", ("attr", "f"), 1)
    assert isinstance(t.or_(a, b), t.Or)


@pytest.mark.parametrize(
    "bad",
    [
        {"op": "nope"},
        {"op": "eq", "args": [{"field": "principal.id"}, {"value": "x"}]},
        {"op": "eq", "args": [{"field": "resource.attr.a-b"}, {"value": "x"}]},
        {"op": "eq", "args": [{"field": "resource.attr.a"}, {"value": [1]}]},
        {"op": "in", "args": [{"field": "resource.attr.a"}, {"value": "x"}]},
        {"op": "is", "args": [{"field": "resource.attr.a"}, {"value": "timestamp"}]},
        {"op": "lt", "args": [{"field": "resource.attr.a"}, {"value": True}]},
        {"op": "and", "args": "x"},
        {"op": "not", "args": []},
        "eq",
    ],
)
def test_from_json_rejects_malformed_filters(bad: Any) -> None:
    with pytest.raises(ValueError):
        t.from_json(bad)


def test_unmapped_field_refuses_rather_than_guesses() -> None:
    cols = ColumnMap(fields={"resource.id": g.TABLE.c.id})
    with pytest.raises(UnmappedField):
        where_clause({"op": "eq", "args": [{"field": "resource.attr.owner"}, {"value": "a"}]}, cols)


def test_plain_columns_map_absent_to_null() -> None:
    """A plain (non-JSON) column: NULL is an absent attribute, its SQL type its CEL type."""
    md = sa.MetaData()
    tbl = sa.Table(
        "docs", md, sa.Column("id", sa.String, primary_key=True), sa.Column("owner", sa.String),
        sa.Column("level", sa.Integer), sa.Column("flag", sa.Boolean),
    )  # fmt: skip
    db = sa.create_engine("sqlite://")
    md.create_all(db)
    rows = [
        {"id": "1", "owner": "alice", "level": 3, "flag": True},
        {"id": "2", "owner": None, "level": None, "flag": None},
        {"id": "3", "owner": "bob", "level": 1, "flag": False},
    ]
    with db.begin() as c:
        c.execute(tbl.insert(), rows)
    cols = ColumnMap(
        fields={"resource.id": tbl.c.id, "resource.attr.owner": tbl.c.owner,
                "resource.attr.level": tbl.c.level, "resource.attr.flag": tbl.c.flag}
    )  # fmt: skip

    def ids(f: t.Formula) -> set[str]:
        with db.connect() as c:
            return set(c.scalars(sa.select(tbl.c.id).where(where_clause(t.to_json(f), cols))))

    owner = ("attr", "owner")
    assert ids(t.not_(t.atom("eq", owner, "alice"))) == {"2", "3"}
    assert ids(t.atom("exists", owner)) == {"1", "3"}
    assert ids(t.atom("ge", ("attr", "level"), 2)) == {"1"}
    assert ids(t.not_(t.atom("lt", ("attr", "level"), 2))) == {"1", "2"}
    assert ids(t.atom("eq", ("attr", "flag"), True)) == {"1"}
    assert ids(t.atom("eq", ("attr", "flag"), 1)) == set()  # a bool is not the number 1
    assert ids(t.atom("eq", owner, 1)) == set()

"""Red-team sweep 19: a filter as wide as a caller's list still runs on the database.

`hasAny(R.attr.tags, P.attr.groups)` is planned as an `or` of one `contains` per group, and
`hasAll(P.scopes, R.attr.scopes)` as a `subset` over the caller's scopes, rendered as an `OR`
of one comparison per value. SQLite parses `a OR b OR c ...` as a chain as deep as it is long
and refuses one past 1,000 (`Expression tree is too large`): a subject with 1,500 groups got
a 503 "the search database is unavailable" from resource search, and a traceback in pdp's log
per call. Wide `and`/`or` are now balanced trees of groups, and `subset`/`in` are `IN` lists.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.plan import tree as t
from pdp.plan.sqlalchemy import ColumnMap, where_clause

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.search_db import search_setup
from authzen.support import POLICIES, Pdp, pdp_serve

# -- where_clause against SQLite, with the reference evaluator as the oracle -----------------

_SCALARS = st.one_of(
    st.sampled_from(["g1", "g2", "g3", "x"]), st.integers(-3, 3), st.booleans(), st.none()
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=4), st.dictionaries(
    st.sampled_from(["g1", "g2"]), _SCALARS, max_size=2))  # fmt: skip


@pytest.fixture(scope="module")
def table() -> Iterator[tuple[sa.Engine, sa.Table]]:
    engine = sa.create_engine("sqlite://")
    md = sa.MetaData()
    rows = sa.Table(
        "r", md, sa.Column("id", sa.String, primary_key=True), sa.Column("attrs", sa.String)
    )
    md.create_all(engine)
    yield engine, rows
    engine.dispose()


def _selected(engine: sa.Engine, rows: sa.Table, f: t.Formula) -> set[str]:
    columns = ColumnMap(fields={"resource.id": rows.c.id}, json={"resource.attr": rows.c.attrs})
    with engine.connect() as conn:
        clause = where_clause(t.to_json(f), columns)  # as received over the wire
        return set(conn.scalars(sa.select(rows.c.id).where(clause)))


def _wide(op: str, n: int, groups: list[Any]) -> t.Formula:
    atoms = [t.atom_unchecked("contains", ("attr", "tags"), g) for g in groups]
    atoms += [t.atom_unchecked("contains", ("attr", "tags"), f"pad-{i}") for i in range(n)]
    return t.Or(tuple(atoms)) if op == "or" else t.And(tuple(atoms))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    attrs=st.lists(st.dictionaries(st.sampled_from(["tags", "n"]), _VALUES, max_size=2),
                   min_size=1, max_size=6),
    op=st.sampled_from(["or", "and"]),
    width=st.sampled_from([3, 65, 150]),  # both sides of the balanced rendering's threshold
    values=st.lists(_SCALARS, max_size=3),
)  # fmt: skip
def test_a_wide_filter_selects_exactly_what_it_holds_for(
    table: tuple[sa.Engine, sa.Table], attrs: list[dict[str, Any]], op: str, width: int,
    values: list[Any],
) -> None:  # fmt: skip
    engine, rows = table
    with engine.begin() as conn:
        conn.execute(rows.delete())
        conn.execute(rows.insert(), [{"id": f"r{i}", "attrs": json.dumps(a)}
                                     for i, a in enumerate(attrs)])  # fmt: skip
    resources = {f"r{i}": {"kind": "k", "id": f"r{i}", "tenant": "", "attr": a}
                 for i, a in enumerate(attrs)}  # fmt: skip
    scalars = tuple(values)
    formulas = [
        _wide(op, width, list(scalars)),
        t.atom_unchecked(
            "subset", ("attr", "tags"), scalars + tuple(f"s{i}" for i in range(width))
        ),
        t.atom_unchecked("in", ("attr", "n"), scalars + tuple(range(100, 100 + width))),
        t.Not(_wide(op, width, list(scalars))),
    ]
    for f in formulas:
        expected = {rid for rid, r in resources.items() if t.holds(f, r)}
        assert _selected(engine, rows, f) == expected


def test_past_sqlites_depth_a_filter_still_runs(table: tuple[sa.Engine, sa.Table]) -> None:
    engine, rows = table
    attrs = [{"tags": ["g1"]}, {"tags": ["pad-1099"]}, {"tags": []}, {}]
    with engine.begin() as conn:
        conn.execute(rows.delete())
        conn.execute(rows.insert(), [{"id": f"r{i}", "attrs": json.dumps(a)}
                                     for i, a in enumerate(attrs)])  # fmt: skip
    wide = 1100  # SQLite refuses a chain deeper than 1,000
    assert _selected(engine, rows, _wide("or", wide, ["g1"])) == {"r0", "r1"}
    assert _selected(engine, rows, _wide("and", wide, [])) == set()
    many = tuple(f"s{i}" for i in range(wide))
    assert _selected(engine, rows, t.atom_unchecked("subset", ("attr", "tags"), many)) == {"r2"}


# -- resource search over a real `pdp serve --search-db` -------------------------------------

GROUP_POLICY = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions: {read: {}}
  rules:
    - id: any-of-my-groups
      actions: [read]
      effect: allow
      condition: has(P.attr.groups) && has(R.attr.tags) && hasAny(R.attr.tags, P.attr.groups)
"""
GROUPS = [f"group-{i}" for i in range(1500)]


@pytest.fixture(scope="module")
def pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pdp]:
    tmp = tmp_path_factory.mktemp("redteam19-search")
    flags, _, pol = search_setup(tmp, POLICIES)
    (pol / "resources" / "note.yaml").write_text(GROUP_POLICY)
    with sqlite3.connect(tmp / "docs.db") as db:
        db.executemany(
            "INSERT INTO notes VALUES (?, 'acme', ?)",
            [
                ("n-2", json.dumps({"tags": ["group-1499"]})),
                ("n-3", json.dumps({"tags": ["other"]})),
                ("n-4", json.dumps({"tags": ["other", "group-0"]})),
            ],
        )
    with pdp_serve(*flags, policies=pol) as p:
        yield p


def test_a_subject_in_many_groups_is_searched_not_a_503(pdp: Pdp) -> None:
    body = {
        "subject": {
            "type": "user",
            "id": "alice",
            "properties": {"tenant": "acme", "groups": GROUPS},
        },
        "action": {"name": "read"},
        "resource": {"type": "note"},
    }
    reply = pdp.post("/access/v1/search/resource", body)
    assert reply.status == 200, reply.body[:300]
    assert [r["id"] for r in reply.json["results"]] == ["n-2", "n-4"]
    assert "Traceback" not in "".join(pdp.stderr)

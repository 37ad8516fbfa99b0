"""Red-team sweep 26: the rows a plan's SQL selects are the rows Check allows, for values a
real application stores.

A differential test: one policy (allow the owner, allow whom the document is shared with,
deny a blocked reader, deny a quarantined level), planned for a principal, the filter run by
`pdp.plan.sqlalchemy.where_clause` on a real SQLite table (a JSON text column for `attr`, a
plain `INTEGER` column for `level`), and Check on each row's resource as the oracle:
the resource an application builds from the row (`json.loads` of the column, the plain
column's value as SQLite returns it).

Holes found:

- SQLite's JSON functions (before 3.45) cut a string at an escaped NUL: `json.dumps` writes
  `"alice\\u0000x"` and `json_extract` returns `alice`. A row owned by `alice\\x00x` (a name
  an application stores as typed) was listed to `alice`; a row shared with `bob\\x00` was
  listed to `bob`. A JSON column whose text holds `\\u0000` is now never selected (fail
  closed: Check may allow such a row; the filter cannot compare it).
- A plain `INTEGER` column keeps free text (`'restricted'`) as text, and the filter
  compared it by its declared type only: `R.attr.level == "restricted"` was `false` on every
  row, so the deny rule removed nothing and the row was listed. On SQLite a text stored in a
  non-text column is now compared as the text it is.
- One row whose JSON text SQLite does not parse (`json.dumps` writes `NaN`), in any tenant,
  made every query of the table raise "malformed JSON": every search answered 503. The row
  is now left out (failing closed) and the others are listed.

Also: the same plan asked through every door (the Python API, `POST /v1/plan`, the Plan RPC
on the native transport and on grpcio) selects the same rows; principals and values are
look-alikes (case, trailing space, NFC/NFD, fullwidth and Cyrillic letters, LIKE's `%` `_`
`\\`), `-0.0`, ints past 2^53, `true` vs `1` (SQLite stores a boolean as an int), `"5"` in an
INTEGER column, lists and maps.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sqlite3
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.loader import load_policy_files
from pdp.model.request import ResourceRequest, make_check_request, parse_check_request
from pdp.plan import ALWAYS_DENIED, parse_plan_request, plan
from pdp.plan import tree as t
from pdp.plan.sqlalchemy import ColumnMap, where_clause
from pdp.server import ServerConfig, build_server
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import pdp_serve

POLICY = textwrap.dedent("""\
    apiVersion: pdp/v1
    kind: ResourcePolicy
    metadata: {id: docs}
    spec:
      resource: doc
      actions: {read: {}}
      rules:
        - id: restricted-level
          actions: [read]
          effect: deny
          condition: R.attr.level == "restricted"
        - id: archived
          actions: [read]
          effect: deny
          condition: R.attr.archived == true
        - id: negative-score
          actions: [read]
          effect: deny
          condition: has(R.attr.score) && R.attr.score < 0
        - id: owner
          actions: [read]
          effect: allow
          condition: R.attr.owner == P.id
        - id: shared
          actions: [read]
          effect: allow
          condition: P.id in R.attr.shared_with
        - id: delegates
          actions: [read]
          effect: allow
          condition: R.attr.owner in P.attr.delegates
        - id: reviewers
          actions: [read]
          effect: allow
          roles: [reviewer]
          condition: R.attr.status in ["open", "review"] && R.attr.level < 100
""")
ENGINE = Engine(compile_policy_set(load_policy_files({"docs.yaml": POLICY.encode()})))

# Names that differ from `alice` only where SQLite or a careless filter might not see it: an
# escaped NUL (what `json.dumps` writes for U+0000), case, a trailing space, look-alikes,
# NFC/NFD, LIKE's metacharacters.
NAMES = ["alice", "Alice", "alice ", "alice\x00", "alice\x00x", "\x00alice", "\uff41lice", "al\u0456ce",
         "\u00e9", "e\u0301", "%", "_", "\\", "ali%", ""]  # fmt: skip
# The ones a principal id may be (no NUL, no surrounding space, not empty).
PRINCIPAL_IDS = ["alice", "Alice", "\uff41lice", "al\u0456ce", "\u00e9", "e\u0301",
                 "%", "_", "\\", "ali%"]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(NAMES), st.sampled_from([True, False, None, 0, 1, -0.0, 1.5, 2**53 + 1]),
    st.sampled_from(["true", "1", "open", "OPEN", "review", "restricted"]),
)  # fmt: skip
LEVELS = [None, 0, 3, 150, -0.0, 1.5, "restricted", "Restricted", "restricted ",
          "restricted\x00", "5", "n/a", 2**53 + 1]  # fmt: skip


def _attr(draw: st.DrawFn) -> dict[str, Any]:
    keys = {
        "owner": st.sampled_from(NAMES) | SCALARS,
        "archived": st.sampled_from([True, False, 1, 0, "true", None]),
        "score": st.sampled_from(
            [
                -0.0,
                0,
                -1,
                -1.5,
                2**53 + 1,
                -(2**53) - 1,
                "5",
                "-1",
                None,
                float("nan"),
                float("-inf"),
            ]
        ),  # json.dumps: NaN, -Infinity
        "status": st.sampled_from(["open", "OPEN", "review", "review\x00", "open ", 1, None]),
        "shared_with": st.one_of(
            st.lists(SCALARS, max_size=3),
            st.dictionaries(st.sampled_from(NAMES), SCALARS, max_size=2),
            SCALARS,
        ),
    }
    chosen = draw(st.sets(st.sampled_from(sorted(keys))))
    return {k: draw(keys[k]) for k in sorted(chosen)}


@st.composite
def rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    out = []
    for i in range(draw(st.integers(1, 8))):
        attr = _attr(draw)
        shared = attr.pop("shared_with", None) if draw(st.booleans()) else None
        tenant = draw(st.sampled_from(["acme", "ACME", "acme ", "acm\u0435", "acme\x00"]))
        level = draw(st.sampled_from(LEVELS))
        out.append((f"d{i}", tenant, level, json.dumps(attr),
                    None if shared is None else json.dumps(shared)))  # fmt: skip
    return out


def _create(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, tenant TEXT, level INTEGER, "
               "attrs TEXT, shared TEXT)")  # fmt: skip


@pytest.fixture(scope="module")
def table() -> Iterator[tuple[sa.Engine, ColumnMap]]:
    db = sa.create_engine("sqlite://")
    with db.begin() as conn:
        _create(conn.connection.driver_connection)  # type: ignore[arg-type]
    docs = sa.Table("docs", sa.MetaData(), autoload_with=db)
    columns = ColumnMap(
        fields={"resource.id": docs.c.id, "resource.tenant": docs.c.tenant,
                "resource.attr.level": docs.c.level},
        json={"resource.attr": docs.c.attrs, "resource.attr.shared_with": docs.c.shared},
    )  # fmt: skip
    yield db, columns
    db.dispose()


def _resource(row: tuple[Any, ...]) -> dict[str, Any]:
    """What an application reads the row as, the way the column map says: the JSON object,
    over it the plain column and the JSON attribute column when not NULL (as stored)."""
    rid, tenant, level, attrs, shared = row
    attr = {k: v for k, v in json.loads(attrs).items() if k not in ("level", "shared_with")}
    if level is not None:
        attr["level"] = level
    if shared is not None:
        attr["shared_with"] = json.loads(shared)
    return {"kind": "doc", "id": rid, "tenant": tenant, "attr": attr}


def _allowed(principal: dict[str, Any], stored: list[tuple[Any, ...]]) -> set[str]:
    base = parse_check_request({"principal": principal, "resources": [
        {"kind": "doc", "id": "x", "actions": ["read"]}]})  # fmt: skip
    chunk = [ResourceRequest(resource=_resource(r), actions=("read",)) for r in stored]
    results = ENGINE.check(make_check_request(base.principal, chunk, base.context)).results
    return {res.id for res in results if res.actions["read"].allowed}


def _selected(db: sa.Engine, columns: ColumnMap, principal: dict[str, Any]) -> set[str]:
    p = plan(ENGINE, parse_plan_request({"principal": principal, "action": "read",
                                         "resource": {"kind": "doc"}}))  # fmt: skip
    if p.kind == ALWAYS_DENIED:
        return set()
    ids = columns.fields["resource.id"]
    with db.connect() as conn:
        return set(conn.scalars(sa.select(ids).where(where_clause(p, columns))))


def _store(db: sa.Engine, table_rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Insert the rows and read them back as SQLite stores them (`'5'` in an INTEGER column
    is the integer 5)."""
    with db.begin() as conn:
        conn.exec_driver_sql("DELETE FROM docs")
        conn.exec_driver_sql("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", table_rows)
        return [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM docs ORDER BY id")]


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(table_rows=rows(), pid=st.sampled_from(PRINCIPAL_IDS),
       roles=st.sampled_from([["user"], ["reviewer"]]))  # fmt: skip
def test_the_rows_sql_selects_are_the_rows_check_allows(
    table: tuple[sa.Engine, ColumnMap], table_rows: list[tuple[Any, ...]], pid: str,
    roles: list[str],
) -> None:  # fmt: skip
    db, columns = table
    stored = _store(db, table_rows)
    principal = {"id": pid, "tenant": "acme", "roles": roles}
    _assert_agrees(_selected(db, columns, principal), _allowed(principal, stored), stored)


def _assert_agrees(got: set[str], want: set[str], stored: list[tuple[Any, ...]]) -> None:
    """Nothing Check denies is selected; what Check allows is, unless an attribute holds an
    escaped NUL or the JSON text is not JSON to SQLite (`NaN`): the filter leaves those out,
    failing closed."""
    assert got <= want, ("selected, Check denies", sorted(got - want)[:5])
    odd = ("\\u0000", "NaN", "Infinity")
    unreadable = {r[0] for r in stored if any(o in (c or "") for c in r[3:] for o in odd)}
    assert want - got <= unreadable, ("hidden, Check allows", sorted(want - got - unreadable))


# The rows that leaked before the fixes, each to `alice` (a user) or `rita` (a reviewer).
# (`archived: false` and a `level`: without them the deny rules' conditions fail, a deny.)
def _doc(level: Any = 1, shared: Any = None, **attr: Any) -> tuple[Any, ...]:
    attrs = json.dumps({"archived": False, **attr})
    return ("d1", "acme", level, attrs, None if shared is None else json.dumps(shared))


LEAKS = [
    ("owned by alice\\x00x", _doc(owner="alice\x00x")),
    ("shared with alice\\x00", _doc(shared=["alice\x00"])),
    ("shared with {alice\\x00: ...}", _doc(shared={"alice\x00": 1})),
    ("status open\\x00", _doc(status="open\x00")),
    ("level 'restricted' in INTEGER", _doc("restricted", owner="alice", status="open")),
]
# Rows SQLite's JSON functions cannot read (`json.dumps` writes `NaN`, `Infinity`): one, in
# any tenant, made every query of the table fail ("malformed JSON"), a 503 from every search.
UNREADABLE = [
    ("g1", "globex", 1, json.dumps({"archived": False, "owner": "mallory", "score": math.nan}),
     None),
    ("g2", "acme", 1, json.dumps({"archived": False, "owner": "alice", "score": math.inf}),
     None),
]  # fmt: skip


def test_a_row_sqlite_cannot_read_fails_no_query(table: tuple[sa.Engine, ColumnMap]) -> None:
    db, columns = table
    stored = _store(db, [*UNREADABLE, _doc(owner="alice")])
    principal = {"id": "alice", "tenant": "acme", "roles": ["user"]}
    assert _allowed(principal, stored) == {"d1", "g2"}  # Check reads g2 (Python reads NaN)
    assert _selected(db, columns, principal) == {"d1"}  # g2: left out, failing closed


@pytest.mark.parametrize(("why", "row"), LEAKS, ids=[w for w, _ in LEAKS])
def test_a_row_check_denies_is_not_selected(
    table: tuple[sa.Engine, ColumnMap], why: str, row: tuple[Any, ...]
) -> None:
    db, columns = table
    stored = _store(db, [row])
    for principal in ({"id": "alice", "tenant": "acme", "roles": ["user"]},
                      {"id": "rita", "tenant": "acme", "roles": ["reviewer"]}):  # fmt: skip
        assert _allowed(principal, stored) == set()
        assert _selected(db, columns, principal) == set(), (why, principal["id"])


SEARCH_MAP = """\
doc:
  table: docs
  id: id
  tenant: tenant
  attributes: {level: level}
  json_attributes: {shared_with: shared}
  json: attrs
"""
FINE = [("d0", "acme", 2, json.dumps({"archived": False, "owner": "alice", "status": "open"}),
         json.dumps(["rita"]))]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[Any]]]:
    """One `pdp serve` (native gRPC, HTTP, resource search over the rows above and a row of
    another tenant whose JSON SQLite cannot read)."""
    root = tmp_path_factory.mktemp("rt26plan")
    (root / "policies").mkdir()
    (root / "policies" / "docs.yaml").write_text(POLICY)
    (root / "search.yaml").write_text(SEARCH_MAP)
    table_rows = FINE + [(f"d{i}", *row[1:]) for i, (_, row) in enumerate(LEAKS, start=1)]
    with sqlite3.connect(root / "docs.db") as db:
        _create(db)
        db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", UNREADABLE[:1])
        db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", table_rows)
    flags = ["--search-db", f"sqlite:///{root / 'docs.db'}",
             "--search-map", str(root / "search.yaml")]  # fmt: skip
    with pdp_serve(*flags, policies=root / "policies") as pdp:
        yield pdp, table_rows


def test_resource_search_lists_what_evaluations_allow(served: tuple[Any, list[Any]]) -> None:
    """The same rows through a real `pdp serve --search-db`: the search lists what
    `/access/v1/evaluations` allows on the rows' resources, and nothing else."""
    pdp, table_rows = served
    for sid, roles in (("alice", ["user"]), ("rita", ["reviewer"])):
        body = {"subject": {"type": "user", "id": sid,
                            "properties": {"tenant": "acme", "roles": roles}},
                "action": {"name": "read"}}  # fmt: skip
        evaluations = [{"resource": {"type": "doc", "id": r["id"],
                                     "properties": {"tenant": r["tenant"], **r["attr"]}}}
                       for r in map(_resource, table_rows)]  # fmt: skip
        checked = pdp.post("/access/v1/evaluations", {**body, "evaluations": evaluations})
        assert checked.status == 200, checked.body[:300]
        allowed = [r[0] for r, e in zip(table_rows, checked.json["evaluations"], strict=True)
                   if e["decision"]]  # fmt: skip
        assert allowed == ["d0"], (sid, allowed)
        reply = pdp.post("/access/v1/search/resource", {**body, "resource": {"type": "doc"}})
        assert reply.status == 200, reply.body[:300]
        assert [r["id"] for r in reply.json["results"]] == allowed, sid


# Principals whose ids and delegate lists are the look-alikes and mixed types above: every
# door must plan them alike (no door normalizes a name, turns `1` into `true`, drops `-0.0`).
DOOR_PRINCIPALS = [
    {"id": pid, "tenant": "acme", "roles": roles,
     "attr": {"delegates": [*[n for n in NAMES if n != pid][:k], 1, True, -0.0, None, 1.5]}}
    for k, (pid, roles) in enumerate(
        [*[(p, ["user"]) for p in PRINCIPAL_IDS], ("rita", ["reviewer"])], start=2)
]  # fmt: skip


def _door_rows() -> list[tuple[Any, ...]]:
    rng = random.Random(26)
    values = [*NAMES, True, False, None, 0, 1, -0.0, 1.5, 2**53 + 1, "open", "review", "1"]
    out = []
    for i in range(400):
        attr = {"archived": rng.choice([False, False, True, 0, None]),
                "owner": rng.choice(values), "status": rng.choice(values)}  # fmt: skip
        shared = rng.choice([None, [rng.choice(values)], {rng.choice(NAMES): 1}])
        out.append((f"r{i:03}", rng.choice(["acme", "ACME", "acme "]), rng.choice(LEVELS),
                    json.dumps(attr), None if shared is None else json.dumps(shared)))  # fmt: skip
    return out


def test_every_door_plans_the_same_rows(
    served: tuple[Any, list[Any]], table: tuple[sa.Engine, ColumnMap]
) -> None:
    """The Python API, `POST /v1/plan`, the Plan RPC on the native transport and on grpcio:
    each plan's filter (as received: a Struct's numbers are doubles) selects, on the same
    adversarial table, exactly the rows Check allows."""
    pdp, _ = served
    db, columns = table
    stored = _store(db, _door_rows())
    grpcio = build_server(EngineHolder(ENGINE), ServerConfig(listen=("127.0.0.1:0",)))
    grpcio.start()
    try:
        with (
            grpc.insecure_channel(pdp.grpc_address) as native,
            grpc.insecure_channel(grpcio.addresses[0]) as threaded,
        ):
            stubs = {"native": pb_grpc.DecisionServiceStub(native),
                     "grpcio": pb_grpc.DecisionServiceStub(threaded)}  # fmt: skip
            for principal in DOOR_PRINCIPALS:
                body = {"principal": principal, "action": "read", "resource": {"kind": "doc"}}
                filters = {"python": plan(ENGINE, parse_plan_request(body)).to_dict()["filter"]}
                reply = pdp.post("/v1/plan", body)
                assert reply.status == 200, reply.body[:300]
                filters["http"] = reply.json["filter"]
                msg = pb.PlanRequest(principal=json_format.ParseDict(principal, pb.Principal()),
                                     resource_kind="doc", action="read")  # fmt: skip
                for name, stub in stubs.items():
                    resp = stub.Plan(msg, timeout=30)
                    filters[name] = json_format.MessageToDict(resp.filter)
                want = _allowed(principal, stored)
                ids = columns.fields["resource.id"]
                with db.connect() as conn:
                    got = {door: set(conn.scalars(sa.select(ids).where(where_clause(f, columns))))
                           for door, f in filters.items()}  # fmt: skip
                assert all(g == got["python"] for g in got.values()), (principal, got)
                _assert_agrees(got["python"], want, stored)
    finally:
        grpcio.stop(0)


def test_plain_columns_of_any_storage_class_match_the_reference_evaluator() -> None:
    """Each atom and its negation over plain INTEGER, REAL and TEXT columns holding values of
    every storage class (as SQLite keeps them: `'1'` in an INTEGER column is 1, `'n/a'` stays
    text) selects the rows `pdp.plan.tree.holds` holds for on the values as stored."""
    db = sa.create_engine("sqlite://")
    values = [None, 1, -0.0, 1.5, "a", "n/a", "a\x00", "1", 2**53 + 1]
    with db.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE r (id TEXT PRIMARY KEY, i INTEGER, f REAL, s TEXT)")
        rows = [(f"r{n:04}", *v) for n, v in enumerate(itertools.product(values, repeat=3))]
        conn.exec_driver_sql("INSERT INTO r VALUES (?, ?, ?, ?)", rows)
        stored = [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM r")]
    r = sa.Table("r", sa.MetaData(), autoload_with=db)
    columns = ColumnMap(fields={"resource.id": r.c.id, "resource.attr.i": r.c.i,
                                "resource.attr.f": r.c.f, "resource.attr.s": r.c.s})  # fmt: skip
    resources = [{"kind": "k", "id": row[0], "tenant": "",
                  "attr": {k: v for k, v in zip("ifs", row[1:], strict=True) if v is not None}}
                 for row in stored]  # fmt: skip
    consts: list[Any] = [1, -0.0, 1.5, "a", "n/a", "1", "", True, None]
    args: dict[str, list[Any]] = {
        "exists": [()], "is": [("int",), ("double",), ("string",), ("bool",), ("list",)],
        "eq": [(v,) for v in consts], "in": [([1, "n/a", None],), (["a", 1.5, True],)],
        "lt": [(v,) for v in (1, 1.5, "a", "n/a")], "ge": [(v,) for v in (1, "a", "")],
        "contains": [("a",)],
    }  # fmt: skip
    with db.connect() as conn:
        for name, op in itertools.product("ifs", args):
            for extra in args[op]:
                node = {"op": op, "args": [{"field": f"resource.attr.{name}"},
                                           *({"value": v} for v in extra)]}  # fmt: skip
                for f in (t.from_json(node), t.from_json({"op": "not", "args": [node]})):
                    got = set(
                        conn.scalars(sa.select(r.c.id).where(where_clause(t.to_json(f), columns)))
                    )
                    want = {res["id"] for res in resources if t.holds(f, res)}
                    assert got == want, (t.to_json(f), sorted(got ^ want)[:3])

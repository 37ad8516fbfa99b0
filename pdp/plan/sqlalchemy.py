"""A plan as a SQLAlchemy `WHERE` clause (needs the `sqlalchemy` extra).

    from pdp.plan.sqlalchemy import ColumnMap, where_clause

    columns = ColumnMap(
        fields={"resource.id": Doc.id, "resource.tenant": Doc.tenant,
                "resource.attr.owner": Doc.owner},        # plain columns: NULL = absent
        json={"resource.attr": Doc.attrs},                # the rest of attr, as JSON text
    )
    rows = session.scalars(select(Doc).where(where_clause(plan, columns)))

The clause selects exactly the rows whose resource (as the application builds it from the
row: plain columns as attributes when not NULL, the JSON column's object for the rest) the
filter holds for. Every atom is two-valued in SQL (never NULL), so `NOT` cannot drop a row
that SQL's three-valued logic would otherwise lose. JSON paths are read with SQLite's JSON
functions (`json_type`, `json_extract`, `json_each`), which tell `1` from `true` from `"1"`;
text compares with the column's collation, which must be the default (BINARY) for `lt`/`eq`
to match CEL's code-point order. A field the mapping does not cover raises
`UnmappedField`: an unmapped field cannot be filtered, and guessing would be unsound.

A plain column whose SQLAlchemy type declares a collation other than BINARY (`C`/`POSIX`),
as `String(collation="NOCASE")` or `Doc.tenant.collate("RTRIM")` do, raises `InexactColumn`:
over `tenant COLLATE NOCASE`, tenant `acme`'s filter would select tenant `ACME`'s rows. A
collation declared only in the database (a reflected table, whose type does not report it)
cannot be seen here: `pdp serve --search-db` asks the database at start-up, and a library
caller mapping a reflected table must make sure its text columns compare as BINARY.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from . import tree as t
from .planner import Plan

_JSON_TYPES = {"null": ("null",), "bool": ("true", "false"), "int": ("integer",),
               "double": ("real",), "string": ("text",), "list": ("array",), "map": ("object",)}  # fmt: skip
_NUMBER = ("integer", "real")
_SQL_OPS = {"lt": "__lt__", "le": "__le__", "gt": "__gt__", "ge": "__ge__"}


class UnmappedField(ValueError):
    """The filter reads a field that the column mapping does not cover."""


class InexactColumn(UnmappedField):
    """A mapped column compares text other than code point by code point (its collation)."""


class InexactNumber(UnmappedField):
    """A number the filter compares is at or beyond ±2^53, where Check's reading (a double)
    and the database's stored integer differ."""


# Collations that compare text code point by code point, as CEL does.
_EXACT_COLLATIONS = frozenset({"BINARY", "C", "POSIX"})


@dataclass(frozen=True)
class ColumnMap:
    """Where each resource field lives. `fields`: a field name to a plain column (its SQL type
    gives its CEL type; NULL means the attribute is absent). `json`: a field name to a JSON
    text column holding that field's object (e.g. `resource.attr` for the whole `attr`);
    nested attributes are read with JSON paths. A field takes the plain column when there is
    one, else the JSON column of its longest mapped prefix."""

    fields: Mapping[str, Any] = field(default_factory=dict)
    json: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, path: t.Path) -> tuple[str, Any, t.Path]:
        name = t.field_name(path)
        col = self.fields.get(name)
        if col is not None:
            return "plain", col, ()
        for n in range(len(path), 0, -1):
            col = self.json.get(t.field_name(path[:n]))
            if col is not None:
                return "json", col, path[n:]
        raise UnmappedField(f"no column is mapped for `{name}`")


def where_clause(plan: Plan | Mapping[str, Any], columns: ColumnMap) -> ColumnElement[bool]:
    """The `WHERE` clause of a plan (a `Plan`, its `to_dict()`, or a bare JSON filter).

    Raises `InexactColumn` when a plain column's type declares a collation that does not
    compare exactly (`NOCASE`, `RTRIM`, ...); a collation only the database knows (a reflected
    table) is the caller's to check (module docstring)."""
    formula = _formula(plan)
    for name, col in columns.fields.items():
        _check_collation(name, col)
    cut = [*_valid_json(formula, columns), *_no_escaped_nul(formula, columns)]
    if cut:  # read every JSON column through its guard below
        parsed = {name: _parsed(col) for name, col in columns.json.items()}
        columns = ColumnMap(fields=columns.fields, json=parsed)
    clause = _sql(formula, columns)
    return sa.and_(*cut, clause) if cut else clause


# A JSON column's text that SQLite does not parse (Python's `json.dumps` writes `NaN` and
# `Infinity` by default) made every JSON function raise "malformed JSON", so one such row, in
# any tenant, failed every search of the table (503). The row is not selected (the filter
# cannot read it; Check may allow it: fail closed), and its text is read as NULL so that no
# JSON function sees it, whatever order the database evaluates the conditions in.
def _valid_json(f: t.Formula, cols: ColumnMap) -> list[ColumnElement[bool]]:
    used: dict[int, Any] = {}
    for atom in _atoms(f):
        how, col, _ = cols.resolve(atom.path)
        if how == "json":
            used.setdefault(id(col), col)
    return [sa.or_(col.is_(None), sa.func.json_valid(col) == 1) for col in used.values()]


def _parsed(col: Any) -> Any:
    return sa.case((sa.func.json_valid(col) == 1, col), else_=sa.null())


def _atoms(f: t.Formula) -> list[t.Atom]:
    if isinstance(f, t.Not):
        return _atoms(f.item)
    if isinstance(f, t.And | t.Or):
        return [a for x in f.items for a in _atoms(x)]
    return [f] if isinstance(f, t.Atom) else []


# SQLite's JSON functions (3.40 at least) end a string at an escaped NUL: `json.dumps` writes
# `"alice\u0000x"` and `json_extract` (and `json_each`) return `alice`, so `eq "alice"` held
# on a row an application reads as owned by `alice\x00x`, and a key `carol\u0000` was `carol`
# to `has_key`. A row is not selected when an attribute the filter compares holds the escape
# (in its JSON text, which `json_extract` with two paths returns as written): a guard at the
# top of the clause, outside every `NOT`, since an atom cannot tell such a value from its
# prefix. Valid JSON writes U+0000 only as `\u0000` (a literal `\\u0000` is left out too).
_ESCAPED_NUL = "\\u0000"
_COMPARES = frozenset({"eq", "in", "contains", "subset", "has_key", "lt", "le", "gt", "ge"})


def _no_escaped_nul(f: t.Formula, cols: ColumnMap) -> list[ColumnElement[bool]]:
    paths: dict[int, tuple[Any, dict[str, None]]] = {}
    for atom in _atoms(f):
        how, col, sub = cols.resolve(atom.path)
        if atom.op in _COMPARES and how == "json":
            paths.setdefault(id(col), (col, {}))[1][_json_path(sub)] = None
    guards = []
    for col, compared in paths.values():
        # Most rows hold no escape at all: only theirs are the attributes' texts built.
        inner = [
            sa.func.coalesce(
                sa.func.instr(sa.func.json_extract(_parsed(col), p, p), _ESCAPED_NUL), 0
            )
            == 0
            for p in compared
        ]
        clean = sa.func.coalesce(sa.func.instr(col, _ESCAPED_NUL), 0) == 0
        guards.append(sa.case((clean, sa.true()), else_=sa.and_(*inner)))
    return guards


def _check_collation(name: str, col: Any) -> None:
    collation = getattr(getattr(col, "type", None), "collation", None)
    if collation and collation.strip('"').upper() not in _EXACT_COLLATIONS:
        raise InexactColumn(
            f"column `{col}` mapped for `{name}` has collation `{collation}`: it compares text "
            "ignoring case or trailing spaces, and the filter would select rows Check denies; "
            "use the default collation (BINARY)"
        )


def _formula(plan: Plan | Mapping[str, Any]) -> t.Formula:
    if isinstance(plan, Plan):
        return plan.filter
    if "planVersion" in plan:
        if plan["planVersion"] != 1:
            raise ValueError(f"unsupported planVersion `{plan['planVersion']}`")
        return t.from_json(plan["filter"])
    return t.from_json(plan)


def _sql(f: t.Formula, cols: ColumnMap) -> ColumnElement[bool]:
    if isinstance(f, t.Const):
        return sa.true() if f.value else sa.false()
    if isinstance(f, t.Not):
        return sa.not_(_sql(f.item, cols))
    if isinstance(f, t.And):
        return _joined(sa.and_, _AllOf, [_sql(x, cols) for x in f.items])
    if isinstance(f, t.Or):
        return _joined(sa.or_, _AnyOf, [_sql(x, cols) for x in f.items])
    assert isinstance(f, t.Atom)
    how, col, sub = cols.resolve(f.path)
    if how == "plain":
        return _plain(f, col)
    return _json(f, col, _json_path(sub))


def _json_path(sub: t.Path) -> str:
    return "$" + "".join(f'."{k}"' for k in sub)


# --- wide conjunctions and disjunctions -----------------------------------------------------

# A filter's `and`/`or` may hold one item per element of a request list (`hasAny(R.attr.tags,
# P.attr.groups)` is an `or` of a `contains` per group), and `a OR b OR c ...` parses as a
# chain as deep as it is long: SQLite refuses one past 1,000 (`Expression tree is too large`),
# so a principal with 1,500 groups made every search of it fail. Past `_WIDE` items the
# clause is written as a balanced tree of parenthesized groups, as deep as its logarithm.
_WIDE = 64


class _AllOf(FunctionElement[bool]):
    """`and` of its clauses, written as a balanced tree (SQLAlchemy flattens nested `and_`)."""

    type = sa.Boolean()
    name = "pdp_all_of"
    inherit_cache = True


class _AnyOf(FunctionElement[bool]):
    """`or` of its clauses, written as a balanced tree."""

    type = sa.Boolean()
    name = "pdp_any_of"
    inherit_cache = True


def _joined(
    plain: Callable[..., ColumnElement[bool]],
    wide: type[FunctionElement[bool]],
    parts: list[ColumnElement[bool]],
) -> ColumnElement[bool]:
    return plain(*parts) if len(parts) <= _WIDE else wide(*parts)


def _balanced(parts: list[str], word: str) -> str:
    if len(parts) <= 16:
        return "(" + f" {word} ".join(parts) + ")"
    mid = len(parts) // 2
    return f"({_balanced(parts[:mid], word)} {word} {_balanced(parts[mid:], word)})"


@compiles(_AllOf)
def _all_of(element: _AllOf, compiler: Any, **kw: Any) -> str:
    return _balanced([str(compiler.process(c, **kw)) for c in element.clauses], "AND")


@compiles(_AnyOf)
def _any_of(element: _AnyOf, compiler: Any, **kw: Any) -> str:
    return _balanced([str(compiler.process(c, **kw)) for c in element.clauses], "OR")


# --- plain columns --------------------------------------------------------------------------


def _cel_type(col: Any) -> str:
    ty = col.type
    if isinstance(ty, sa.Boolean):
        return "bool"
    if isinstance(ty, sa.Integer):
        return "int"
    if isinstance(ty, sa.Float | sa.Numeric):
        return "double"
    if isinstance(ty, sa.String | sa.Enum):
        return "string"
    raise UnmappedField(f"column `{col}` has a type ({ty}) the filter cannot compare")


def _family(ty: str) -> str:
    return "number" if ty in ("int", "double") else ty


def _value_family(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    return "string"


# Check reads a request number beyond ±2^53 as a double (docs/POLICY_FORMAT.md, "Numbers in
# requests"): a row storing 2^53 + 1 is read as 2^53, which the database compares exactly.
# Against a constant strictly within ±2^53 the two readings agree (a stored value beyond it
# is beyond the constant however it rounds); at or past it they may not, so it is refused.
_EXACT = 2**53


def _bind(v: Any) -> Any:
    if isinstance(v, int | float) and not isinstance(v, bool) and not -_EXACT < v < _EXACT:
        raise InexactNumber(
            f"the number `{v}` is at or beyond ±2^53: Check reads a stored integer near it as "
            "a rounded double, which the database does not, so the filter cannot compare it "
            "exactly"
        )
    return v


# The storage classes (SQLite's `typeof`) a plain column's value of each family has.
_STORED = {"bool": ("integer",), "number": _NUMBER, "string": ("text",)}


class _StoredAs(FunctionElement[bool]):
    """The column's value is stored as one of the given classes. SQLite types values, not
    columns: an INTEGER column keeps `'n/a'` as text, a TEXT one a BLOB, and SQLite orders
    every text above every number, so an unguarded `col > 3` selected a text its CEL reading
    (`"n/a" > 3`, no overload) never allows. Elsewhere the declared type is the value's."""

    type = sa.Boolean()
    name = "stored_as"
    inherit_cache = True


@compiles(_StoredAs)
def _stored_as_typed(element: _StoredAs, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(sa.true(), **kw))


@compiles(_StoredAs, "sqlite")
def _stored_as_sqlite(element: _StoredAs, compiler: Any, **kw: Any) -> str:
    col, *classes = element.clauses
    return str(compiler.process(sa.func.typeof(col).in_(classes), **kw))


class _OnSqlite(FunctionElement[bool]):
    """Its clause on SQLite, `false` elsewhere (where a column's values have its type)."""

    type = sa.Boolean()
    name = "on_sqlite"
    inherit_cache = True


@compiles(_OnSqlite)
def _on_sqlite_typed(element: _OnSqlite, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(sa.false(), **kw))


@compiles(_OnSqlite, "sqlite")
def _on_sqlite(element: _OnSqlite, compiler: Any, **kw: Any) -> str:
    (clause,) = element.clauses
    return "(" + str(compiler.process(clause, **kw)) + ")"  # an operand of `NOT`, `= 0`...


# The CEL type of a value SQLite stores in a plain column, by its storage class (`typeof`):
# a Boolean column's integers are its flags.
_CEL_OF_STORED = {"integer": "int", "real": "double", "text": "string"}


def _stored_type(col: Any, ty: str, cel: str) -> ColumnElement[bool]:
    """The column holds a value of CEL type `cel`."""
    if ty == "bool":
        classes = ["integer"] if cel == "bool" else ["text"] if cel == "string" else []
    else:
        classes = [c for c, of in _CEL_OF_STORED.items() if of == cel]
    if cel == ty:
        return sa.and_(col.is_not(None), _StoredAs(col, *map(sa.literal, classes)))
    if not classes:
        return sa.false()
    return _OnSqlite(sa.and_(col.is_not(None), sa.func.typeof(col).in_(classes)))


def _stored_text(col: Any, test: Callable[[Any], ColumnElement[bool]]) -> ColumnElement[bool]:
    """`test` on a text kept in a column declared otherwise (SQLite keeps `'restricted'` in
    an INTEGER column as text, which is what an application reads): a deny rule's
    `R.attr.level == "restricted"` was `false` on it, so `NOT` of it listed the row Check
    denies. Compared as text (the cast keeps the column's affinity off the constant)."""
    text = sa.cast(col, sa.Text)
    return _OnSqlite(sa.and_(col.is_not(None), sa.func.typeof(col) == "text", test(text)))


def _plain(f: t.Atom, col: Any) -> ColumnElement[bool]:
    ty = _cel_type(col)
    if f.op == "exists":
        return col.is_not(None)
    fam = _family(ty)
    present = sa.and_(col.is_not(None), _StoredAs(col, *map(sa.literal, _STORED[fam])))
    if f.op == "is":
        return _stored_type(col, ty, f.value)
    if f.op in ("contains", "has_key", "subset"):
        return sa.false()  # a scalar column holds neither a list nor a map
    v = f.value
    if fam != "string" and (isinstance(v, str) or f.op == "in"):
        strs = [x for x in v if isinstance(x, str)] if f.op == "in" else [v]
        if f.op == "in":
            as_text = _stored_text(col, lambda c: c.in_(strs)) if strs else sa.false()
            vs = [_bind(x) for x in v if _value_family(x) == fam]
            return sa.or_(sa.and_(present, col.in_(vs)), as_text) if vs else as_text
        op = "__eq__" if f.op == "eq" else _SQL_OPS[f.op]
        return _stored_text(col, lambda c: getattr(c, op)(v))
    if f.op == "eq":
        if _value_family(v) != fam:
            return sa.false()
        return sa.and_(present, col == _bind(v))
    if f.op == "in":
        vs = [_bind(x) for x in v if _value_family(x) == fam]
        return sa.and_(present, col.in_(vs)) if vs else sa.false()
    if _value_family(v) != fam or fam not in ("string", "number"):
        return sa.false()
    return sa.and_(present, getattr(col, _SQL_OPS[f.op])(_bind(v)))


# --- JSON columns ---------------------------------------------------------------------------


def _typed(kind: Any, value: Any, v: Any) -> ColumnElement[bool]:
    """`kind`/`value` (a json_type and its json_extract, or json_each's type and value) equal
    the scalar `v` under CEL equality."""
    if v is None:
        return sa.func.coalesce(kind, "") == "null"
    if isinstance(v, bool):
        return sa.func.coalesce(kind, "") == ("true" if v else "false")
    if isinstance(v, int | float):
        return sa.and_(sa.func.coalesce(kind, "").in_(_NUMBER), value == _bind(v))
    return sa.and_(sa.func.coalesce(kind, "") == "text", value == v)


def _typed_in(kind: Any, value: Any, values: Any) -> ColumnElement[bool]:
    """`kind`/`value` equal one of the scalars `values` under CEL equality: at most three
    `IN` lists (texts, numbers, the flags and null), however many values."""
    kind_is = sa.func.coalesce(kind, "")
    strs = [v for v in values if isinstance(v, str)]
    nums = [_bind(v) for v in values if _value_family(v) == "number"]
    parts: list[ColumnElement[bool]] = []
    if strs:
        parts.append(sa.and_(kind_is == "text", value.in_(strs)))
    if nums:
        parts.append(sa.and_(kind_is.in_(_NUMBER), value.in_(nums)))
    flags = [("true" if v else "false") for v in values if isinstance(v, bool)]
    flags += ["null" for v in values if v is None]
    if flags:
        parts.append(kind_is.in_(flags))
    return sa.or_(*parts) if parts else sa.false()


def _json(f: t.Atom, col: Any, path: str) -> ColumnElement[bool]:
    kind = sa.func.json_type(col, path)
    value = sa.func.json_extract(col, path)
    kind_is = sa.func.coalesce(kind, "")
    if f.op == "exists":
        return kind.is_not(None)
    if f.op == "is":
        return kind_is.in_(_JSON_TYPES[f.value])
    if f.op == "eq":
        return _typed(kind, value, f.value)
    if f.op == "in":
        return _typed_in(kind, value, f.value)
    if f.op in ("contains", "has_key", "subset"):
        each = sa.func.json_each(col, path).table_valued("key", "value", "type").alias()
        if f.op == "contains":
            test = _typed(each.c.type, each.c.value, f.value)
        elif f.op == "subset":  # no element outside the values
            test = sa.not_(_typed_in(each.c.type, each.c.value, f.value))
        else:
            test = each.c.key == f.value
        found = sa.select(sa.literal(1)).select_from(each).where(test).exists()
        if f.op == "subset":
            return sa.and_(kind_is == "array", sa.not_(found))
        return sa.and_(kind_is == ("array" if f.op == "contains" else "object"), found)
    v = f.value
    typed = kind_is == "text" if isinstance(v, str) else kind_is.in_(_NUMBER)
    return sa.and_(typed, getattr(value, _SQL_OPS[f.op])(_bind(v)))


def candidates(
    db: sa.Engine, id_column: Any, columns: ColumnMap
) -> Callable[[Plan, str | None, int], list[str]]:
    """A candidate source for `pdp.plan.api.search_resource`: the ids the plan selects from
    the table of `id_column`, in id order, after a cursor."""

    def page(plan: Plan, after: str | None, count: int) -> list[str]:
        query = sa.select(id_column).where(where_clause(plan, columns))
        if after is not None:
            query = query.where(id_column > after)
        with db.connect() as conn:
            return list(conn.scalars(query.order_by(id_column).limit(count)))

    return page

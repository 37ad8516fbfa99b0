"""The residual filter: a small boolean formula over one resource's fields.

A formula is two-valued and total: for any resource it is true or false, never an error (the
planner has already turned CEL's errors into the effects Check gives them). Fields are
`resource.id`, `resource.tenant` (strings) and `resource.attr.<key>...` (any JSON value, or
absent). The atoms compare a field with constants under CEL's equality (`1 == 1.0`, `true != 1`,
a string never equals a number). docs/PLANNING.md documents the JSON form; `to_json`,
`from_json`, `to_cel` and `holds` are its reference implementation.

Constructors simplify as they build (constants, flattening, duplicates, `exists` implied by a
comparison), so a plan is small enough to read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pdp.cel import _values as cv

Path = tuple[str, ...]  # ("id",), ("tenant",), ("attr", "a", "b")

ID: Path = ("id",)
TENANT: Path = ("tenant",)
ATTR: Path = ("attr",)
STRING_FIELDS = frozenset({ID, TENANT})

# Atom operators, and the JSON types `is` tests.
COMPARE_OPS = ("lt", "le", "gt", "ge")
ATOM_OPS = frozenset({"eq", "in", "contains", "subset", "has_key", "exists", "is", *COMPARE_OPS})
TYPES = ("null", "bool", "int", "double", "string", "list", "map")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Scalar = str | int | float | bool | None


class Formula:
    __slots__ = ()


@dataclass(frozen=True, slots=True, eq=False)
class Const(Formula):
    value: bool

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Const) and other.value is self.value

    def __hash__(self) -> int:
        return hash(("const", self.value))


TRUE = Const(True)
FALSE = Const(False)


def _tag(v: Any) -> Any:
    """A key that tells `true` from `1` and `1` from `"1"` (Python's == does not)."""
    if isinstance(v, tuple):
        return ("list", tuple(_tag(x) for x in v))
    if isinstance(v, bool) or v is None:
        return ("b", v)
    if isinstance(v, int | float):
        return ("n", v)
    return ("s", v)


@dataclass(frozen=True, slots=True, eq=False)
class Atom(Formula):
    op: str
    path: Path
    value: Any = None  # a scalar; a tuple of scalars for `in`; a type name for `is`
    # Made once: atoms are hashed and compared over and over while formulas simplify.
    _key: tuple[Any, ...] = field(init=False, repr=False, default=())
    _hash: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        key = (self.op, self.path, _tag(self.value))
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_hash", hash(key))

    def key(self) -> tuple[Any, ...]:
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Atom) and other._key == self._key

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class And(Formula):
    items: tuple[Formula, ...]


@dataclass(frozen=True, slots=True)
class Or(Formula):
    items: tuple[Formula, ...]


@dataclass(frozen=True, slots=True)
class Not(Formula):
    item: Formula


# --- values ---------------------------------------------------------------------------------


def is_scalar(v: Any) -> bool:
    """A JSON scalar the filter can carry (finite numbers only: SQL has no NaN)."""
    if v is None or isinstance(v, bool | str):
        return True
    if isinstance(v, int):
        return cv.INT64_MIN <= v <= cv.UINT64_MAX
    if isinstance(v, float):
        return math.isfinite(v)
    return False


def _plain(v: Any) -> Scalar:
    """CelUint and other int subclasses as plain ints."""
    if isinstance(v, int) and not isinstance(v, bool) and type(v) is not int:
        return int(v)
    return v  # type: ignore[no-any-return]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# --- constructors (simplifying) -------------------------------------------------------------


def atom(op: str, path: Path, value: Any = None) -> Formula:
    """An atom, folded to a constant when the field's type decides it (id/tenant are strings,
    attr is a map)."""
    if isinstance(value, list | tuple):
        value = tuple(_plain(x) for x in value)
    else:
        value = _plain(value)
    if path in STRING_FIELDS:
        if op == "exists":
            return TRUE
        if op == "is":
            return TRUE if value == "string" else FALSE
        if op == "eq":
            return atom_unchecked(op, path, value) if isinstance(value, str) else FALSE
        if op == "in":
            strs = tuple(dict.fromkeys(x for x in value if isinstance(x, str)))
            if not strs:
                return FALSE
            if len(strs) == 1:
                return atom_unchecked("eq", path, strs[0])
            return atom_unchecked("in", path, strs)
        if op in COMPARE_OPS:
            return atom_unchecked(op, path, value) if isinstance(value, str) else FALSE
        return FALSE  # contains, subset, has_key: a string is neither a list nor a map
    if path == ATTR:
        if op == "exists":
            return TRUE
        if op == "is":
            return TRUE if value == "map" else FALSE
        if op == "has_key":
            return atom_unchecked(op, path, value)
        return FALSE
    if op == "in":
        value = tuple(_dedupe(value))
        if not value:
            return FALSE
        if len(value) == 1:
            return atom_unchecked("eq", path, value[0])
    if op == "subset":
        value = tuple(_dedupe(value))
    return atom_unchecked(op, path, value)


def _dedupe(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out = []
    for v in values:
        k = _tag(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def atom_unchecked(op: str, path: Path, value: Any = None) -> Atom:
    return Atom(op, path, value)


def not_(f: Formula) -> Formula:
    if isinstance(f, Const):
        return FALSE if f.value else TRUE
    if isinstance(f, Not):
        return f.item
    return Not(f)


def _implies_present(f: Formula, path: Path) -> bool:
    """True when `f` can only hold if the field `path` is present."""
    if isinstance(f, Atom):
        return f.path[: len(path)] == path and (f.op != "exists" or len(f.path) >= len(path))
    if isinstance(f, And):
        return any(_implies_present(x, path) for x in f.items)
    if isinstance(f, Or):
        return bool(f.items) and all(_implies_present(x, path) for x in f.items)
    return False


def and_(*items: Formula) -> Formula:
    flat: list[Formula] = []
    for f in items:
        if isinstance(f, And):
            flat.extend(f.items)
        elif f == TRUE:
            continue
        elif f == FALSE:
            return FALSE
        else:
            flat.append(f)
    out = list(dict.fromkeys(flat))
    present = set(out)
    for f in out:
        if not_(f) in present:
            return FALSE
    out = [
        f
        for f in out
        if not (
            isinstance(f, Atom)
            and f.op == "exists"
            and any(g is not f and _implies_present(g, f.path) for g in out)
        )
    ]
    # Absorption: a and (a or b) = a.
    out = [f for f in out if not (isinstance(f, Or) and any(g in present for g in f.items))]
    if not out:
        return TRUE
    if len(out) == 1:
        return out[0]
    return And(tuple(out))


def or_(*items: Formula) -> Formula:
    flat: list[Formula] = []
    for f in items:
        if isinstance(f, Or):
            flat.extend(f.items)
        elif f == FALSE:
            continue
        elif f == TRUE:
            return TRUE
        else:
            flat.append(f)
    out = list(dict.fromkeys(flat))
    present = set(out)
    for f in out:
        if not_(f) in present:
            return TRUE
    # Absorption: a or (a and b) = a.
    out = [f for f in out if not (isinstance(f, And) and any(g in present for g in f.items))]
    if not out:
        return FALSE
    if len(out) == 1:
        return out[0]
    return Or(tuple(out))


# --- names ----------------------------------------------------------------------------------


def field_name(path: Path) -> str:
    return "resource." + ".".join(path)


def parse_field(name: Any) -> Path:
    if not isinstance(name, str) or not name.startswith("resource."):
        raise ValueError(f"field `{name}` must start with `resource.`")
    parts = tuple(name[len("resource.") :].split("."))
    if parts in (ID, TENANT, ATTR):
        return parts
    if parts[0] != "attr" or len(parts) < 2 or not all(_IDENT.match(p) for p in parts):
        raise ValueError(
            f"field `{name}` must be `resource.id`, `resource.tenant` or `resource.attr.<key>...`"
        )
    return parts


def is_identifier(key: str) -> bool:
    return bool(_IDENT.match(key))


# --- JSON -----------------------------------------------------------------------------------


def to_json(f: Formula) -> dict[str, Any]:
    if isinstance(f, Const):
        return {"op": "true" if f.value else "false"}
    if isinstance(f, Not):
        return {"op": "not", "args": [to_json(f.item)]}
    if isinstance(f, And | Or):
        return {"op": "and" if isinstance(f, And) else "or", "args": [to_json(x) for x in f.items]}
    assert isinstance(f, Atom)
    field = {"field": field_name(f.path)}
    if f.op == "exists":
        return {"op": "exists", "args": [field]}
    value = list(f.value) if isinstance(f.value, tuple) else f.value
    return {"op": f.op, "args": [field, {"value": value}]}


def from_json(obj: Any, _depth: int = 0) -> Formula:
    """Parse (and validate) a JSON filter; ValueError names what is wrong."""
    if _depth > 200:
        raise ValueError("filter nests too deeply")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("op"), str):
        raise ValueError("each node must be an object with a string `op`")
    op = obj["op"]
    args = obj.get("args", [])
    if not isinstance(args, list):
        raise ValueError(f"`{op}`: `args` must be a list")
    if op in ("true", "false"):
        return TRUE if op == "true" else FALSE
    if op in ("and", "or"):
        items = [from_json(a, _depth + 1) for a in args]
        return and_(*items) if op == "and" else or_(*items)
    if op == "not":
        if len(args) != 1:
            raise ValueError("`not` takes one argument")
        return not_(from_json(args[0], _depth + 1))
    if op not in ATOM_OPS:
        raise ValueError(f"unknown operator `{op}`")
    if not args or not isinstance(args[0], Mapping) or "field" not in args[0]:
        raise ValueError(f"`{op}`: the first argument must be a field")
    path = parse_field(args[0]["field"])
    if op == "exists":
        if len(args) != 1:
            raise ValueError("`exists` takes one argument")
        return atom("exists", path)
    if len(args) != 2 or not isinstance(args[1], Mapping) or "value" not in args[1]:
        raise ValueError(f"`{op}`: the second argument must be a value")
    value = args[1]["value"]
    if op == "is":
        if value not in TYPES:
            raise ValueError(f"`is`: unknown type `{value}`")
    elif op in ("in", "subset"):
        if not isinstance(value, list) or not all(is_scalar(v) for v in value):
            raise ValueError(f"`{op}`: the value must be a list of scalars")
    elif op == "has_key":
        if not isinstance(value, str):
            raise ValueError("`has_key`: the key must be a string")
    elif op in COMPARE_OPS:
        if not (isinstance(value, str) or (_is_number(value) and is_scalar(value))):
            raise ValueError(f"`{op}`: the value must be a string or a finite number")
    elif not is_scalar(value):
        raise ValueError(f"`{op}`: the value must be a scalar")
    return atom(op, path, value)


# --- evaluation (the reference semantics) ---------------------------------------------------

_MISSING = object()


def lookup(resource: Mapping[str, Any], path: Path) -> Any:
    cur: Any = resource
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return _MISSING
        cur = cur[key]
    return cur


def type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list | tuple):
        return "list"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


def _comparable(a: Any, b: Any) -> bool:
    return (isinstance(a, str) and isinstance(b, str)) or (_is_number(a) and _is_number(b))


def holds(f: Formula, resource: Mapping[str, Any]) -> bool:
    """Evaluate a formula on a resource dict {kind, id, tenant, attr}."""
    if isinstance(f, Const):
        return f.value
    if isinstance(f, Not):
        return not holds(f.item, resource)
    if isinstance(f, And):
        return all(holds(x, resource) for x in f.items)
    if isinstance(f, Or):
        return any(holds(x, resource) for x in f.items)
    assert isinstance(f, Atom)
    v = lookup(resource, f.path)
    if v is _MISSING:
        return False
    op = f.op
    if op == "exists":
        return True
    if op == "is":
        return type_of(v) == f.value
    if op == "eq":
        return cv.eq(v, f.value)
    if op == "in":
        return any(cv.eq(v, x) for x in f.value)
    if op == "contains":
        return isinstance(v, list) and any(cv.eq(e, f.value) for e in v)
    if op == "subset":
        return isinstance(v, list) and all(any(cv.eq(e, x) for x in f.value) for e in v)
    if op == "has_key":
        return isinstance(v, dict) and f.value in v
    if not _comparable(v, f.value):
        return False
    return bool({"lt": cv.lt, "le": cv.le, "gt": cv.gt, "ge": cv.ge}[op](v, f.value))


# --- CEL text -------------------------------------------------------------------------------


def _cel_value(v: Any) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_cel_value(x) for x in v) + "]"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if v <= cv.INT64_MAX else f"{v}u"
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)


def _cel_field(path: Path) -> str:
    return "R." + ".".join(path)


def _cel_present(path: Path) -> list[str]:
    """Guards under which reading `path` cannot fail: each parent a map holding the key."""
    if path in STRING_FIELDS or path == ATTR:
        return []
    out = []
    for i in range(2, len(path) + 1):
        parent = path[: i - 1]
        if parent != ATTR:
            out.append(f"type({_cel_field(parent)}) == map")
        out.append(f"has({_cel_field(path[:i])})")
    return out


_CEL_TYPES = {"null": "null_type", "bool": "bool", "int": "int", "double": "double",
              "string": "string", "list": "list", "map": "map"}  # fmt: skip
_CEL_OPS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _cel_atom(f: Atom) -> str:
    x = _cel_field(f.path)
    guards = _cel_present(f.path)
    op = f.op
    if op == "exists":
        test = ""
    elif op == "is":
        test = f"type({x}) == {_CEL_TYPES[f.value]}"
    elif op == "eq":
        test = f"{x} == {_cel_value(f.value)}"
    elif op == "in":
        test = f"{x} in {_cel_value(f.value)}"
    elif op == "contains":
        test = f"type({x}) == list && {_cel_value(f.value)} in {x}"
    elif op == "subset":
        test = f"type({x}) == list && {x}.all(e, e in {_cel_value(f.value)})"
    elif op == "has_key":
        test = f"type({x}) == map && {_cel_value(f.value)} in {x}"
    else:
        family = "string" if isinstance(f.value, str) else "number"
        typed = (
            f"type({x}) == string"
            if family == "string"
            else f"(type({x}) == int || type({x}) == double)"
        )
        test = f"{typed} && {x} {_CEL_OPS[op]} {_cel_value(f.value)}"
    parts = [*guards, test] if test else guards
    if not parts:
        return "true"
    return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"


def to_cel(f: Formula) -> str:
    """CEL text that is true exactly where the formula holds, and never fails."""
    if isinstance(f, Const):
        return "true" if f.value else "false"
    if isinstance(f, Not):
        inner = to_cel(f.item)
        return f"!{inner}" if inner.startswith("(") or " " not in inner else f"!({inner})"
    if isinstance(f, And | Or):
        sep = " && " if isinstance(f, And) else " || "
        return "(" + sep.join(to_cel(x) for x in f.items) + ")"
    assert isinstance(f, Atom)
    return _cel_atom(f)


def fields_of(f: Formula) -> set[Path]:
    if isinstance(f, Atom):
        return {f.path}
    if isinstance(f, And | Or):
        return set().union(*(fields_of(x) for x in f.items))
    if isinstance(f, Not):
        return fields_of(f.item)
    return set()

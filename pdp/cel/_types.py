"""Static types for the CEL checker (`_checker`): what an expression may evaluate to.

A type is one of: a primitive (`bool`, `int`, `uint`, `double`, `string`, `bytes`, `null`,
`timestamp`, `duration`, `type`, `ip`, `cidr`), a `list` of an element type, a `map` from a key
type to a value type, an object with known fields (the request's fixed shapes, a JSON Schema
`object`, a constant map), `dyn` (anything: the checker then checks nothing), or a union of
these (`["string", "null"]` in a schema; JSON numbers, which arrive as `int` or `double`).
Constants carry their value so that `C.x.y` and `data.x.y` are checked against the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pdp.cel._values import CelUint


@dataclass(frozen=True)
class T:
    """Base of all types."""

    def show(self) -> str:
        return "dyn"


@dataclass(frozen=True)
class Dyn(T):
    def show(self) -> str:
        return "dyn"


@dataclass(frozen=True)
class Nothing(Dyn):
    """The element type of the empty list literal `[]`: no value ever has it, so a union drops
    it (`[] + P.roles` is a `list(string)`, as CEL's checker infers) and anything is true of it
    (checked like `dyn`). Typed `dyn`, `([] + P.roles)[0]` let a `!` on a string through."""


@dataclass(frozen=True)
class Prim(T):
    name: str

    def show(self) -> str:
        return self.name


@dataclass(frozen=True)
class ListT(T):
    elem: T

    def show(self) -> str:
        return f"list({self.elem.show()})"


@dataclass(frozen=True)
class MapT(T):
    key: T
    value: T

    def show(self) -> str:
        return f"map({self.key.show()}, {self.value.show()})"


@dataclass(frozen=True, eq=False)
class ObjT(T):
    """A map with known string keys. `closed`: no other key exists (a fixed request shape or a
    schema with `additionalProperties: false`); otherwise other keys have type `rest`.
    `required`: keys always present. `name` says what it is in messages (`context`)."""

    name: str
    fields: dict[str, T]
    closed: bool = True
    rest: T | None = None
    required: frozenset[str] = frozenset()
    schema_path: str = ""  # `schemas/x.json`: where the type was declared
    # No other key exists at run time either. A schema's open object is `closed` to the
    # checker (an undeclared name is a typo) but not sealed: a request may carry other keys,
    # so a key computed at run time (`o[k]`, iterating values) may find anything.
    sealed: bool = True

    # Identity, not T's field-wise equality (which, `T` having no fields, made every two
    # objects equal: `[R.attr.owner, R.attr]` was a list of `owner`s only).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def show(self) -> str:
        return "map(string, dyn)" if not self.name else self.name


@dataclass(frozen=True, eq=False)
class ConstT(T):
    """A compile-time constant (`C.x`, `data.x`, a literal): its type follows its value."""

    value: Any
    what: str = ""  # `C.corporate_cidrs`, for messages

    __eq__ = object.__eq__  # as ObjT's: two constants are not equal for having no T fields
    __hash__ = object.__hash__

    def show(self) -> str:
        return type_of_value(self.value).show()


@dataclass(frozen=True)
class Union(T):
    members: frozenset[T] = field(default_factory=frozenset)

    def show(self) -> str:
        return " | ".join(sorted(m.show() for m in self.members))


@dataclass(frozen=True)
class Untyped(Dyn):
    """A `dyn` the author chose: an attribute no schema types (`{}`, an array without `items`,
    a key an open object may hold, an `attr` map without a schema), `dyn()`, a data table too
    large to type. Checked as `dyn`; told apart from a `dyn` of the checker's own making only in
    strict mode (`TypeEnv.strict`), where this one is refused and that one trusted, so that the
    property test catches a checker that gives up on a type it should know."""

    def show(self) -> str:
        return "dyn"


DYN = Dyn()
UNTYPED = Untyped()
NOTHING = Nothing()
BOOL, INT, UINT, DOUBLE, STRING, BYTES, NULL = (
    Prim(n) for n in ("bool", "int", "uint", "double", "string", "bytes", "null")
)
TIMESTAMP, DURATION, TYPE, IP, CIDR = (
    Prim(n) for n in ("timestamp", "duration", "type", "ip", "cidr")
)
NUMBER = Union(frozenset({INT, DOUBLE}))  # a JSON number: int or double depending on its text
NUMERIC = frozenset({INT, UINT, DOUBLE})

_PRIMS = {
    bool: BOOL,
    int: INT,
    CelUint: UINT,
    float: DOUBLE,
    str: STRING,
    bytes: BYTES,
    type(None): NULL,
}


def union(*types: T) -> T:
    """The join: `dyn` absorbs everything, `nothing` adds nothing, one member is itself."""
    out: set[T] = set()
    nothing = False
    dyn: T | None = None  # `dyn` absorbs the rest; an author's `dyn` stays one
    for t in types:
        t = concrete(t)
        if isinstance(t, Nothing):
            nothing = True
            continue
        if isinstance(t, Dyn):
            dyn = UNTYPED if isinstance(t, Untyped) else dyn if dyn is not None else DYN
            continue
        if isinstance(t, Union):
            out.update(t.members)
        else:
            out.add(t)
    if dyn is not None:
        return dyn
    if not out:
        return NOTHING if nothing else DYN
    if len(out) == 1:
        return next(iter(out))
    return Union(frozenset(out))


def members(t: T) -> list[T]:
    t = concrete(t)
    if isinstance(t, Union):
        return list(t.members)
    return [t]


def concrete(t: T) -> T:
    """A constant's type, from its value; other types unchanged."""
    if isinstance(t, ConstT):
        return type_of_value(t.value)
    return t


# Typing a large constant (a data table) element by element would be slow and tell us little;
# past this many elements a list's element type is `dyn`.
_SAMPLE = 64


def type_of_value(value: Any) -> T:
    prim = _PRIMS.get(value.__class__)
    if prim is not None:
        return prim
    if isinstance(value, dict):
        return ObjT(
            "",
            {k: ConstT(v) for k, v in value.items() if isinstance(k, str)},
            closed=True,
            required=frozenset(k for k in value if isinstance(k, str)),
        )
    if isinstance(value, list | tuple):
        if not value:
            return ListT(NOTHING)
        if len(value) > _SAMPLE:
            return ListT(UNTYPED)
        return ListT(union(*(type_of_value(x) for x in value)))
    return UNTYPED


def untyped_attributes() -> T:
    """An `attr` map without a schema: string keys, values of any type."""
    return MapT(STRING, UNTYPED)


def is_dyn(t: T) -> bool:
    return isinstance(concrete(t), Dyn)


# --- JSON Schema → type ------------------------------------------------------------------------

_SCHEMA_PRIMS = {
    "string": STRING,
    "boolean": BOOL,
    "integer": NUMBER,  # the request's JSON decides int or double; both must work
    "number": NUMBER,
    "null": NULL,
}


# A request's JSON number is an int when integral within +-2**53, else a double
# (pdp.model.request.number): `enum: [1.0, 2.5]` holds the int 1, not the double 1.0.
_EXACT = 2**53


def _as_request(value: Any) -> Any:
    if value.__class__ is float and value.is_integer() and -_EXACT <= value <= _EXACT:
        return int(value)
    if value.__class__ is int and not -_EXACT <= value <= _EXACT:
        return float(value)
    if isinstance(value, list):
        return [_as_request(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_request(v) for k, v in value.items()}
    return value


def from_schema(schema: Any, root: dict[str, Any], where: str, depth: int = 0) -> T:
    """The CEL type of the values a JSON Schema accepts (`dyn` where it cannot tell)."""
    if depth > 32 or not isinstance(schema, dict):
        return UNTYPED
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            else:
                return UNTYPED
        return from_schema(target, root, where, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return union(*(from_schema(o, root, where, depth + 1) for o in options))
    if "const" in schema:
        return type_of_value(_as_request(schema["const"]))
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return union(*(type_of_value(_as_request(v)) for v in enum))
    t = schema.get("type")
    names = [t] if isinstance(t, str) else (t if isinstance(t, list) else None)
    if names is None:
        return UNTYPED
    out: list[T] = []
    for name in names:
        if name in _SCHEMA_PRIMS:
            out.append(_SCHEMA_PRIMS[name])
        elif name == "array":
            items = schema.get("items")
            out.append(ListT(from_schema(items, root, where, depth + 1) if items else UNTYPED))
        elif name == "object":
            out.append(_object_type(schema, root, where, depth))
        else:
            return UNTYPED
    return union(*out)


def _object_type(schema: dict[str, Any], root: dict[str, Any], where: str, depth: int) -> T:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    fields = {k: from_schema(v, root, where, depth + 1) for k, v in props.items()}
    extra = schema.get("additionalProperties", True)
    required = schema.get("required")
    req = (
        frozenset(r for r in required if isinstance(r, str))
        if isinstance(required, list)
        else frozenset()
    )
    if schema.get("patternProperties"):
        return ObjT("", fields, closed=False, rest=UNTYPED, required=req, schema_path=where)
    if extra is False:
        return ObjT("", fields, closed=True, required=req, schema_path=where)
    if isinstance(extra, dict):
        return ObjT(
            "", fields, closed=False, rest=from_schema(extra, root, where, depth + 1),
            required=req, schema_path=where,
        )  # fmt: skip
    # Open object: a declared schema still says which keys exist. An author who writes a
    # schema wants `R.attr.archivd` caught, so undeclared keys are refused by the checker
    # unless the schema allows them with an explicit `additionalProperties` schema.
    return ObjT("", fields, closed=True, required=req, schema_path=where, sealed=False)

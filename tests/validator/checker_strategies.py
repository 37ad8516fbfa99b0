"""Generated schemas, conforming attributes and CEL expressions over them, for the checker's
property test (`test_checker_property.py`) and for longer runs of it offline.

The expressions are not typed by construction: most are refused, which is fine (the property
says nothing about them), and the rest reach the combinations an author would not think of.
Every CEL feature the checker types has a form here: operators, `in`, indexing by int, uint,
double and string, field selection, `has()`, all the macros (one and two variables, with and
without a filter), list and map literals, `null`, ternaries, conversions, `dyn`, the string,
list, time and network functions, `cel.bind`; and names other than attributes: a policy's
constants and bundle data (`C.k`, `data.d`, typed from their values) and variables (`V.v`, typed from their source, which
may name constants and earlier variables).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from pdp.cel import CelUint
from pdp.model.request import number

# -- schemas ----------------------------------------------------------------------------------

NAMES = ["a", "b", "c", "owner", "size", "tags", "flag", "meta"]
# Keys a request may add to an open object (no `additionalProperties: false`): the checker
# refuses them by name, but a key computed at run time can find them (`o[P.id]`).
EXTRA_KEYS = ["alice", "user", "x", "a"]
SCALARS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "boolean"},
    {"type": "integer"},
    {"type": "number"},
    {"enum": ["low", "high"]},
    {"type": ["string", "null"]},
    {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
    {"const": 3},
    {"enum": [1.0, 2.5]},  # 1.0 arrives as the int 1
    {},  # anything: `dyn`
]
LEAF = st.sampled_from(
    [
        *SCALARS,
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "number"}},
        {"type": "array", "items": {"type": ["string", "null"]}},
        {"type": "array"},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"type": "object", "additionalProperties": {"type": "string"}},
    ]
)


def objects(leaf: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(
        st.dictionaries(st.sampled_from(NAMES), leaf, min_size=1, max_size=4), st.booleans()
    ).map(
        lambda t: {
            "type": "object",
            "properties": t[0],
            "required": sorted(t[0]),
            **({"additionalProperties": False} if t[1] else {}),
        }
    )


INNER = objects(LEAF)
SCHEMAS = objects(st.one_of(LEAF, INNER, INNER.map(lambda o: {"type": "array", "items": o})))

# -- conforming values ------------------------------------------------------------------------

# Values are made by plain functions of one drawn seed, not by a strategy built per schema:
# building strategies (and drawing each choice) was most of the run time, and the expression
# is what shrinking is for.
SEEDS = st.integers(0, 2**32)
_STRINGS = ["", "a", "low", "high", "true", "0", "x y", "10.0.0.1", "1s", "a,b"]
_SCALARS: list[Any] = [None, True, False, 0, 1, -3, 0.5, -1.5, float(2**60), *_STRINGS]


def _json(rnd: random.Random, depth: int = 0) -> Any:
    """Any JSON value (what an untyped schema allows)."""
    roll = rnd.random()
    if depth >= 2 or roll < 0.7:
        return rnd.choice(_SCALARS)
    if roll < 0.85:
        return [_json(rnd, depth + 1) for _ in range(rnd.randint(0, 2))]
    return {rnd.choice(EXTRA_KEYS): _json(rnd, depth + 1) for _ in range(rnd.randint(0, 2))}


def constant_value(rnd: random.Random) -> Any:
    """A policy constant: any JSON value, or one of the shapes constants usually have."""
    if rnd.random() < 0.5:
        return _json(rnd)
    return rnd.choice([["admin", "owner"], [], [1, 2.5], 10, 2.5, "a", {"a": 1, "b": "x"}, True])


def value_of(schema: dict[str, Any], rnd: random.Random) -> Any:
    """A value the schema accepts, as a request would carry it (pdp.model.request.number)."""
    if "enum" in schema:
        return rnd.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return value_of(rnd.choice(schema["anyOf"]), rnd)
    t = schema.get("type")
    if t is None:
        return _json(rnd)
    if isinstance(t, list):
        return value_of({**schema, "type": rnd.choice(t)}, rnd)
    if t == "null":
        return None
    if t == "string":
        return rnd.choice(_STRINGS)
    if t == "boolean":
        return rnd.random() < 0.5
    if t == "integer":  # an integer past 2**53 arrives as a double
        return rnd.randint(-5, 5) if rnd.random() < 0.8 else rnd.choice([float(2**60), -(2.0**54)])
    if t == "number":  # an int or a double, depending on its value
        return rnd.randint(-5, 5) if rnd.random() < 0.5 else number(rnd.uniform(-5, 5))
    if t == "array":
        items = schema.get("items")
        n = rnd.randint(0, 3)
        return [value_of(items, rnd) if items else _json(rnd) for _ in range(n)]
    out = {}
    extra = schema.get("additionalProperties", True)
    if extra is not False:  # other keys: anything, or what `additionalProperties` says
        for _ in range(rnd.randint(0, 2)):
            out[rnd.choice(EXTRA_KEYS)] = _json(rnd) if extra is True else value_of(extra, rnd)
    for k, sub in schema.get("properties", {}).items():
        out[k] = value_of(sub, rnd)
    return out


def values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return SEEDS.map(lambda n: value_of(schema, random.Random(n)))


# -- expressions over a schema ----------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """The constants and variables an expression may name (`C.k`, `V.v`), by kind (see
    `typed_expressions`): an attribute path is one way to reach a value, they are others."""

    by_kind: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def all(self) -> list[str]:
        return [n for _, names in self.by_kind for n in names]

    def of(self, kind: str) -> list[str]:
        return [n for k, names in self.by_kind if k == kind for n in names]

    def plus(self, kind: str, name: str) -> Names:
        return Names((*self.by_kind, (kind, (name,))))


def paths(schema: dict[str, Any], prefix: str = "R.attr") -> list[str]:
    out = []
    for name, sub in schema.get("properties", {}).items():
        p = f"{prefix}.{name}"
        out.append(p)
        if sub.get("type") == "object":
            out.extend(paths(sub, p))
    return out


LITERALS = [
    '"low"', '"a"', '""', '"10.0.0.0/8"', '"10.0.0.1"', '"1s"', '"2026-01-01T00:00:00Z"',
    "true", "false", "0", "1", "-1", "2.5", "1.0", "1u", "null", 'b"a"',
    "[]", '["a"]', "[1, 2]", "[null]", "[[]]", "{}", '{"a": 1}', "{1: true}",
    'duration("1h")', 'timestamp("2026-01-01T00:00:00Z")', 'ip("10.0.0.1")', 'cidr("10.0.0.0/8")',
    "int", "string",
]  # fmt: skip
REQUEST = ["P.id", "P.roles", "P.scopes", "P.attr", "P.actor", "P.actor.id", "R.id",
           "context.ip", "action", "now"]  # fmt: skip
BINARY = ["==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "in", "&&", "||"]
FIELDS = [*NAMES, "id", "x"]
KEYS = ["0", "1u", "0.0", '"a"', "x", "P.id"]

# The forms, by how many subexpressions they take (`%F` a field name, `%K` an index, both
# picked per example). The common ones are listed several times: drawn more often.
_CORE1 = ["!({})", "-({})", "({})[%K]", "({}).%F", "size({})", "({}) == null"]
_CALLS1 = [
    "has(({}).%F)", "({}).size()", "int({})", "uint({})", "double({})", "string({})", "bool({})",
    "bytes({})", "dyn({})", "type({})", "timestamp({})", "duration({})", "ip({})", "cidr({})",
    "isIP({})", "isCIDR({})", "ip.isCanonical({})", "country({})",
    "({}).lowerAscii()", "({}).upperAscii()", "({}).trim()", "({}).reverse()",
    '({}).split(",")', '({}).join(",")', "({}).join()", '({}).replace("a", "b")',
    '({}).matches("^a")', "({}).getHours()", "({}).getFullYear()", '({}).getDayOfWeek("UTC")',
    '({}).getMinutes("Europe/Paris")', "({}).family()", "({}).isLoopback()", "({}).ip()",
    "({}).masked()", "({}).prefixLength()", '({}).containsIP("10.0.0.1")', "({}) != null",
    '({}).exists(x, x == "a")', "({}).map(x, x)", "({}).all(i, x, i >= 0)",
]  # fmt: skip
_CORE2 = [*(f"({{}} {op} {{}})" for op in BINARY), "({})[{}]", "[{}, {}]", "{{{}: {}}}"]
_CALLS2 = [
    "({}).startsWith({})", "({}).endsWith({})", "({}).contains({})", "({}).indexOf({})",
    "({}).lastIndexOf({})", "({}).substring({})", "({}).charAt({})", "({}).split({})",
    "({}).join({})", "({}).containsIP({})", "({}).containsCIDR({})", "inCIDRs({}, {})",
    "hasAll({}, {})", "hasAny({}, {})", "isSubset({}, {})", "intersect({}, {})",
    "({}).containsAll({})", "({}).containsAny({})", "matches({}, {})",
    "({}).getHours({})", "({}).getFullYear({})", '({}).split(",", {})',
    "({}).all(x, {})", "({}).exists(x, {})", "({}).exists_one(x, {})", "({}).map(x, {})",
    "({}).filter(x, {})", "({}).all(i, x, {})", "({}).exists(i, x, {})",
    "({}).transformList(i, x, {})", "({}).transformMap(i, x, {})", "cel.bind(x, {}, {})",
]  # fmt: skip
_CALLS3 = ["({}).map(x, {}, {})", "({}).transformList(i, x, {}, {})",
           "({}).transformMap(i, x, {}, {})"]  # fmt: skip
FORMS = {
    1: _CORE1 * 4 + _CALLS1,
    2: _CORE2 * 2 + _CALLS2,
    3: ["(({}) ? ({}) : ({}))"] * 3 + _CALLS3,
}
# The property's first alphabet (session 18), which found its first two bugs: few forms, so
# that each meets the others often. Half the examples draw from it, half from all the forms.
NARROW = {
    "lit": ['"low"', '"a"', "true", "false", "0", "1", "2.5", "null", "[]", '["a"]', "[1, 2]",
            "1u"],
    "req": ["P.id", "P.roles", "context.ip"],
    1: ["!({})", "size({})", "-({})", "({})[0]", "double({})"],
    2: [*_CORE2[:14], "({}).startsWith({})", "({}).exists(x, x == {})", "({}).all(x, x > {})"],
    3: ["(({}) ? ({}) : ({}))"],
}  # fmt: skip
# Each example picks a few of each ("swarm testing": a small palette per example, so the few
# forms it has meet each other, `a ? a : b`, `[a, b][0]`, instead of every form once), and
# an expression tree says which palette entry goes where.
_SLOTS = 3
_SLOT = st.integers(0, _SLOTS - 1)
_ATOM_KINDS = ["attr", "attr", "lit", "req", "var"]


def _extend(e: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.just(1), _SLOT, e),
        st.tuples(st.just(2), _SLOT, e, e),
        st.tuples(st.just(3), _SLOT, e, e, e),
    )


TREES = st.recursive(st.tuples(st.sampled_from(_ATOM_KINDS), _SLOT), _extend, max_leaves=6)


def _palette(schema: dict[str, Any], rnd: random.Random, names: list[str]) -> dict[Any, list[str]]:
    field, key = rnd.choice(FIELDS), rnd.choice(KEYS)
    attrs = [*paths(schema), "R.attr", *names]

    def pick(options: list[str]) -> list[str]:
        return [rnd.choice(options) for _ in range(_SLOTS)]

    if rnd.random() < 0.5:
        return {
            "attr": pick(attrs), "var": ["x", "x", "x"],
            **{k: pick(options) for k, options in NARROW.items()},
        }  # fmt: skip
    forms = {n: [f.replace("%F", field).replace("%K", key) for f in pick(FORMS[n])] for n in FORMS}
    return {
        "attr": pick(attrs), "lit": pick(LITERALS), "req": pick(REQUEST), "var": ["x", "x", "i"],
        **forms,
    }  # fmt: skip


def render(tree: Any, palette: dict[Any, list[str]]) -> str:
    kind, slot, *children = tree
    if not children:
        return palette[kind][slot]
    return palette[kind][slot].format(*(render(c, palette) for c in children))


@st.composite
def expressions(draw: st.DrawFn, schema: dict[str, Any], names: Names = Names()) -> str:
    """Any expression over the schema's attributes and `names` (constants, variables)."""
    tree = draw(TREES, label="tree")
    palette = _palette(schema, random.Random(draw(SEEDS, label="palette")), names.all())
    return render(tree, palette)


def activation(attr: Any) -> dict[str, Any]:
    return {
        "principal": {
            "id": "alice",
            "tenant": "t",
            "roles": ["user"],
            "scopes": [],
            "attr": {},
            "actor": None,
        },
        "resource": {"kind": "doc", "id": "d1", "tenant": "t", "attr": attr},
        "action": "read",
        "context": {"ip": "10.0.0.1", "country": "", "attr": {}},
        "now": datetime(2026, 1, 1, tzinfo=UTC),
    }


__all__ = ["CelUint"]


# -- typed expressions, with near misses ------------------------------------------------------
# Random forms rarely fit together: the accepted ones are mostly short. These are built for a
# kind, from forms that fit it, except that now and then a part is built for another kind (a
# near miss): where the checker is wrong, it is wrong about a near miss it accepts, or about the
# type of something it accepts (which the property checks too).

_PATH_KINDS = {"boolean": "bool", "integer": "num", "number": "num", "string": "string",
               "object": "obj"}  # fmt: skip


def _kind_of(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "string"
    t = schema.get("type")
    if t == "array":
        items = schema.get("items", {}).get("type")
        kinds = {"string": "list", "integer": "nlist", "number": "nlist"}
        return kinds.get(items, "any") if isinstance(items, str) else "any"
    return _PATH_KINDS.get(t, "any") if isinstance(t, str) else "any"


def typed_paths(schema: dict[str, Any], prefix: str = "R.attr") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"obj": [prefix]}
    for name, sub in schema.get("properties", {}).items():
        p = f"{prefix}.{name}"
        out.setdefault(_kind_of(sub), []).append(p)
        if sub.get("type") == "object":
            for k, v in typed_paths(sub, p).items():
                out.setdefault(k, []).extend(v)
    return out


_LEAVES = {
    "bool": ["true", "false", "P.actor == null"],
    "num": ["1", "2.5", "0", "-1"],
    "int": ["1", "size(P.roles)", "-1"],
    "string": ["P.id", '"a"', "context.ip", "action", '""'],
    "list": ["P.roles", "[]", '["a"]', "P.scopes"],
    "nlist": ["[1, 2]", "[]", "[2.5]"],
    "obj": ["R.attr", "{}", '{"a": 1}', "P.attr"],
    "time": ["now", 'timestamp("2026-01-01T00:00:00Z")'],
    "dur": ['duration("1h")'],
    "any": ["null", "dyn(1)", "P.actor"],
}
_TERNARY = "(({}) ? ({}) : ({}))"
_RULES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "bool": [
        ("!({})", ("bool",)), ("({}) && ({})", ("bool", "bool")), ("({}) || ({})", ("bool", "bool")),
        (_TERNARY, ("bool", "bool", "bool")), ("({}) == ({})", ("string", "string")),
        ("({}) == ({})", ("num", "num")), ("({}) != ({})", ("obj", "obj")),
        ("({}) < ({})", ("num", "num")), ("({}) <= ({})", ("time", "time")),
        ("({}).startsWith({})", ("string", "string")), ("({}) in ({})", ("string", "list")),
        ("({}) in ({})", ("string", "obj")), ("({}).exists(x, x == {})", ("list", "string")),
        ("({}).all(x, x > {})", ("nlist", "num")), ("has(({}).%F)", ("obj",)),
        ("size({}) > 0", ("list",)), ("({}).all(k, v, {})", ("obj", "bool")),
        ("({}).exists_one(x, {})", ("list", "bool")), ("({}).contains({})", ("string", "string")),
        ("hasAny({}, {})", ("list", "list")), ('({}).matches("^a")', ("string",)),
    ],
    "string": [
        ("({}) + ({})", ("string", "string")), (_TERNARY, ("bool", "string", "string")),
        ("({})[0]", ("list",)), ("({}).lowerAscii()", ("string",)), ("string({})", ("num",)),
        ('({}).split(",")[0]', ("string",)), ('({}).join(",")', ("list",)), ("({}).%F", ("obj",)),
        ("({})[{}]", ("obj", "string")), ('({}).replace("a", {})', ("string", "string")),
        ("({}).substring({})", ("string", "int")), ("string({})", ("time",)),
    ],
    "num": [
        ("({}) + ({})", ("num", "num")), ("double({})", ("num",)), (_TERNARY, ("bool", "num", "num")),
        ("({})[0]", ("nlist",)), ("({}).%F", ("obj",)), ("int({})", ("num",)), ("-({})", ("num",)),
        ("({}) * ({})", ("int", "int")),
    ],
    "int": [
        ("size({})", ("list",)), ("size({})", ("string",)), ("({}).getHours()", ("time",)),
        ("int({})", ("num",)), ("({}).indexOf({})", ("string", "string")),
        ("({}) % ({})", ("int", "int")), ("({}).getHours()", ("dur",)),
    ],
    "list": [
        ("({}) + ({})", ("list", "list")), (_TERNARY, ("bool", "list", "list")),
        ("({}).filter(x, x != {})", ("list", "string")), ("({}).map(x, x + {})", ("list", "string")),
        ('({}).split(",")', ("string",)), ("[{}, {}]", ("string", "string")),
        ("intersect({}, {})", ("list", "list")), ("({}).%F", ("obj",)),
        ("({}).transformList(i, x, {})", ("list", "string")), ("({}).map(k, k)", ("obj",)),
    ],
    "nlist": [
        ("({}) + ({})", ("nlist", "nlist")), ("[{}, {}]", ("num", "num")),
        ("({}).map(x, x)", ("nlist",)), ("({}).%F", ("obj",)), (_TERNARY, ("bool", "nlist", "nlist")),
    ],
    "obj": [
        (_TERNARY, ("bool", "obj", "obj")), ("({}).%F", ("obj",)), ("({})[{}]", ("obj", "string")),
        ("{{{}: {}}}", ("string", "num")), ("[{}, {}][0]", ("obj", "obj")),
        ("({}).transformMap(k, v, {})", ("obj", "num")), ("cel.bind(x, {}, x)", ("obj",)),
    ],
    "time": [("({}) + ({})", ("time", "dur")), (_TERNARY, ("bool", "time", "time")),
             ("timestamp({})", ("string",))],
    "dur": [("({}) - ({})", ("time", "time")), ("duration({})", ("string",))],
    "any": [("dyn({})", ("string",)), (_TERNARY, ("bool", "any", "any")),
            ("[{}, {}][0]", ("string", "num"))],
}  # fmt: skip
_KINDS = list(_RULES)


def kind_of_value(v: Any) -> str:
    """The kind (as `_RULES` names them) of a constant's value."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "num"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "obj"
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return "list"
    if isinstance(v, list) and v and all(type(x) in (int, float) for x in v):
        return "nlist"
    return "any"


@st.composite
def typed_expressions(
    draw: st.DrawFn, schema: dict[str, Any], names: Names = Names(), kind: str | None = None
) -> str:
    """An expression of a kind (mostly `bool`), built from forms that fit, with near misses."""
    by_kind = typed_paths(schema)
    for k in _LEAVES:
        by_kind[k] = by_kind.get(k, []) + names.of(k)
    field = draw(st.sampled_from(FIELDS), label="field")

    def pick(options: list[Any]) -> Any:
        return options[draw(st.integers(0, len(options) - 1))]

    def gen(kind: str, depth: int) -> str:
        miss = draw(st.integers(0, 9))  # a near miss at 8 and 9 (not 0: shrinking goes to 0)
        if miss == 9:  # another kind
            kind = pick(_KINDS)
        elif miss == 8 and depth > 0:  # sometimes another kind: a union
            parts = [gen(kind, depth - 1), gen(pick(_KINDS), depth - 1)]
            if draw(st.booleans()):
                parts.reverse()
            return _TERNARY.format(gen("bool", depth - 1), *parts)
        if depth == 0 or draw(st.integers(0, 3)) == 0:
            return pick(by_kind.get(kind, []) + _LEAVES[kind])
        template, kinds = pick(_RULES[kind])
        return template.replace("%F", field).format(*(gen(k, depth - 1) for k in kinds))

    return gen(kind or pick(["bool", "bool", *_KINDS]), 5)

"""Generated schemas, conforming attributes and CEL expressions over them, for the checker's
property test (`test_checker_property.py`) and for longer runs of it offline.

The expressions are not typed by construction: most are refused, which is fine (the property
says nothing about them), and the rest reach the combinations an author would not think of.
Every CEL feature the checker types has a form here: operators, `in`, indexing by int, uint,
double and string, field selection, `has()`, all the macros (one and two variables, with and
without a filter), list and map literals, `null`, ternaries, conversions, `dyn`, the string,
list, time and network functions, `cel.bind`.
"""

from __future__ import annotations

import functools
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

_STRINGS = st.sampled_from(["", "a", "low", "high", "true", "0", "x y", "10.0.0.1", "1s", "a,b"])
_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 3),
        st.sampled_from([0.5, -1.5, float(2**60)]),
        _STRINGS,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(EXTRA_KEYS), inner, max_size=2)
    ),
    max_leaves=4,
)


def values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    if "anyOf" in schema:
        return st.one_of([values(s) for s in schema["anyOf"]])
    t = schema.get("type")
    if t is None:
        return _JSON
    if isinstance(t, list):
        return st.one_of([values({**schema, "type": x}) for x in t])
    if t == "null":
        return st.none()
    if t == "string":
        return _STRINGS
    if t == "boolean":
        return st.booleans()
    if t == "integer":  # an integer past 2**53 arrives as a double (pdp.model.request.number)
        return st.one_of(st.integers(-5, 5), st.sampled_from([float(2**60), -float(2**54)]))
    if t == "number":  # a JSON number arrives as int or double, depending on its value
        return st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False).map(number))
    if t == "array":
        return st.lists(values(schema["items"]) if "items" in schema else _JSON, max_size=3)
    props = schema.get("properties", {})
    fixed = st.fixed_dictionaries({k: values(v) for k, v in props.items()})
    extra = schema.get("additionalProperties", True)
    if extra is False:
        return fixed
    more = _JSON if extra is True else values(extra)
    others = st.dictionaries(st.sampled_from(EXTRA_KEYS), more, max_size=2)
    return st.tuples(others, fixed).map(lambda t: {**t[0], **t[1]})


# -- expressions over a schema ----------------------------------------------------------------


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
REQUEST = ["P.id", "P.roles", "P.scopes", "P.attr", "P.actor", "P.actor.id", "R.id", "R.attr",
           "context.ip", "action", "now"]  # fmt: skip
BINARY = ["==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "in", "&&", "||"]
# Comprehension variables: outside a comprehension they do not compile (the example is skipped).
VARS = ["x", "i"]
FIELDS = [*NAMES, "id", "x"]


def _fmt(template: str) -> Any:
    return lambda t: template.format(*t) if isinstance(t, tuple) else template.format(t)


# Where an attribute path goes: `expressions` fills each in from the schema's paths, so that
# the expression strategy is built once (building one per schema was most of the run time).
ATTR = "@attr"


def _extend(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    two, three = st.tuples(e, e), st.tuples(e, e, e)
    field = st.sampled_from(FIELDS)
    return st.one_of(
        st.tuples(e, st.sampled_from(BINARY), e).map(_fmt("({} {} {})")),
        e.map(_fmt("!({})")),
        e.map(_fmt("-({})")),
        three.map(_fmt("(({}) ? ({}) : ({}))")),
        st.tuples(e, field).map(_fmt("({}).{}")),
        st.tuples(e, field).map(_fmt("has(({}).{})")),
        st.tuples(e, st.sampled_from(["0", "1u", "0.0", '"a"', "x", "P.id"])).map(_fmt("({})[{}]")),
        two.map(_fmt("({})[{}]")),
        two.map(_fmt("[{}, {}]")),
        two.map(_fmt("{{{}: {}}}")),
        st.tuples(st.sampled_from(_CALLS1), e).map(lambda t: t[0].format(t[1])),
        st.tuples(st.sampled_from(_CALLS2), e, e).map(lambda t: t[0].format(t[1], t[2])),
        st.tuples(st.sampled_from(_MACROS), e, e).map(lambda t: t[0].format(t[1], t[2])),
        st.tuples(st.sampled_from(_MACROS3), e, e, e).map(lambda t: t[0].format(t[1], t[2], t[3])),
        two.map(_fmt("cel.bind(x, {}, {})")),
    )


@functools.cache
def _templates() -> st.SearchStrategy[str]:
    atoms = st.one_of(
        st.just(ATTR),
        st.sampled_from(LITERALS),
        st.sampled_from(REQUEST),
        st.sampled_from(VARS),
    )
    return st.recursive(atoms, _extend, max_leaves=6)


@st.composite
def expressions(draw: st.DrawFn, schema: dict[str, Any]) -> str:
    text = draw(_templates())
    choices = paths(schema) or ["R.attr"]
    for _ in range(text.count(ATTR)):
        text = text.replace(ATTR, draw(st.sampled_from(choices)), 1)
    return text


_CALLS1 = [
    "size({})", "({}).size()", "int({})", "uint({})", "double({})", "string({})", "bool({})",
    "bytes({})", "dyn({})", "type({})", "timestamp({})", "duration({})", "ip({})", "cidr({})",
    "isIP({})", "isCIDR({})", "ip.isCanonical({})", "country({})",
    "({}).lowerAscii()", "({}).upperAscii()", "({}).trim()", "({}).reverse()",
    '({}).split(",")', '({}).join(",")', "({}).join()", '({}).replace("a", "b")',
    '({}).matches("^a")', "({}).getHours()", "({}).getFullYear()", '({}).getDayOfWeek("UTC")',
    '({}).getMinutes("Europe/Paris")', "({}).family()", "({}).isLoopback()", "({}).ip()",
    "({}).masked()", "({}).prefixLength()", '({}).containsIP("10.0.0.1")',
    '({}) == null', "({}) != null",
]  # fmt: skip
_CALLS2 = [
    "({}).startsWith({})", "({}).endsWith({})", "({}).contains({})", "({}).indexOf({})",
    "({}).lastIndexOf({})", "({}).substring({})", "({}).charAt({})", "({}).split({})",
    "({}).join({})", "({}).containsIP({})", "({}).containsCIDR({})", "inCIDRs({}, {})",
    "hasAll({}, {})", "hasAny({}, {})", "isSubset({}, {})", "intersect({}, {})",
    "({}).containsAll({})", "({}).containsAny({})", "matches({}, {})",
    "({}).getHours({})", "({}).getFullYear({})", '({}).split(",", {})',
]  # fmt: skip
_MACROS = [
    "({}).all(x, {})", "({}).exists(x, {})", "({}).exists_one(x, {})", "({}).map(x, {})",
    "({}).filter(x, {})", "({}).all(i, x, {})", "({}).exists(i, x, {})",
    "({}).transformList(i, x, {})", "({}).transformMap(i, x, {})",
]  # fmt: skip
_MACROS3 = ["({}).map(x, {}, {})", "({}).transformList(i, x, {}, {})",
            "({}).transformMap(i, x, {}, {})"]  # fmt: skip


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

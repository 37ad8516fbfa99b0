"""The checker's promise, tested with generated schemas, expressions and inputs: an expression
it accepts under a schema never fails with a type error (no matching overload, a field on a
non-map, a non-bool condition) at run time when the attributes satisfy that schema.

Schemas mark every property `required`: a missing optional attribute is a `no such key` at run
time, which is null-safety (guarded with `has()`), not typing, and is outside the promise.
Other run-time errors that no type system rules out (division by zero, overflow) are allowed.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import fastjsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.cel import CelEnv, CelEvalError, TypeEnv, check_cel, compile_cel, type_from_schema
from pdp.cel._types import BOOL, Prim, members

# -- schemas ----------------------------------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "owner", "size", "tags", "flag", "meta"])
LEAF = st.sampled_from(
    [
        {"type": "string"},
        {"type": "boolean"},
        {"type": "integer"},
        {"type": "number"},
        {"enum": ["low", "high"]},
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "number"}},
    ]
)


def objects(leaf: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(NAMES, leaf, min_size=1, max_size=4).map(
        lambda props: {"type": "object", "properties": props, "required": sorted(props)}
    )


SCHEMAS = objects(st.one_of(LEAF, objects(LEAF)))

# -- conforming values ------------------------------------------------------------------------

_STRINGS = st.sampled_from(["", "a", "low", "high", "true", "0", "x y"])


def values(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    t = schema["type"]
    if t == "string":
        return _STRINGS
    if t == "boolean":
        return st.booleans()
    if t == "integer":
        return st.integers(-5, 5)
    if t == "number":  # a JSON number arrives as int or double, depending on its text
        return st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False).map(float))
    if t == "array":
        return st.lists(values(schema["items"]), max_size=3)
    props = schema["properties"]
    return st.fixed_dictionaries({k: values(v) for k, v in props.items()})


# -- expressions over a schema ----------------------------------------------------------------


def paths(schema: dict[str, Any], prefix: str = "R.attr") -> list[str]:
    out = []
    for name, sub in schema["properties"].items():
        p = f"{prefix}.{name}"
        out.append(p)
        if sub.get("type") == "object":
            out.extend(paths(sub, p))
    return out


LITERALS = st.sampled_from(
    ['"low"', '"a"', "true", "false", "0", "1", "2.5", "null", "[]", '["a"]', "[1, 2]", "1u"]
)
BINARY = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "in", "&&", "||"])  # fmt: skip


def expressions(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    atoms = st.one_of(st.sampled_from(paths(schema)), LITERALS, st.sampled_from(["P.id", "P.roles", "context.ip"]))  # fmt: skip

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, BINARY, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            inner.map(lambda e: f"!({e})"),
            inner.map(lambda e: f"size({e})"),
            inner.map(lambda e: f"-({e})"),
            st.tuples(inner, inner, inner).map(lambda t: f"(({t[0]}) ? ({t[1]}) : ({t[2]}))"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}).startsWith({t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}).exists(x, x == {t[1]})"),
            st.tuples(inner, inner).map(lambda t: f"({t[0]}).all(x, x > {t[1]})"),
            inner.map(lambda e: f"({e})[0]"),
            inner.map(lambda e: f"double({e})"),
        )

    return st.recursive(atoms, extend, max_leaves=6)


@functools.lru_cache(maxsize=256)
def validator(schema_json: str) -> Any:
    return fastjsonschema.compile(json.loads(schema_json))


# A type error at run time: the errors the checker exists to rule out.
TYPE_ERRORS = ("no matching overload", "no such overload", "unsupported", "must be `bool`")


def run(compiled: Any, attr: Any) -> Any:
    activation = {
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
    return compiled(activation)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(data=st.data())
def test_accepted_expressions_raise_no_type_error_on_conforming_input(data: st.DataObject) -> None:
    schema = data.draw(SCHEMAS, label="schema")
    expr = data.draw(expressions(schema), label="expr")
    try:
        result = check_cel(expr, TypeEnv(resource_attr=type_from_schema(schema, schema, "s")))
        compiled = compile_cel(expr, CelEnv())
    except Exception:  # does not compile (e.g. a literal the compiler folds into an error)
        return
    if any(not i.warning for i in result.issues):
        return  # rejected: nothing promised
    attr = data.draw(values(schema), label="attr")
    validator(json.dumps(schema, sort_keys=True))(attr)  # the input does satisfy the schema
    try:
        value = run(compiled, attr)
    except CelEvalError as e:
        text = str(e)
        assert not any(t in text for t in TYPE_ERRORS), f"{expr!r} on {attr!r}: {text}"
        return
    kinds = [m for m in members(result.type) if isinstance(m, Prim)]
    if kinds == [BOOL]:
        assert isinstance(value, bool), f"{expr!r} is typed bool but gave {value!r}"


def test_the_generator_reaches_accepted_and_rejected_expressions() -> None:
    """The property is not vacuous: both outcomes occur with this generator."""
    schema = {"type": "object", "properties": {"n": {"type": "number"}, "s": {"type": "string"}}, "required": ["n", "s"]}  # fmt: skip
    env = TypeEnv(resource_attr=type_from_schema(schema, schema, "s"))
    assert not check_cel("R.attr.n < 2 && R.attr.s.startsWith('a')", env).issues
    assert check_cel("R.attr.n + 1 > 0", env).issues
    assert check_cel("R.attr.s == true", env).issues


def test_an_operator_needs_every_member_of_a_union_to_fit() -> None:
    """Found by the property above: `!` accepted `a ? a : b` (bool or string) for its bool
    member, and the expression failed at run time whenever `a` was false. Every member must fit,
    as for arithmetic; `null` beside other members and `dyn` stay accepted."""
    schema = {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "string"}}, "required": ["a", "b"]}  # fmt: skip
    env = TypeEnv(resource_attr=type_from_schema(schema, schema, "s"))
    refused = [
        "!(R.attr.a ? R.attr.a : R.attr.b)",
        "(R.attr.a ? R.attr.a : R.attr.b) && true",
        "[R.attr.a, R.attr.b].exists(x, x)",
        "(R.attr.a ? R.attr.a : R.attr.b) ? 1 : 2",
    ]
    for expr in refused:
        assert any(not i.warning for i in check_cel(expr, env).issues), expr
        assert run(compile_cel(expr, CelEnv()), {"a": True, "b": "x"}) is not None  # runs...
        try:  # ...and fails on the other member
            run(compile_cel(expr, CelEnv()), {"a": False, "b": "x"})
        except CelEvalError as e:
            assert any(t in str(e) for t in TYPE_ERRORS), (expr, e)
        else:
            raise AssertionError(f"{expr} ran on the string member")
    assert check_cel("R.attr.a ? R.attr.a : R.attr.b", env, condition=True).issues
    for expr in ["!(R.attr.a ? R.attr.a : null)", "!(R.attr.a ? R.attr.a : dyn(R.attr.b))"]:
        assert not [i for i in check_cel(expr, env).issues if not i.warning], expr


def test_the_empty_list_adds_no_element_type() -> None:
    """Found by the property above (seed 3): `[]` was a `list(dyn)`, so `([] + P.roles)[0]` was
    a `dyn` and `!` of it was accepted, failing on every request with a role. As CEL's checker
    infers, `[] + l` has `l`'s type; comparisons with `[]` and predicates over it stay fine."""
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}, "required": ["tags"]}  # fmt: skip
    env = TypeEnv(resource_attr=type_from_schema(schema, schema, "s"))
    for expr in [
        "!(([] + P.roles)[0])",
        "!((P.roles + [])[0])",
        '!((P.id == "a" ? [] : R.attr.tags)[0])',
    ]:
        assert any(not i.warning for i in check_cel(expr, env).issues), expr
    assert check_cel("[] + P.roles", env).type.show() == "list(string)"
    for expr in ["R.attr.tags == []", "[].exists(x, x)", "P.id in []", "size([]) == 0", "!([][0])"]:
        assert not [i for i in check_cel(expr, env).issues if not i.warning], expr

"""The generated code of CEL operators (`pdp.cel._operators`), checked against the runtime
(issue 27, mutation testing).

The code generator gives comparisons, membership, indexing and logic inline fast paths guarded
by class tests, chosen by what it knows at compile time: both operands constant (folded by the
runtime functions), one constant (a guard on the other's class), or neither. The conformance
suite is mostly literals, so it exercises the folding far more than the guards. Here every
operator runs over a grid of values in all four forms — folded, constant on the left, constant
on the right, no constant — and the four must agree exactly: the same value of the same type,
or an error in each. A guard that lets a value through that it should not (a bool taken for an
int, a negative list index, an int compared through a double) fails here.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pdp.cel import CelEnv, CelEvalError, CelUint, compile_cel

TS = datetime(2020, 1, 1, tzinfo=UTC)

VALUES: list[Any] = [
    0,
    1,
    -1,
    2**53,
    2**53 + 1,
    2**63 - 1,
    1.0,
    1.5,
    -0.0,
    float(2**53),
    CelUint(1),
    CelUint(2**63),
    "a",
    "",
    True,
    False,
    None,
    [1, "a"],
    [],
    ["a", "b"],
    {"a": 1},
    {1: "x"},
    {True: "t"},
    b"a",
    TS,
    timedelta(seconds=1),
    # Long enough to take the charged forms of comparisons and lookups (100 characters).
    "a" * 150,
    "a" * 149 + "\U0001f600",
    b"a" * 150,
    {"a" * 150: 1},
]


def lit(x: Any) -> str:
    """CEL source for the value `x`."""
    if x is None:
        return "null"
    if x is True or x is False:
        return "true" if x else "false"
    if isinstance(x, CelUint):
        return f"{int(x)}u"
    if isinstance(x, int):
        return f"({x})" if x < 0 else str(x)
    if isinstance(x, float):
        return f"({x!r})" if math.copysign(1.0, x) < 0 else repr(x)
    if isinstance(x, str):
        return repr(x)
    if isinstance(x, bytes):
        return "b" + repr(x.decode())
    if isinstance(x, list):
        return "[" + ", ".join(lit(e) for e in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in x.items()) + "}"
    if isinstance(x, datetime):
        return f"timestamp('{x.isoformat().replace('+00:00', 'Z')}')"
    if isinstance(x, timedelta):
        return f"duration('{int(x.total_seconds())}s')"
    raise AssertionError(x)


ERROR = object()


def run(src: str, act: dict[str, Any]) -> Any:
    try:
        return compile_cel(src, CelEnv(names=act))(act)
    except CelEvalError:
        return ERROR


def same(a: Any, b: Any) -> bool:
    if a is ERROR or b is ERROR:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def forms(template: str, x: Any, y: Any) -> dict[str, Any]:
    """`template` over x and y: folded, x constant, y constant, neither."""
    return {
        "folded": run(template.format(x=lit(x), y=lit(y)), {}),
        "x const": run(template.format(x=lit(x), y="y"), {"y": y}),
        "y const": run(template.format(x="x", y=lit(y)), {"x": x}),
        "dynamic": run(template.format(x="x", y="y"), {"x": x, "y": y}),
    }


BINARY = [
    "{x} == {y}",
    "{x} != {y}",
    "{x} < {y}",
    "{x} <= {y}",
    "{x} > {y}",
    "{x} >= {y}",
    "{x} in {y}",
    "{x}[{y}]",
    "{x} + {y}",
    "{x} - {y}",
    "{x} * {y}",
    "{x} / {y}",
    "{x} % {y}",
    "{x} && {y}",
    "{x} || {y}",
    "{x} ? {y} : 7",
    "{x} ? 7 : {y}",
]


@pytest.mark.parametrize("template", BINARY)
def test_every_form_of_a_binary_operator_agrees(template: str) -> None:
    bad = []
    for x in VALUES:
        for y in VALUES:
            got = forms(template, x, y)
            ref = got["folded"]
            for form, value in got.items():
                if not same(value, ref):
                    bad.append(
                        f"{template.format(x=lit(x), y=lit(y))} {form}: {value!r} != {ref!r}"
                    )
    assert bad == []


@pytest.mark.parametrize("template", ["!({x})", "-({x})", "size({x})"])
def test_every_form_of_a_unary_operator_agrees(template: str) -> None:
    for x in VALUES:
        folded = run(template.format(x=lit(x)), {})
        dynamic = run(template.format(x="x"), {"x": x})
        assert same(dynamic, folded), (template, x, dynamic, folded)


# Exact values where a fast path could go wrong, beyond agreement.


@pytest.mark.parametrize(
    ("src", "act", "want"),
    [
        ("x[y]", {"x": [1, 2, 3], "y": -1}, ERROR),
        ("x[-1]", {"x": [1, 2, 3]}, ERROR),
        ("x[y]", {"x": [1, 2, 3], "y": 3}, ERROR),
        ("x[y]", {"x": [1, 2, 3], "y": 2}, 3),
        ("x[y]", {"x": [1, 2, 3], "y": 2.0}, 3),
        ("x[y]", {"x": [1, 2, 3], "y": True}, ERROR),
        ("x[y]", {"x": {1: "a"}, "y": True}, ERROR),
        ("x[true]", {"x": {1: "a"}}, ERROR),
        ("x[1]", {"x": {True: "a"}}, ERROR),
        ("x['a']", {"x": {"a": 0}}, 0),
        ("x['b']", {"x": {"a": 0}}, ERROR),
        ("x in ['a', 'b']", {"x": "a"}, True),
        ("x in ['a', 'b']", {"x": "c"}, False),
        ("x in ['a', 'b']", {"x": 1}, False),
        ("x in ['1']", {"x": 1}, False),
        ("x in [1, 2]", {"x": True}, False),
        ("x in [[1], [2]]", {"x": [1]}, True),
        # operands whose type the compiler knows without knowing their value
        ("size(x) < 3", {"x": [1]}, True),
        ("size(x) >= 3", {"x": [1]}, False),
        ("size(x) < size(y)", {"x": [1], "y": [1, 2]}, True),
        ("size(x) == 1", {"x": [1]}, True),
        ("(c ? 1 : true) == 1", {"c": False}, False),
        ("(c ? 1 : true) == 1", {"c": True}, True),
        ("(c ? 1 : true) < 2", {"c": False}, ERROR),
        ("(c ? 'a' : 1) == 'a'", {"c": False}, False),
        ("x in [[1], [2]]", {"x": "a"}, False),
        ("1 == x", {"x": True}, False),
        ("null == x", {"x": 1}, False),
        ("null != x", {"x": 1}, True),
        ("x != null", {"x": None}, False),
        ("x in [1, 2]", {"x": 1.0}, True),
        ("'a' in x", {"x": {"a": 1}}, True),
        ("'a' in x", {"x": ["a"]}, True),
        ("'a' in x", {"x": "a"}, ERROR),
        ("x == 1", {"x": True}, False),
        ("x == 1", {"x": 1.0}, True),
        ("x != 1", {"x": True}, True),
        ("x == null", {"x": None}, True),
        ("x != null", {"x": 0}, True),
        ("x == 'a'", {"x": "a"}, True),
        ("x == y", {"x": "a", "y": "a"}, True),
        ("x == y", {"x": 1, "y": CelUint(1)}, True),
        ("x == y", {"x": [1], "y": [1.0]}, True),
        # int with double compares as doubles: 2**53 + 1 is the double 2**53
        ("x >= 9007199254740993", {"x": 9007199254740992.0}, True),
        ("x < 9007199254740993", {"x": 9007199254740992.0}, False),
        ("9007199254740993 > x", {"x": 9007199254740992.0}, False),
        ("x >= 9007199254740992", {"x": 9007199254740992.0}, True),
        ("x < -9007199254740993", {"x": -9007199254740992.0}, False),
        ("x > 9007199254740992", {"x": 9007199254740993}, True),
        ("x >= 1", {"x": True}, ERROR),
        ("1 <= x", {"x": True}, ERROR),
        # a uint constant takes no double guard: compared as doubles, 2**64 - 1 is 2**64
        ("x <= 18446744073709551615u", {"x": float(2**64)}, True),
        ("18446744073709551615u >= x", {"x": float(2**64)}, True),
        ("x < 18446744073709551615u", {"x": float(2**64)}, False),
        ("x > 1.5", {"x": 2}, True),
        ("x > 1.5", {"x": True}, ERROR),
        ("1.5 < x", {"x": 2}, True),
        ("x < 'b'", {"x": "a"}, True),
        ("x < y", {"x": "a", "y": "b"}, True),
        ("x < y", {"x": True, "y": 1}, ERROR),
        ("x < y", {"x": 1, "y": 1.5}, True),
        ("!x", {"x": True}, False),
        ("!x", {"x": 1}, ERROR),
        ("!(x == 1)", {"x": 2}, True),
        ("-x", {"x": 1}, -1),
        ("-x", {"x": "a"}, ERROR),
        ("x ? 1 : 2", {"x": 1}, ERROR),
        ("x ? 1 : 2", {"x": None}, ERROR),
    ],
)
def test_fast_paths_give_exact_values(src: str, act: dict[str, Any], want: Any) -> None:
    got = run(src, act)
    assert same(got, want), (src, act, got)


@pytest.mark.parametrize(
    ("src", "act", "message"),
    [
        (
            "a && b && c",
            {"a": 1, "b": True, "c": True},
            "no matching overload for `_&&_` applied to (int)",
        ),
        (
            "[a && b && c][0]",
            {"a": True, "b": "x", "c": True},
            "no matching overload for `_&&_` applied to (string)",
        ),
        (
            "a || b || c",
            {"a": False, "b": False, "c": None},
            "no matching overload for `_||_` applied to (null_type)",
        ),
        ("[a || b][0]", {"a": False, "b": 2}, "no matching overload for `_||_` applied to (int)"),
        ("a && b", {"a": 1, "b": True}, "no matching overload for `_&&_` applied to (int)"),
        ("x ? 1 : 2", {"x": "y"}, "no matching overload for `_?_:_` applied to (string)"),
    ],
)
def test_logic_errors_name_the_operator_and_the_operand(
    src: str, act: dict[str, Any], message: str
) -> None:
    with pytest.raises(CelEvalError) as e:
        compile_cel(src, CelEnv(names=act))(act)
    assert str(e.value) == message


# Logic: an error (or a non-bool) is absorbed only by the value that decides the result, in
# either position — CEL's commutative `&&` and `||`.


def _and(*vals: Any) -> Any:
    if any(x is False for x in vals):
        return False
    return True if all(x is True for x in vals) else ERROR


def _or(*vals: Any) -> Any:
    if any(x is True for x in vals):
        return True
    return False if all(x is False for x in vals) else ERROR


OPERANDS = [True, False, 1, None]


@pytest.mark.parametrize(
    ("src", "ref"),
    [
        ("a && b", lambda a, b, c: _and(a, b)),
        ("a || b", lambda a, b, c: _or(a, b)),
        ("a && b && c", lambda a, b, c: _and(a, b, c)),
        ("a || b || c", lambda a, b, c: _or(a, b, c)),
        ("a && (b || c)", lambda a, b, c: _and(a, _or(b, c))),
        ("(a || b) && c", lambda a, b, c: _and(_or(a, b), c)),
    ],
)
@pytest.mark.parametrize("wrap", ["{}", "({}) == true", "[{}][0]", "!({})"])
def test_logic_absorbs_errors_only_where_the_result_is_decided(
    src: str, ref: Any, wrap: str
) -> None:
    # `wrap` puts the expression in tail position, inside a comparison, inside a list and
    # under a negation, so each shape of the generated code (return or assignment) runs.
    bad = []
    for a in OPERANDS:
        for b in OPERANDS:
            for c in OPERANDS:
                want = ref(a, b, c)
                if want is not ERROR and wrap.startswith("("):
                    want = want is True
                elif want is not ERROR and wrap.startswith("!"):
                    want = not want
                got = run(wrap.format(src), {"a": a, "b": b, "c": c})
                if not same(got, want):
                    bad.append(f"{wrap.format(src)} a={a} b={b} c={c}: {got!r} != {want!r}")
    assert bad == []

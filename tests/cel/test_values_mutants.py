"""The CEL runtime (`pdp.cel._values`), pinned by exact values (issue 27, mutation testing).

Written against the survivors of `make mutation ARGS='pdp.cel.*'`. Each expression runs twice:
with literal operands (folded at compile time) and with the operands read from the activation
(the generated code's runtime path), and both must give the same exact value — or the same
exact error. A key lookup that matches across types, a comparison that loses precision or an
error that turns into a value fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pdp.cel import CelEnv, CelEvalError, CelUint, compile_cel
from pdp.cel import _values as v

TS = datetime(2020, 1, 1, tzinfo=UTC)


class Err:
    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"Err({self.message!r})"


def _run(src: str, act: dict[str, Any]) -> Any:
    try:
        return compile_cel(src, CelEnv(names=act))(act)
    except CelEvalError as e:
        return Err(str(e))


def _check(got: Any, want: Any) -> None:
    if isinstance(want, Err):
        assert isinstance(got, Err), f"want error `{want.message}`, got {got!r}"
        assert got.message == want.message
    else:
        assert got == want and type(got) is type(want), f"want {want!r}, got {got!r}"


def _both(expr: str, x: Any, y: Any, x_src: str, y_src: str, want: Any) -> None:
    """`expr` over x and y given as activation values, then as the literals x_src and y_src."""
    _check(_run(expr, {"x": x, "y": y}), want)
    _check(_run(expr.replace("x", x_src).replace("y", y_src), {}), want)


U64 = 2**64 - 1
I64 = 2**63 - 1

OVERLOAD = "no matching overload for `{}` applied to ({})"


@pytest.mark.parametrize(
    ("expr", "x", "y", "x_src", "y_src", "want"),
    [
        # ordering across int and uint is exact, never through doubles
        ("x >= y", I64, CelUint(2**63), str(I64), f"{2**63}u", False),
        ("x <= y", CelUint(2**63), I64, f"{2**63}u", str(I64), False),
        ("x > y", CelUint(2**63), I64, f"{2**63}u", str(I64), True),
        ("x < y", I64, CelUint(2**63), str(I64), f"{2**63}u", True),
        ("x >= y", 1, CelUint(1), "1", "1u", True),
        ("x <= y", CelUint(1), 1, "1u", "1", True),
        ("x > y", 1, CelUint(1), "1", "1u", False),
        ("x < y", CelUint(1), 1, "1u", "1", False),
        ("x >= y", 1, CelUint(2), "1", "2u", False),
        ("x <= y", CelUint(2), 1, "2u", "1", False),
        # int with double compares as doubles
        ("x >= y", 1, 1.0, "1", "1.0", True),
        ("x <= y", 1.5, 1, "1.5", "1", False),
        ("x > y", 2, 1.5, "2", "1.5", True),
        ("x < y", 1.5, 2, "1.5", "2", True),
        # timestamps with timestamps only
        (
            "x >= y",
            TS,
            TS,
            "timestamp('2020-01-01T00:00:00Z')",
            "timestamp('2020-01-01T00:00:00Z')",
            True,
        ),
        (
            "x <= y",
            TS,
            TS,
            "timestamp('2020-01-01T00:00:00Z')",
            "timestamp('2020-01-01T00:00:00Z')",
            True,
        ),
        (
            "x > y",
            TS,
            TS,
            "timestamp('2020-01-01T00:00:00Z')",
            "timestamp('2020-01-01T00:00:00Z')",
            False,
        ),
        (
            "x < y",
            TS,
            TS,
            "timestamp('2020-01-01T00:00:00Z')",
            "timestamp('2020-01-01T00:00:00Z')",
            False,
        ),
        (
            "x >= y",
            TS,
            1,
            "timestamp('2020-01-01T00:00:00Z')",
            "1",
            Err(OVERLOAD.format("_>=_", "google.protobuf.Timestamp, int")),
        ),
        (
            "x <= y",
            1,
            TS,
            "1",
            "timestamp('2020-01-01T00:00:00Z')",
            Err(OVERLOAD.format("_<=_", "int, google.protobuf.Timestamp")),
        ),
        (
            "x > y",
            TS,
            "a",
            "timestamp('2020-01-01T00:00:00Z')",
            "'a'",
            Err(OVERLOAD.format("_>_", "google.protobuf.Timestamp, string")),
        ),
        (
            "x < y",
            "a",
            TS,
            "'a'",
            "timestamp('2020-01-01T00:00:00Z')",
            Err(OVERLOAD.format("_<_", "string, google.protobuf.Timestamp")),
        ),
        # no ordering between types
        ("x >= y", "a", 1, "'a'", "1", Err(OVERLOAD.format("_>=_", "string, int"))),
        ("x <= y", "a", 1, "'a'", "1", Err(OVERLOAD.format("_<=_", "string, int"))),
        ("x > y", "a", 1, "'a'", "1", Err(OVERLOAD.format("_>_", "string, int"))),
        ("x < y", "a", 1, "'a'", "1", Err(OVERLOAD.format("_<_", "string, int"))),
        ("x >= y", True, 1, "true", "1", Err(OVERLOAD.format("_>=_", "bool, int"))),
        ("x <= y", [1], [1], "[1]", "[1]", Err(OVERLOAD.format("_<=_", "list, list"))),
        # unsigned arithmetic at its bounds
        ("x + y", CelUint(U64 - 1), CelUint(1), f"{U64 - 1}u", "1u", CelUint(U64)),
        ("x + y", CelUint(U64), CelUint(1), f"{U64}u", "1u", Err("unsigned integer overflow")),
        ("x - y", CelUint(0), CelUint(1), "0u", "1u", Err("unsigned integer overflow")),
        ("x * y", CelUint(U64), CelUint(1), f"{U64}u", "1u", CelUint(U64)),
        ("x * y", CelUint(U64), CelUint(2), f"{U64}u", "2u", Err("unsigned integer overflow")),
        ("x + y", I64 - 1, 1, str(I64 - 1), "1", I64),
        ("x + y", I64, 1, str(I64), "1", Err("integer overflow")),
        # modulus: the sign of the dividend, an error by zero, ints with ints only
        ("x % y", -7, 3, "-7", "3", -1),
        ("x % y", 7, -3, "7", "-3", 1),
        ("x % y", 0, 3, "0", "3", 0),
        ("x % y", 5, 0, "5", "0", Err("modulus by zero")),
        ("x % y", CelUint(7), CelUint(3), "7u", "3u", CelUint(1)),
        ("x % y", CelUint(5), CelUint(0), "5u", "0u", Err("modulus by zero")),
        ("x % y", "a", 1, "'a'", "1", Err(OVERLOAD.format("_%_", "string, int"))),
        ("x % y", 5.0, 2.0, "5.0", "2.0", Err(OVERLOAD.format("_%_", "double, double"))),
        ("x / y", 7, 0, "7", "0", Err("division by zero")),
        ("x / y", -7, 2, "-7", "2", -3),
        ("x / y", 7, -2, "7", "-2", -3),
        ("x / y", -7, -2, "-7", "-2", 3),
        ("x / y", 0, -2, "0", "-2", 0),
        ("x / y", CelUint(U64), CelUint(1), f"{U64}u", "1u", CelUint(U64)),
        ("x / y", CelUint(7), CelUint(2), "7u", "2u", CelUint(3)),
        ("x / y", CelUint(7), CelUint(0), "7u", "0u", Err("division by zero")),
        ("x / y", "a", 1, "'a'", "1", Err(OVERLOAD.format("_/_", "string, int"))),
        ("x / y", 1, 1.0, "1", "1.0", Err(OVERLOAD.format("_/_", "int, double"))),
        # conditions must be bools
        ("x ? y : 2", 1, 1, "1", "1", Err(OVERLOAD.format("_?_:_", "int"))),
        ("x ? y : 2", "true", 1, "'true'", "1", Err(OVERLOAD.format("_?_:_", "string"))),
        ("x ? y : 2", True, 1, "true", "1", 1),
        ("x ? 1 : y", False, 2, "false", "2", 2),
    ],
)
def test_operators_give_exact_values_and_errors(
    expr: str, x: Any, y: Any, x_src: str, y_src: str, want: Any
) -> None:
    _both(expr, x, y, x_src, y_src, want)


@pytest.mark.parametrize(
    ("expr", "x", "x_src", "want"),
    [
        ("-x", timedelta(seconds=1), "duration('1s')", timedelta(seconds=-1)),
        ("-x", timedelta(seconds=-90), "duration('-90s')", timedelta(seconds=90)),
        ("-x", 2.5, "2.5", -2.5),
        ("-x", -(2**63), "(-9223372036854775807 - 1)", Err("integer overflow")),
        ("-x", "a", "'a'", Err(OVERLOAD.format("-_", "string"))),
        ("-x", CelUint(1), "(1u)", Err(OVERLOAD.format("-_", "uint"))),
        ("!x", 1, "1", Err(OVERLOAD.format("!_", "int"))),
        ("!x", "true", "'true'", Err(OVERLOAD.format("!_", "string"))),
        ("!x", None, "null", Err(OVERLOAD.format("!_", "null_type"))),
        ("size(x)", 1, "1", Err(OVERLOAD.format("size", "int"))),
        ("size(x)", None, "null", Err(OVERLOAD.format("size", "null_type"))),
        ("size(x)", {"a": 1, "b": 2}, "{'a': 1, 'b': 2}", 2),
        ("size(x)", [1, 2, 3], "[1, 2, 3]", 3),
        ("size(x)", "héllo", "'héllo'", 5),
        ("size(x)", b"ab", "b'ab'", 2),
        ("!x", True, "true", False),
        ("!x", False, "false", True),
    ],
)
def test_unary_operators(expr: str, x: Any, x_src: str, want: Any) -> None:
    _both(expr, x, 0, x_src, "0", want)


class _Stamp(datetime):
    """A datetime subclass, as a caller's library may hand over."""


@pytest.mark.parametrize(
    ("expr", "want"),
    [("x >= y", True), ("x <= y", True), ("x > y", False), ("x < y", False)],
)
def test_timestamps_of_different_classes_compare_as_timestamps(expr: str, want: bool) -> None:
    stamp = _Stamp(2020, 1, 1, tzinfo=UTC)
    assert _run(expr, {"x": stamp, "y": TS}) is want
    assert _run(expr, {"x": TS, "y": stamp}) is want


def test_size_of_a_tuple_is_its_length() -> None:
    assert _run("size(x)", {"x": ("a", "b")}) == 2


# -- map keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "key_src", "m", "m_src", "found", "value"),
    [
        # bools never match numbers (Python's True == 1 must not leak into CEL)
        (True, "true", {1: "a"}, "{1: 'a'}", False, None),
        (1, "1", {True: "a"}, "{true: 'a'}", False, None),
        (False, "false", {0: "a"}, "{0: 'a'}", False, None),
        (0, "0", {False: "a"}, "{false: 'a'}", False, None),
        (True, "true", {True: "a"}, "{true: 'a'}", True, "a"),
        (True, "true", {False: "a"}, "{false: 'a'}", False, None),
        # numbers match across int, uint and integral doubles
        (1.0, "1.0", {1: "a"}, "{1: 'a'}", True, "a"),
        (1.5, "1.5", {1: "a"}, "{1: 'a'}", False, None),
        (1, "1", {CelUint(1): "a"}, "{1u: 'a'}", True, "a"),
        (CelUint(2), "2u", {2: "a"}, "{2: 'a'}", True, "a"),
        (3, "3", {2: "a"}, "{2: 'a'}", False, None),
        # strings by string only
        ("a", "'a'", {"a": 1}, "{'a': 1}", True, 1),
        ("b", "'b'", {"a": 1}, "{'a': 1}", False, None),
        ("1", "'1'", {1: "a"}, "{1: 'a'}", False, None),
    ],
)
def test_map_keys_match_by_cel_type(
    key: Any, key_src: str, m: dict[Any, Any], m_src: str, found: bool, value: Any
) -> None:
    _both("x in y", key, m, key_src, m_src, found)
    _both("y[x]", key, m, key_src, m_src, value if found else Err(f"no such key: `{key}`"))
    assert v.map_lookup(m, key) == (found, value)


@pytest.mark.parametrize(
    ("key", "key_src", "type_name"),
    [
        (b"a", "b'a'", "bytes"),
        (None, "null", "null_type"),
        (TS, "timestamp('2020-01-01T00:00:00Z')", "google.protobuf.Timestamp"),
        (timedelta(seconds=1), "duration('1s')", "google.protobuf.Duration"),
    ],
)
def test_keys_of_no_map_key_type_are_errors_not_misses(
    key: Any, key_src: str, type_name: str
) -> None:
    m = {"a": 1, "b'a'": 2, "None": 3}
    want = Err(OVERLOAD.format("_[_]", f"map, {type_name}"))
    _both("x in y", key, m, key_src, "{'a': 1, \"b'a'\": 2, 'None': 3}", want)
    _both("y[x]", key, m, key_src, "{'a': 1}", want)


def test_other_hashable_keys_are_looked_up_as_they_are() -> None:
    # Neither string, bool, number nor a refused type: a CEL type value, an address.
    assert v.map_lookup({v.T_INT: "i"}, v.T_INT) == (True, "i")
    assert v.map_lookup({v.T_INT: "i"}, v.T_UINT) == (False, None)
    assert v.map_lookup({}, ("a",)) == (False, None)
    assert _run("x in y", {"x": v.T_INT, "y": {v.T_INT: 1}}) is True
    assert _run("x in y", {"x": v.T_STRING, "y": {v.T_INT: 1}}) is False
    assert _run("y[x]", {"x": v.T_INT, "y": {v.T_INT: 7}}) == 7
    _check(_run("y[x]", {"x": v.T_UINT, "y": {v.T_INT: 7}}), Err("no such key: `uint`"))


# -- the rest of the runtime, called as the planner calls it ---------------------------------


def test_not_and_select_and_has_as_the_planner_calls_them() -> None:
    assert v.not_(True) is False
    assert v.not_(False) is True
    with pytest.raises(CelEvalError, match=r"^no matching overload for `!_` applied to \(int\)$"):
        v.not_(0)
    assert v.select({"a": None}, "a") is None
    assert v.select({"a": 1}, "a") == 1
    with pytest.raises(CelEvalError, match=r"^no such key: `b`$"):
        v.select({"a": 1}, "b")
    with pytest.raises(CelEvalError, match=r"^no such field `a` on a value of type `list`$"):
        v.select([1], "a")
    with pytest.raises(CelEvalError, match=r"^no such field `a` on a value of type `string`$"):
        v.select("a", "a")
    assert v.has({"a": None}, "a") is True
    assert v.has({"a": 1}, "b") is False


def test_cel_types_compare_by_name_and_hash_alike() -> None:
    assert v.CelType("int") == v.T_INT
    assert v.CelType("int").name == "int"
    assert v.CelType("uint") != v.T_INT
    assert v.T_INT != "int"
    assert hash(v.CelType("int")) == hash(v.T_INT)
    assert {v.T_INT: 1}[v.CelType("int")] == 1
    assert v.CelType("string") not in {v.T_INT}
    assert repr(v.T_TIMESTAMP) == "google.protobuf.Timestamp"


def test_a_uint_prints_with_its_suffix() -> None:
    assert repr(CelUint(5)) == "5u"
    assert str(CelUint(0)) == "0u"
    _check(_run("y[x]", {"x": CelUint(5), "y": {1: 2}}), Err("no such key: `5u`"))


def test_now_is_the_activation_time_or_the_utc_clock() -> None:
    before = datetime.now(UTC)
    got = v.now_of({})
    after = datetime.now(UTC)
    assert got.tzinfo is UTC and before <= got <= after
    assert v.now_of({"now": TS}) is TS
    with pytest.raises(CelEvalError, match=r"^activation `now` is not a timestamp$"):
        v.now_of({"now": "2020-01-01T00:00:00Z"})


# -- more exact values and errors ------------------------------------------------------------

T0 = "timestamp('1970-01-01T00:00:00Z')"
TMAX = "timestamp('9999-12-31T23:59:59Z')"
TMIN = "timestamp('0001-01-01T00:00:00Z')"
D1 = "duration('1s')"


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("(-9223372036854775807 - 1) + 0", -(2**63)),
        ("(-9223372036854775807 - 1) - 1", Err("integer overflow")),
        ("9223372036854775806 + 1", I64),
        ("9223372036854775807 * 2", Err("integer overflow")),
        (f"{TMAX} + {D1}", Err("timestamp overflow")),
        (f"{D1} + {TMAX}", Err("timestamp overflow")),
        (f"{TMIN} - {D1}", Err("timestamp overflow")),
        # a timestamp difference fits int64 nanoseconds: 106751 days, not 106752
        (f"timestamp('2262-04-11T00:00:00Z') - {T0}", timedelta(days=106_751)),
        (f"timestamp('2262-04-12T00:00:00Z') - {T0}", Err("duration out of range")),
        (f"{T0} - timestamp('2262-04-12T00:00:00Z')", Err("duration out of range")),
        (f"{T0} - timestamp('1677-09-22T00:00:00Z')", timedelta(days=106_751)),
        (f"{D1} + 1", Err(OVERLOAD.format("_+_", "google.protobuf.Duration, int"))),
        (f"1 + {D1}", Err(OVERLOAD.format("_+_", "int, google.protobuf.Duration"))),
        (f"{T0} + 1", Err(OVERLOAD.format("_+_", "google.protobuf.Timestamp, int"))),
        (f"1 + {T0}", Err(OVERLOAD.format("_+_", "int, google.protobuf.Timestamp"))),
        (f"{D1} + {D1}", timedelta(seconds=2)),
        (f"{D1} - 1", Err(OVERLOAD.format("_-_", "google.protobuf.Duration, int"))),
        (f"{T0} - 1", Err(OVERLOAD.format("_-_", "google.protobuf.Timestamp, int"))),
        (f"1 - {T0}", Err(OVERLOAD.format("_-_", "int, google.protobuf.Timestamp"))),
        (
            f"{D1} - {T0}",
            Err(OVERLOAD.format("_-_", "google.protobuf.Duration, google.protobuf.Timestamp")),
        ),
        ("[1] + 'ab'", Err(OVERLOAD.format("_+_", "list, string"))),
        ("'ab' + [1]", Err(OVERLOAD.format("_+_", "string, list"))),
        ("[1] + 1", Err(OVERLOAD.format("_+_", "list, int"))),
        ("{'a': 1} + {'b': 2}", Err(OVERLOAD.format("_+_", "map, map"))),
        ("'a' + 1", Err(OVERLOAD.format("_+_", "string, int"))),
        ("1 * 'a'", Err(OVERLOAD.format("_*_", "int, string"))),
        ("1 * 1.0", Err(OVERLOAD.format("_*_", "int, double"))),
        ("'a' - 1", Err(OVERLOAD.format("_-_", "string, int"))),
        ("[1][1.5]", Err("invalid list index: `1.5`")),
        ("[1][-1]", Err("index out of range: -1")),
        ("[1][1]", Err("index out of range: 1")),
        ("[1][null]", Err(OVERLOAD.format("_[_]", "list, null_type"))),
        ("[1][true]", Err(OVERLOAD.format("_[_]", "list, bool"))),
        ("1[0]", Err(OVERLOAD.format("_[_]", "int, int"))),
        ("{'a': 1}['b']", Err("no such key: `b`")),
        ("true && 1", Err(OVERLOAD.format("_&&_", "int"))),
        ("1 && true", Err(OVERLOAD.format("_&&_", "int"))),
        ("1 || false", Err(OVERLOAD.format("_||_", "int"))),
        ("false || 'a'", Err(OVERLOAD.format("_||_", "string"))),
        ("1 == [1]", False),
        ("[1] == 1", False),
        ("{'a': 1} == 1", False),
        ("1 == {'a': 1}", False),
        ("true == 1", False),
        ("1 == true", False),
        ("true == true", True),
        (f"{T0} == 0", False),
        (f"0 == {T0}", False),
    ],
)
def test_exact_results_of_the_runtime(src: str, want: Any) -> None:
    _check(_run(src, {}), want)
    # the same with every operand read from the activation where there are two
    for op in (" + ", " - ", " * ", " == "):
        if op in src and src.count(op) == 1 and "(" not in src.split(op)[0][:1]:
            left, right = src.split(op)
            if left.startswith(("timestamp", "duration")) or right.startswith(
                ("timestamp", "duration")
            ):
                continue
            x = _run(left, {})
            y = _run(right, {})
            if not isinstance(x, Err) and not isinstance(y, Err):
                _check(_run(f"x{op}y", {"x": x, "y": y}), want)


class _Items(list):  # type: ignore[type-arg]
    """A list subclass, as a caller's library may hand over."""


class _Doc(dict):  # type: ignore[type-arg]
    """A dict subclass, as a caller's library may hand over."""


@pytest.mark.parametrize(
    ("src", "act", "want"),
    [
        ("x == y", {"x": (1,), "y": [1]}, True),
        ("x == y", {"x": [1], "y": (1,)}, True),
        ("x == y", {"x": (1,), "y": (2,)}, False),
        ("x == y", {"x": (1,), "y": [1, 2]}, False),
        ("x == y", {"x": (1,), "y": 1}, False),
        ("x == y", {"x": 1, "y": (1,)}, False),
        ("x == y", {"x": _Doc(a=1), "y": {"a": 1}}, True),
        ("x == y", {"x": {"a": 1}, "y": _Doc(a=2)}, False),
        ("x == y", {"x": _Doc(a=1), "y": 1}, False),
        ("x == y", {"x": 1, "y": _Doc(a=1)}, False),
        ("x == y", {"x": {"a": 1}, "y": "a"}, False),
        ("x == y", {"x": _Stamp(2020, 1, 1, tzinfo=UTC), "y": TS}, True),
        ("x == y", {"x": TS, "y": _Stamp(2020, 1, 1, tzinfo=UTC)}, True),
        ("x == y", {"x": _Stamp(2021, 1, 1, tzinfo=UTC), "y": TS}, False),
        ("x != y", {"x": _Stamp(2020, 1, 1, tzinfo=UTC), "y": TS}, False),
        ("x == y", {"x": TS, "y": "2020-01-01T00:00:00Z"}, False),
        ("x + y", {"x": (1,), "y": [2]}, [1, 2]),
        ("x + y", {"x": (1,), "y": (2,)}, [1, 2]),
        ("x + y", {"x": [1], "y": "ab"}, Err(OVERLOAD.format("_+_", "list, string"))),
        ("x + y", {"x": "ab", "y": (1,)}, Err(OVERLOAD.format("_+_", "string, list"))),
        ("x + y", {"x": (1,), "y": 1}, Err(OVERLOAD.format("_+_", "list, int"))),
        ("has(x.a)", {"x": _Doc(a=1)}, True),
        ("has(x.b)", {"x": _Doc(a=1)}, False),
        ("has(x.a)", {"x": ["a"]}, Err("has() applied to a value of type `list`, want a map")),
        ("has(x.a)", {"x": "a"}, Err("has() applied to a value of type `string`, want a map")),
        ("x['a']", {"x": _Doc(a=1)}, 1),
        ("x[y]", {"x": _Doc(a=1), "y": "a"}, 1),
        ("x[y]", {"x": _Doc(a=1), "y": "b"}, Err("no such key: `b`")),
        ("x[y]", {"x": "abc", "y": 0}, Err(OVERLOAD.format("_[_]", "string, int"))),
        ("x[y]", {"x": [1], "y": "a"}, Err(OVERLOAD.format("_[_]", "list, string"))),
        ("x[y]", {"x": (1, 2), "y": CelUint(1)}, 2),
        ("y in x", {"x": _Doc(a=1), "y": "a"}, True),
        ("y in x", {"x": (1, 2), "y": 2}, True),
        ("type(x)", {"x": {1, 2}}, Err("unsupported value of Python type `set`")),
        ("x + 1", {"x": {1}}, Err(OVERLOAD.format("_+_", "set, int"))),
        ("y in x", {"x": "abc", "y": "a"}, Err(OVERLOAD.format("@in", "string, string"))),
        ("y in x", {"x": 1, "y": 1}, Err(OVERLOAD.format("@in", "int, int"))),
        ("y in x", {"x": ["a", "b"], "y": "b"}, True),
        ("y in x", {"x": (1, 2), "y": True}, False),
        ("y in x", {"x": [1, 2], "y": True}, False),
        ("y in x", {"x": _Items([1, "a"]), "y": 1}, True),
        ("y in x", {"x": _Items([1, "a"]), "y": "a"}, True),
        ("y in x", {"x": _Items([1, "a"]), "y": 1.0}, True),
        ("y in x", {"x": _Items([1, "a"]), "y": 2}, False),
        ("y in x", {"x": _Items([1]), "y": True}, False),
        ("type(x) == map", {"x": _Doc()}, True),
    ],
)
def test_exact_results_on_the_values_callers_pass(src: str, act: dict[str, Any], want: Any) -> None:
    _check(_run(src, act), want)

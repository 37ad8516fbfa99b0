"""Work outside comprehensions is charged to the evaluation's budget and checks its stop time.

Before, only comprehension bodies and RE2 scans were charged: `a == b || a == b || ...` over two
request lists of 9,000 strings ran every comparison (seven such rules were ~7 s of one
resource's decision) with nothing to stop it at the call's deadline or bound its total. Now
`==`/`!=` of lists and maps, `in` of a list, `+` and library calls (conversions included) are
charged wherever they are, when an operand is a list, a map or a long string; the budget is
the one comprehensions draw on, made on the evaluation's first charge, so an ordinary condition
over small values builds none and reads no clock.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.bundle.load import compile_files
from pdp.cel import CelEnv, Deadline, compile_cel
from pdp.cel._budget import STOP_AT, Interrupted
from pdp.engine import DeadlineExceeded, Engine
from pdp.errors import CelEvalError
from pdp.model.decision import ALLOW
from pdp.model.request import parse_check_request

CHARGED = "10 list elements or 100 characters built or scanned count as one"
REPEAT = 200  # each costs ~1,000 iterations or more over the large values below

# name: (one operation, the operator that chains REPEAT of them so that each one runs)
OPERATIONS: dict[str, tuple[str, str]] = {
    "list equality": ("a == b", "||"),
    "list inequality": ("a != b", "&&"),
    "map equality": ("m == n", "||"),
    "list membership": ("'zz' in a", "||"),
    "list concatenation": ("(a + b).size() == 0", "||"),
    "string concatenation": ("(s + s).size() == 0", "||"),
    "join": ("a.join(',').size() == 0", "||"),
    "replace": ("s.replace('x', 'y').size() == 0", "||"),
    "split": ("s.split('a').size() == 0", "||"),
    "set helper": ("a.containsAny(['zz'])", "||"),
    "conversion": ("double(digits) == 0.0", "||"),
    "a variable used many times": ("V.same", "||"),
    # Comparisons of strings and bytes and map lookups cost their length once it is long.
    "string ordering across widths": ("w < s", "||"),
    "string ordering": ("s >= t", "&&"),
    "string equality": ("s == t", "&&"),
    "string inequality": ("s != t", "||"),
    "bytes ordering": ("y < z", "||"),
    "map lookup": ("big[t] == 2", "||"),
    "map membership": ("!(t in big)", "||"),
    "string in a short list": ("!(t in [s])", "||"),
}
NAMES = ["a", "b", "m", "n", "s", "digits", "w", "t", "y", "z", "big"]
ENV = CelEnv(names=NAMES, variables={"same": "a == b"})


def _large() -> dict[str, Any]:
    a = [f"a{i}" for i in range(9000)]
    return {
        "a": a,
        "b": [*a[:-1], "b"],  # differs in the last
        "m": {k: 1 for k in a},
        "n": {**{k: 1 for k in a}, a[-1]: 2},
        "s": "a" * 100_000,
        "digits": "1" * 100_000,
        # Equal to `s` up to its last character, stored 4 bytes wide: `<` compares them
        # character by character (~0.1 ms at 64 Ki characters).
        "w": "a" * 99_999 + "\U0001f600",
        "t": "a" * 99_999 + "a",  # equal to `s`, another string: compared in full
        "y": b"a" * 100_000,
        "z": b"a" * 99_999 + b"a",
        "big": {"a" * 100_000: 1},
    }


def _small() -> dict[str, Any]:
    return {
        "a": ["a0", "a1"],
        "b": ["a0", "b"],
        "m": {"k": 1},
        "n": {"k": 2},
        "s": "abc",
        "digits": "1",
        "w": "ab",
        "t": "abc",
        "y": b"ab",
        "z": b"ab",
        "big": {"abc": 1},
    }


def _chain(name: str, n: int) -> str:
    op, joiner = OPERATIONS[name]
    return f" {joiner} ".join([op] * n)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_an_operation_over_large_values_repeated_runs_out_of_budget(name: str) -> None:
    """REPEAT copies over request-sized values cost more than one evaluation's budget: an
    error (a deny in a deny rule, a non-match in an allow rule), not all their work."""
    with pytest.raises(CelEvalError, match=CHARGED):
        compile_cel(_chain(name, REPEAT), ENV)(_large())


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_an_operation_over_large_values_checks_the_stop_time(name: str) -> None:
    """One such operation, outside any comprehension, stops a call whose stop time passed."""
    act = {**_large(), STOP_AT: Deadline(time.monotonic() - 1.0)}
    with pytest.raises(Interrupted):
        compile_cel(_chain(name, 1), ENV)(act)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_the_same_operations_over_small_values_are_not_charged(name: str) -> None:
    """Over small values nothing is charged, so nothing reads the clock: under a stop time long
    passed the condition still evaluates, and REPEAT copies stay within any budget."""
    act = {**_small(), STOP_AT: Deadline(time.monotonic() - 1.0)}
    fn = compile_cel(_chain(name, REPEAT), ENV)
    assert fn(act) == fn(_small())
    assert "_budget = None" in fn.python_source  # made only by a charge


def test_a_long_string_in_a_list_is_charged_by_the_characters_compared() -> None:
    """`x in l` in a comprehension compares a long `x` with every element of its length
    character by character: charged by those characters, not by the list's length alone
    (100 iterations of 1,000 strings of 5,000 characters were 5 x 10^8 characters compared
    for 10,100 iterations charged)."""
    long = "y" * 4999 + "z"
    items = ["y" * 5000] * 1000
    env = CelEnv(names=["keys", "items", "long"])
    fn = compile_cel("keys.all(k, !(long in items))", env)
    with pytest.raises(CelEvalError, match=CHARGED):
        fn({"keys": list(range(100)), "items": items, "long": long})
    # Elements of other lengths differ at once: only the list's length is charged.
    assert fn({"keys": list(range(100)), "items": ["y"] * 1000, "long": long}) is True


RULES = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: scroll}
spec:
  resource: scroll
  actions:
    read: {}
  rules:
    - id: compare
      actions: [read]
      effect: allow
      roles: ["*"]
      condition: '%s'
    - id: last
      actions: [read]
      effect: allow
      roles: ["*"]
"""


def test_a_condition_of_list_comparisons_past_the_deadline_stops_the_decision() -> None:
    """The workload tests/security/test_deadline_one_resource.py used as "uninterruptible":
    600 comparisons of two request lists of 9,000 strings in one condition. A rule's list
    comparison now checks the stop time: stopped inside the resource (0 of 1 decided)."""
    condition = " || ".join(["R.attr.a == R.attr.b"] * 600)
    engine = Engine(compile_files({"scroll.yaml": (RULES % condition).encode()}).policy_set)
    large = _large()
    request = parse_check_request(
        {
            "principal": {"id": "p", "tenant": "acme", "roles": ["user"]},
            "resources": [
                {
                    "kind": "scroll",
                    "id": "s-1",
                    "tenant": "acme",
                    "attr": {"a": large["a"], "b": large["b"]},
                    "actions": ["read"],
                }
            ],
        }
    )
    with pytest.raises(DeadlineExceeded) as stopped:
        engine.check(request, stop_at=time.monotonic() - 1.0)
    assert (stopped.value.done, stopped.value.total) == (0, 1)
    # Without a deadline the condition runs out of budget (a non-match) and the last rule
    # allows, after ~75 of the 600 comparisons.
    assert engine.check(request).results[0].actions["read"].effect == ALLOW


# A caller picks both strings: equal up to some point, in any widths, of any lengths about the
# charging threshold (100 characters).
_CHARS = st.sampled_from(["a", "b", "\u00e9", "\u4e00", "\U0001f600"])
_PREFIX = st.integers(0, 160).map(lambda n: "a" * n)
_TEXT = st.builds(lambda p, t: p + t, _PREFIX, st.text(_CHARS, max_size=60))
_STR_OPS = {
    "x < y": lambda x, y: x < y,
    "x <= y": lambda x, y: x <= y,
    "x > y": lambda x, y: x > y,
    "x >= y": lambda x, y: x >= y,
    "x == y": lambda x, y: x == y,
    "x != y": lambda x, y: x != y,
    "{y: 1}[x] == 1": lambda x, y: True if x == y else _MISSING,
    "x in {y: 1}": lambda x, y: x == y,
}
_MISSING = "no such key"


def _outcome(fn: Any, act: dict[str, Any]) -> Any:
    try:
        return fn(act)
    except CelEvalError as exc:
        assert _MISSING in str(exc)
        return _MISSING


_STR_FNS = {src: compile_cel(src, CelEnv(names=["x", "y"])) for src in _STR_OPS}
_TYPED_FNS = {
    src: compile_cel(
        src.replace("x", "string(x)").replace("y", "string(y)"), CelEnv(names=["x", "y"])
    )
    for src in _STR_OPS
    if "{" not in src
}


def _charged(src: str, x: str, y: str) -> bool:
    """Whether `src` over x and y costs enough to be charged: an ordering by the shorter
    string, an equality when both have one length, a lookup by the key's length (the map's
    key is a literal of the caller's `y`: a long one is as long as the caller likes) when it
    compares the key, on a hit, or copies it into a miss's error (`in` misses cost nothing)."""
    if src.startswith("{"):
        return len(x) >= 100
    if "{" in src:
        return len(x) >= 100 and x == y
    if "=" in src and "<" not in src and ">" not in src:
        return len(x) == len(y) >= 100
    return min(len(x), len(y)) >= 100


@settings(max_examples=150, deadline=None)
@given(x=_TEXT, y=_TEXT, src=st.sampled_from(sorted(_STR_OPS)))
def test_string_comparisons_and_lookups_are_charged_exactly_when_long(
    x: str, y: str, src: str
) -> None:
    """Whatever strings a caller sends, a comparison or lookup gives Python's answer, and
    checks the stop time (is charged) exactly when its work grows past the threshold: a
    stop time long passed stops it then, and only then (short ones stay on the fast path)."""
    want = _STR_OPS[src](x, y)
    fn = _STR_FNS[src]
    assert _outcome(fn, {"x": x, "y": y}) is want
    passed = {"x": x, "y": y, STOP_AT: Deadline(time.monotonic() - 1.0)}
    if _charged(src, x, y):
        with pytest.raises(Interrupted):
            fn(passed)
    else:
        assert _outcome(fn, passed) is want
    # The same over operands the compiler knows are strings (`string(x)`, itself charged
    # when its argument is long), which take other fast paths.
    typed = _TYPED_FNS.get(src)
    if typed is not None:
        assert typed({"x": x, "y": y}) is want
        if max(len(x), len(y)) < 100:
            assert typed(passed) is want

"""Red-team the CEL compiler from the policy author's side: conditions that the validator
passes must evaluate as the CEL spec says (the reference engine, `cel-expr-python`, is the
oracle where it is installed), and no condition may stall the compiler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pdp.cel import CelEnv, compile_cel
from pdp.errors import CelEvalError

POLICY = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: doc}}
spec:
  resource: document
  tenancy: global
  actions: {{read: {{}}}}
  rules:
    - id: hostile
      actions: [read]
      effect: allow
      condition: {condition}
"""

REQUEST = {
    "principal": {"id": "alice", "tenant": "acme", "roles": ["user"]},
    "resources": [{"kind": "document", "id": "d1", "actions": ["read"]}],
}


def pdp(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(tmp_path: Path, condition: str) -> dict:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "doc.yaml").write_text(POLICY.format(condition=condition))
    (tmp_path / "req.json").write_text(json.dumps(REQUEST))
    result = pdp(
        "check", "--policies", str(tmp_path / "policies"),
        "--request", str(tmp_path / "req.json"), "--output", "json",
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def read_effect(response: dict) -> str:
    return response["results"][0]["actions"]["read"]["effect"]


# --- a map literal with the keys `true` and `1` ------------------------------------------------


def test_map_literal_with_keys_true_and_1_does_not_merge_them(tmp_path: Path) -> None:
    # CEL: two entries, `[true]` is "open", so the rule does not match. A Python dict holds
    # `True` and `1` as one key: the later value replaced the earlier and the rule allowed.
    response = check(tmp_path, """'{true: "open", 1: "closed"}[true] == "closed"'""")
    decision = response["results"][0]["actions"]["read"]
    assert decision["effect"] == "deny", decision


@pytest.mark.parametrize(
    "source", ["{1: 'a', true: 'b'}", "{true: 'a', 1: 'b'}", "{0: 'a', false: 'b'}"]
)
def test_map_literal_mixing_a_bool_and_an_equal_number_key_is_an_error(source: str) -> None:
    fn = compile_cel(source, CelEnv())
    with pytest.raises(CelEvalError, match="cannot hold both the keys"):
        fn({})


def test_map_literal_with_bool_and_other_number_keys_keeps_both() -> None:
    assert compile_cel("{true: 'a', 2: 'b', false: 'c'}", CelEnv())({}) == {
        True: "a",
        2: "b",
        False: "c",
    }


# --- int64 overflow of `%` ---------------------------------------------------------------------


def test_int64_min_modulo_minus_one_overflows_like_the_reference() -> None:
    # -2^63 % -1 is 0 in Python; the reference engines raise "integer overflow" (the quotient
    # overflows). A rule `... % -1 == 0` must not match where the spec says error.
    with pytest.raises(CelEvalError, match="overflow"):
        compile_cel("-9223372036854775808 % -1", CelEnv())({})
    with pytest.raises(CelEvalError, match="overflow"):
        compile_cel("x % -1", CelEnv(names=["x"]))({"x": -(2**63)})
    assert compile_cel("x % -1", CelEnv(names=["x"]))({"x": -(2**63) + 1}) == 0


@pytest.mark.parametrize(
    "source",
    [
        "-9223372036854775808 % -1",
        "-9223372036854775807 % -1",
        "-9223372036854775808 % 7",
        "9223372036854775807 % -2",
        "{true: 'a', 2: 'b'}[true]",
        "{1: 'a', 2u: 'b'}[2]",
    ],
)
def test_edge_cases_agree_with_the_reference_engine(source: str) -> None:
    cel = pytest.importorskip("cel_expr_python.cel")
    ref = cel.NewEnv().compile(source, disable_check=True).eval()
    ref_error = ref.type().name() == "ERROR"
    try:
        ours = compile_cel(source, CelEnv())({})
    except CelEvalError:
        assert ref_error, f"we fail, the reference gives {ref.value()!r}"
        return
    assert not ref_error, f"we give {ours!r}, the reference fails: {ref!r}"
    assert ours == ref.value()


# --- a compiler stall: variables that double ---------------------------------------------------


def test_doubling_variables_are_a_clear_error_not_a_stall(tmp_path: Path) -> None:
    # Each variable inlines the previous one twice: 40 levels is 2^40 copies of `P.id`, which
    # the compiler (inlining variables as code) would have taken days to generate; `pdp
    # validate`, `pdp bundle build` and a server loading the bundle all stalled on it.
    levels = 40
    variables = ["    v0: P.id"] + [f"    v{i}: V.v{i - 1} + V.v{i - 1}" for i in range(1, levels)]
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "defs.yaml").write_text(
        "apiVersion: pdp/v1\nkind: Definitions\nmetadata: {id: defs}\nspec:\n  variables:\n"
        + "\n".join(variables)
        + "\n"
    )
    (policies / "doc.yaml").write_text(
        POLICY.format(condition=f'V.v{levels - 1} == "x"').replace(
            "  tenancy: global\n", "  tenancy: global\n  imports: [defs]\n"
        )
    )
    result = pdp("validate", str(policies))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout + result.stderr
    assert "defs.yaml:" in out and "expression too large" in out


# --- comprehension budget and built-value size ---------------------------------------------------

NESTED = 'P.attr.groups.exists(g, R.attr.acl.exists(a, a == g + "-x"))'


def test_nested_comprehensions_over_request_lists_stop_at_the_budget(tmp_path: Path) -> None:
    # 1,000 x 1,000 iterations (10^4 x 10^4 fit in a request: seconds of CPU per check). The
    # deny rule's condition stops at the budget: an error, so the deny applies (fail closed).
    policy = POLICY.format(condition="'true'") + (
        f"    - id: nested\n      actions: [read]\n      effect: deny\n"
        f"      reason: nested\n      condition: '{NESTED}'\n"
    )
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "doc.yaml").write_text(policy)
    request = json.loads(json.dumps(REQUEST))
    request["principal"]["attr"] = {"groups": [f"g{i}" for i in range(1000)]}
    request["resources"][0]["attr"] = {"acl": [f"a{i}" for i in range(1000)]}
    (tmp_path / "req.json").write_text(json.dumps(request))
    result = pdp(
        "check", "--policies", str(tmp_path / "policies"),
        "--request", str(tmp_path / "req.json"), "--output", "json",
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    decision = json.loads(result.stdout)["results"][0]["actions"]["read"]
    assert decision["effect"] == "deny", decision
    assert "condition_error" in decision["reasons"], decision


def test_comprehensions_within_the_budget_still_decide() -> None:
    fn = compile_cel(NESTED, CelEnv())
    act = {
        "principal": {"attr": {"groups": [f"g{i}" for i in range(100)]}},
        "resource": {"attr": {"acl": [f"a{i}" for i in range(100)] + ["g7-x"]}},
    }
    assert fn(act) is True


def test_a_hostile_macro_nest_is_an_error_not_a_stall() -> None:
    # 10^9 iterations of constant lists: a minute of CPU without the budget, and each further
    # level ten times more.
    digits = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
    source = "true"
    for name in "abcdefghi":
        source = f"{digits}.all({name}, {source})"
    with pytest.raises(CelEvalError, match="work more than 100000 iterations"):
        compile_cel(source, CelEnv())({})


def doubling(levels: int) -> str:
    """`x` doubled `levels` times by cel.bind, and the size of the result."""
    return (
        "cel.bind(a0, x + x, "
        + "".join(f"cel.bind(a{i}, a{i - 1} + a{i - 1}, " for i in range(1, levels))
        + f"a{levels - 1}.size()"
        + ")" * levels
    )


@pytest.mark.parametrize(
    ("source", "x"),
    [
        (doubling(21), "y"),  # 2^21 characters from one
        ("x.replace('', x).replace('', x).size()", "y" * 1100),
        ("[x, x, x, x].join('').size()", "y" * 300_000),
        ("(b'y' + bytes(x) + bytes(x)).size()", "y" * 600_000),
        ("(x + x).size()", ["y"] * 600_000),
    ],
)
def test_building_a_value_past_the_size_limit_is_an_error(source: str, x: object) -> None:
    # Building a large value outside a comprehension is charged to the evaluation's budget
    # too, before it is built: the budget may refuse it before the size limit does.
    with pytest.raises(CelEvalError, match=r"over the limit|work more than 100000 iterations"):
        compile_cel(source, CelEnv(names=["x"]))({"x": x})


def test_building_values_within_the_size_limit_still_works() -> None:
    assert compile_cel(doubling(11), CelEnv(names=["x"]))({"x": "y"}) == 2**11
    fn = compile_cel("x.replace('', '-').size() + [x, x].join(x).size()", CelEnv(names=["x"]))
    assert fn({"x": "y" * 1000}) == 2001 + 3000

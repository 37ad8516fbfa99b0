"""Map keys `1`, `1u` and `1.0` against Google's reference engine (cel-expr-python).

Lookups: CEL's heterogeneous equality finds `1` under `1u` and `1.0`, and the other way round,
as the reference does. Literals: the reference keeps `{1: "a", 1u: "b"}` as a map of two
entries (a lookup prefers the key of its own type); a Python dict cannot hold both (`1u` is an
int subclass, equal to `1`), so pdp refuses such a literal with an evaluation error rather than
keep one value, and a condition building one fails closed. Double keys are an error in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pdp.cel import CelEnv, compile_cel
from pdp.engine import Engine, compile_policy_set
from pdp.errors import CelCompileError, CelEvalError
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

cel = pytest.importorskip("cel_expr_python.cel")

NAMES = ("x", "d")
DATA = {"x": 1, "d": 1.0}
REF = cel.NewEnv(variables={n: cel.Type.DYN for n in NAMES})
OURS = CelEnv(names=NAMES)


def ref_eval(src: str) -> tuple[str, Any]:
    """("value", v) or ("error", text): the reference returns errors as values or raises."""
    try:
        v = REF.compile(src).eval(data=DATA)
    except Exception as exc:
        return "error", str(exc)
    if v.type().name() == "ERROR":
        return "error", str(v)
    return "value", v.value()


def ours_eval(src: str) -> tuple[str, Any]:
    try:
        return "value", compile_cel(src, OURS)(DATA)
    except (CelCompileError, CelEvalError) as exc:
        return "error", str(exc)


@pytest.mark.parametrize(
    "src",
    [
        'dyn({1: "a"})[1u]',
        'dyn({1: "a"})[1.0]',
        'dyn({1u: "a"})[1]',
        'dyn({1u: "a"})[1.0]',
        'dyn({1: "a"})[d]',
        'dyn({1: "a"})[1.5]',
        'dyn({1: "a"})[2.0]',
        'dyn({-1: "a"})[18446744073709551615u]',
        '{1: "a", 2u: "b"}[2]',
        '{1: "a", 2u: "b"}[1u]',
        '1u in dyn({1: "a"})',
        '1.0 in dyn({1: "a"})',
        '1.5 in dyn({1: "a"})',
        'dyn({1: "a"}) == dyn({1u: "a"})',
        'dyn({1: "a"}) == dyn({1u: "b"})',
        'size({1: "a", 2u: "b"})',
    ],
)
def test_lookups_and_equality_agree_with_the_reference(src: str) -> None:
    ref, ours = ref_eval(src), ours_eval(src)
    assert ref[0] == ours[0], (src, ref, ours)
    if ref[0] == "value":
        assert ours[1] == ref[1] and type(ours[1]) is type(ref[1]), (src, ref, ours)


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ('{1: "a", 1u: "b"}', "repeated key in map literal: `1u`"),
        ('{1u: "a", 1: "b"}', "repeated key in map literal: `1`"),
        ('{x: "a", 1u: "b"}', "repeated key in map literal: `1u`"),
        ('size({1: "a", 1u: "b"}) == 2', "repeated key in map literal: `1u`"),
        ('{1: "a", 1u: "b"}[1u] == "b"', "repeated key in map literal: `1u`"),
        ("{true: 1, 1: 2}", "cannot hold both the keys `1` and `true`"),
        ('{x: "a", x: "b"}', "repeated key in map literal: `1`"),
    ],
)
def test_a_literal_with_keys_equal_as_numbers_is_an_error(src: str, message: str) -> None:
    """The reference makes two entries of them; pdp cannot, and refuses rather than drop one."""
    kind, value = ours_eval(src)
    assert kind == "error" and message in value, (src, value)


@pytest.mark.parametrize("src", ['{1: "a", 1.0: "b"}', '{1.0: "a"}', '{x: "a", d: "b"}', "{d: 1}"])
def test_double_keys_are_an_error_in_both(src: str) -> None:
    assert ref_eval(src)[0] == "error", ref_eval(src)
    assert ours_eval(src)[0] == "error", ours_eval(src)


POLICY = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: maps}
spec:
  resource: doc
  actions:
    read: {}
    edit: {}
  rules:
    - id: two-keys
      actions: [read]
      effect: allow
      roles: ["*"]
      condition: 'size({1: "a", 1u: "b"}) == 2'
    - id: guard
      actions: [edit]
      effect: deny
      roles: ["*"]
      condition: '{1: "a", 1u: "b"}[1u] == "c"'
    - id: edit
      actions: [edit]
      effect: allow
      roles: ["*"]
"""


def test_a_condition_building_such_a_literal_fails_closed(tmp_path: Path) -> None:
    """An allow whose condition is an error does not allow; a deny rule erring denies."""
    (tmp_path / "maps.yaml").write_text(POLICY)
    engine = Engine(compile_policy_set(load_policy_dir(tmp_path)))
    response = engine.check(
        parse_check_request(
            {
                "principal": {"id": "u", "tenant": "t", "roles": ["user"]},
                "resources": [
                    {"kind": "doc", "id": "d", "tenant": "t", "actions": ["read", "edit"]}
                ],
            }
        )
    )
    actions = response.results[0].actions
    for action in ("read", "edit"):
        d = actions[action]
        assert d.effect == "deny", (action, d)
        assert "condition_error" in d.reasons, (action, d)
        assert any("repeated key in map literal" in e for e in d.errors), (action, d)

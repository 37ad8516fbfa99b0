"""A comprehension body comparing or scanning nested lists is charged for every element at every
depth, not for the top level only.

`==`, `!=`, `in` of a list and the set helpers in a body were charged one iteration per ten
elements of the *top* level. A list holding one 9,000-item list is one element there, so
`R.attr.steps.all(s, R.attr.chain == P.attr.chain)` with each chain sent as `[[0, ..., 8999]]`
compared 9,000 items per iteration for nothing: 9,000 iterations, 8 x 10^7 comparisons, 44 s
with the GIL held, within every request limit. Now `pdp.cel._macros.scan_work` counts elements
and characters at every depth, and stops counting once the budget is spent (an `all` keeps
iterating past an absorbed error, and must not recount on each).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp.cel import CelEnv, compile_cel
from pdp.client._convert import request_to_proto
from pdp.errors import CelEvalError
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

CHARGED = "10 list elements or 100 characters built or scanned count as one"

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: pipeline}
spec:
  resource: pipeline
  actions:
    run: {}
  rules:
    - id: same-chain
      actions: [run]
      effect: allow
      condition: R.attr.steps.all(s, R.attr.chain == P.attr.chain)
      reason: same-chain
"""

N = 6_000  # steps, and items in each chain: 18,000 of the request's 20,000 values
CAP_S = 15.0  # generous for the fraction of a second the budget allows; it took ~20 s


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("deep")
    (root / "pipeline.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(root, "--decision-cache", "0", "--workers", "1") as s:
        yield s


def run_check(steps: list[Any], chain: list[Any], mine: list[Any]) -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"chain": mine}}
    attr = {"steps": steps, "chain": chain}
    resource = {"kind": "pipeline", "id": "p1", "tenant": "t", "attr": attr, "actions": ["run"]}
    return request_to_proto(principal, [resource])


def test_nested_lists_compared_in_a_body_run_out_of_budget(served: Served) -> None:
    chain = [list(range(N))]
    reply = served.check(run_check(list(range(N)), chain, [list(range(N))]), timeout=CAP_S)
    decision = reply.results[0].actions["run"]
    assert decision.effect == pb.EFFECT_DENY
    assert any(CHARGED in e for e in decision.errors), decision
    # Ordinary sizes are decided by the rule.
    reply = served.check(run_check([1, 2, 3], [["a", "b"]], [["a", "b"]]), timeout=CAP_S)
    decision = reply.results[0].actions["run"]
    assert decision.effect == pb.EFFECT_ALLOW and list(decision.reasons) == ["same-chain"]


def ev(expr: str, **names: Any) -> Any:
    return compile_cel(expr, CelEnv(names=list(names)))(names)


@pytest.mark.parametrize(
    "expr",
    [
        "items.all(x, big == big)",
        "items.all(x, big != [[1]])",
        "items.exists(x, other in big)",
        "items.exists(x, big.containsAny([x]))",
        "items.all(x, hasAll(big, big))",
        "items.all(x, {'k': big} == {'k': big})",
    ],
)
def test_every_deep_scan_in_a_body_is_charged(expr: str) -> None:
    inner = list(range(N))
    with pytest.raises(CelEvalError, match=CHARGED):
        ev(expr, items=list(range(N)), big=[inner], other=[*inner[:-1], -1])


def test_long_strings_inside_lists_are_charged_by_their_characters() -> None:
    texts = ["a" * 60_000] * 2
    with pytest.raises(CelEvalError, match=CHARGED):
        ev("items.all(x, texts == copy)", items=list(range(N)), texts=texts, copy=list(texts))


def test_ordinary_bodies_decide_as_before() -> None:
    groups = [f"g{k}" for k in range(200)]
    assert ev("items.exists(x, [x] in pairs)", items=[1, 2], pairs=[[2], [3]]) is True
    assert ev("items.all(x, groups == groups)", items=list(range(100)), groups=groups) is True
    assert ev("items.exists(x, groups.containsAny([x]))", items=groups[-3:], groups=groups)

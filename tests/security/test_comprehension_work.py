"""A comprehension's body is charged for its work, not only counted by its iterations.

CEL caps one evaluation at 100,000 iterations, but before this an iteration could cost as much
as the request allowed: over one request list of 20,000 strings, `l.exists(x, x + "b" in l)`
took 20,000 iterations and 4 x 10^8 comparisons (seconds with the GIL held, every other call of
the worker waiting), and `l.map(x, l + l)` kept 20,000 lists of 40,000 items (gigabytes). Now
every ten list elements or hundred characters a body builds or scans cost an iteration
(`pdp.cel._macros`). These tests send such lists to a real server, whose answer must be a deny
carrying the error, and check that bodies on ordinary values decide as before.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.cel import CelEnv, compile_cel
from pdp.client._convert import request_to_proto
from pdp.errors import CelEvalError
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

CHARGED = "10 list elements or 100 characters built or scanned count as one"

# Bodies whose cost grows with a request value, each with what it computes in Python. Over
# N = 5,000 items each would do 2.5 x 10^7 element operations or more without the charge.
BODIES: dict[str, tuple[str, Callable[[list[str], str], Any]]] = {
    "list scan": (
        'items.exists(x, x + "b" in items)',
        lambda items, text: any(x + "b" in items for x in items),
    ),
    "list concatenation kept": (
        "items.map(x, items + items).size() == size(items)",
        lambda items, text: True,
    ),
    "list concatenation scanned": (
        'items.exists(x, x + "b" in items + items)',
        lambda items, text: any(x + "b" in items for x in items),
    ),
    "list equality": ("items.all(x, items == items)", lambda items, text: True),
    "library call over a list": (
        "items.exists(x, items.containsAny([x + 'b']))",
        lambda items, text: any(x + "b" in items for x in items),
    ),
    "regex over a long string": (
        'items.exists(x, text.matches("b$"))',
        lambda items, text: bool(items) and text.endswith("b"),
    ),
    "string building": (
        "items.exists(x, (text + text).size() == 0)",
        lambda items, text: bool(items) and text == "",
    ),
}
N = 5_000


def evaluate(expr: str, items: list[str], text: str) -> Any:
    return compile_cel(expr, CelEnv(names=["items", "text"]))({"items": items, "text": text})


@pytest.mark.parametrize("name", sorted(BODIES))
def test_a_body_over_large_request_values_runs_out_of_budget(name: str) -> None:
    expr, _ = BODIES[name]
    items = [f"i{k}" for k in range(N)]
    with pytest.raises(CelEvalError, match=CHARGED):
        evaluate(expr, items, "a" * 50_000)


@pytest.mark.parametrize("name", sorted(BODIES))
@settings(max_examples=40, deadline=None)
@given(
    items=st.lists(st.text(alphabet="abi0", max_size=3), max_size=30),
    text=st.text(alphabet="ab", max_size=300),
)
def test_a_body_over_ordinary_values_decides_as_python_does(
    name: str, items: list[str], text: str
) -> None:
    expr, oracle = BODIES[name]
    assert evaluate(expr, items, text) == oracle(items, text)


def test_ten_items_cost_one_iteration() -> None:
    """The charge is the documented rate: 100,000 iterations' worth, ten elements each."""
    # 1,000 iterations, each scanning a list of 1,000 (100 iterations' worth): 101,000 > 100,000.
    items = [f"i{k}" for k in range(1_000)]
    with pytest.raises(CelEvalError, match=CHARGED):
        evaluate('items.exists(x, x + "b" in items)', items, "")
    # 900 of them: 900 x 91 = 81,900, under the budget, and decided.
    assert evaluate('items.exists(x, x + "b" in items)', items[:900], "") is False


def test_constant_time_calls_are_not_charged() -> None:
    items = [f"i{k}" for k in range(20_000)]
    assert evaluate("items.all(x, size(items) == 20000 && type(items) == list)", items, "") is True


POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: shared}
spec:
  resource: folder
  actions:
    read: {}
  rules:
    - id: blocked-group
      actions: [read]
      effect: deny
      condition: principal.attr.groups.exists(g, g in resource.attr.blocked)
      reason: blocked
    - id: member
      actions: [read]
      effect: allow
      condition: principal.attr.groups.exists(g, g in resource.attr.readers)
      reason: member
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("work")
    (root / "shared.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(root, "--decision-cache", "0") as s:
        yield s


def folder_check(groups: list[str], readers: list[str], blocked: list[str]) -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"groups": groups}}
    attr = {"readers": readers, "blocked": blocked}
    resource = {"kind": "folder", "id": "f1", "tenant": "t", "attr": attr, "actions": ["read"]}
    return request_to_proto(principal, [resource])


def test_ordinary_sizes_are_decided_by_the_rules(served: Served) -> None:
    groups = [f"g{k}" for k in range(50)]
    readers = [f"g{k}" for k in range(40, 240)]
    allowed = served.check(folder_check(groups, readers, ["x"])).results[0].actions["read"]
    assert allowed.effect == pb.EFFECT_ALLOW and list(allowed.reasons) == ["member"]
    denied = served.check(folder_check(groups, readers, ["g7"])).results[0].actions["read"]
    assert denied.effect == pb.EFFECT_DENY and list(denied.reasons) == ["blocked"]


def test_a_request_sized_to_stall_the_body_is_a_deny_with_the_error(served: Served) -> None:
    # 9,000 groups against 9,000 readers (the request's 20,000 values): 8 x 10^7 comparisons
    # before the charge, and the one reader that would allow is found last.
    groups = [f"g{k}" for k in range(9_000)]
    readers = [f"r{k}" for k in range(9_000)] + ["g8999"]
    reply = served.check(folder_check(groups, readers, ["x"]), timeout=60)
    decision = reply.results[0].actions["read"]
    assert decision.effect == pb.EFFECT_DENY
    assert any(CHARGED in e for e in decision.errors), decision
    # The worker is free at once: an ordinary call is answered.
    small = served.check(folder_check(["g1"], ["g1"], []), timeout=10).results[0].actions["read"]
    assert small.effect == pb.EFFECT_ALLOW

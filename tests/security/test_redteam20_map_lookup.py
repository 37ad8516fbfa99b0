"""A number or bool looked up in a map is one hash probe, not a scan of the map's keys.

CEL's map lookup matches `1`, `1u` and `1.0` across types and never a bool with a number, and
pdp did that for a number or bool key by scanning every key of the map. A comprehension charges
a lookup as one step, so `R.attr.ids.exists(i, i in P.attr.grants)`, written for string ids,
let a caller who sent 9,000 numbers as `ids` and a `grants` map of 9,000 string keys make one
evaluation scan 8 x 10^7 keys: 6 s per action with the GIL held, within every request limit
and the iteration budget (9,000 iterations of 100,000). Map equality looked each key up the
same way, so two maps with numeric keys compared in quadratic time. Now a lookup probes the
dict once; only a 0 or 1 found (equal, in Python, to a bool) scans to tell which it found.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp.cel import CelEnv, compile_cel
from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: doc}
spec:
  resource: doc
  actions:
    read: {}
    preview: {}
    download: {}
    comment: {}
  rules:
    - id: granted
      actions: [read, preview, download, comment]
      effect: allow
      condition: R.attr.ids.exists(i, i in P.attr.grants)
      reason: granted
"""

N = 9_000
ACTIONS = ["read", "preview", "download", "comment"]
CAP_S = 15.0  # generous for milliseconds of work; the scans took 6 s per action, four actions


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("maps")
    (root / "doc.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(root, "--decision-cache", "0", "--workers", "1") as s:
        yield s


def doc_check(grants: dict[str, Any], ids: list[Any]) -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"grants": grants}}
    resource = {
        "kind": "doc",
        "id": "d1",
        "tenant": "t",
        "attr": {"ids": ids},
        "actions": ACTIONS,
    }
    return request_to_proto(principal, [resource])


def test_numbers_looked_up_in_a_large_request_map_are_decided_at_once(served: Served) -> None:
    grants: dict[str, Any] = {f"g{k}": True for k in range(N)}
    reply = served.check(doc_check(grants, list(range(N))), timeout=CAP_S)
    assert {d.effect for d in reply.results[0].actions.values()} == {pb.EFFECT_DENY}
    # The same rule still grants on a string id the map holds.
    reply = served.check(doc_check(grants, [*range(N - 1), f"g{N - 1}"]), timeout=CAP_S)
    for action in ACTIONS:
        decision = reply.results[0].actions[action]
        assert decision.effect == pb.EFFECT_ALLOW and list(decision.reasons) == ["granted"]


def ev(expr: str, **names: Any) -> Any:
    return compile_cel(expr, CelEnv(names=list(names)))(names)


def test_maps_with_numeric_keys_compare_in_linear_time() -> None:
    a = list(range(N))
    # Before: each of 9,000 keys scanned the other map (4 x 10^7 steps); now 9,000 probes.
    assert ev("a.transformMap(i, x, x) == b.transformMap(i, x, x)", a=a, b=list(a)) is True
    assert ev("a.transformMap(i, x, x) == b.transformMap(i, x, x)", a=a, b=[*a[:-1], -1]) is False


@pytest.mark.parametrize(
    ("expr", "want"),
    [
        ("1 in {1u: 'a'}", True),
        ("1.0 in {1: 'a'}", True),
        ("1.5 in {1: 'a'}", False),
        ("true in {1: 'a'}", False),
        ("1 in {true: 'a'}", False),
        ("0 in {false: 'a'}", False),
        ("false in {false: 'a'}", True),
        ("false in {0: 'a'}", False),
        ("2 in {'2': 'a'}", False),
        ("{1: 'a'}[1.0] == 'a'", True),
        ("{true: 'a', 2: 'b'}[2u] == 'b'", True),
        ("{1: 'a', 2: 'b'} == {2u: 'b', 1u: 'a'}", True),
        ("{1: 'a'} == {true: 'a'}", False),
    ],
)
def test_lookups_keep_cel_key_semantics(expr: str, want: bool) -> None:
    assert ev(expr) is want

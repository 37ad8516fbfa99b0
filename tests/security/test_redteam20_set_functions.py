"""The set helpers (`hasAll`, `hasAny`, `intersect`, `isSubset`, `containsAll`, `containsAny`)
take time linear in their two lists, and decide exactly as CEL's `in` does.

They asked CEL's `in` of every element of one list against the other: len(a) x len(b)
comparisons, outside any comprehension and so outside the iteration budget. The ordinary ABAC
rule `P.attr.groups.containsAny(R.attr.groups)` over two request lists of 9,000 numbers each
(a 200 KB request, inside every request limit) kept a real server's worker busy for 18 s with
the GIL held, every other call of that worker waiting; a batch repeats it per resource and
action. Now the scanned list is indexed once by a key equal exactly when CEL's `==` is.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.cel import CelEnv, compile_cel
from pdp.cel._values import CelUint, in_
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
    list: {}
  rules:
    - id: shared-group
      actions: [read, preview, download, comment]
      effect: allow
      condition: P.attr.groups.containsAny(R.attr.groups)
      reason: shared
    - id: all-groups
      actions: [list]
      effect: allow
      condition: isSubset(R.attr.groups, P.attr.groups) && size(intersect(P.attr.groups, R.attr.groups)) > 0
      reason: all
"""

# 9,000 + 9,000 numbers: 8 x 10^7 CEL comparisons per action before this fix, 9 to 18 s each on
# a 2-core VM, and four actions evaluate it four times. The cap is generous for a call that
# takes milliseconds now, and far short of what the old evaluation took.
N = 9_000
SHARED = ["read", "preview", "download", "comment"]
CAP_S = 15.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("sets")
    (root / "doc.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(root, "--decision-cache", "0", "--workers", "1") as s:
        yield s


def doc_check(groups: list[Any], resource_groups: list[Any], actions: list[str]) -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"groups": groups}}
    attr = {"groups": resource_groups}
    resource = {"kind": "doc", "id": "d1", "tenant": "t", "attr": attr, "actions": actions}
    return request_to_proto(principal, [resource])


def test_two_large_request_lists_are_decided_at_once(served: Served) -> None:
    groups = list(range(N))
    # Disjoint but for the last: every comparison is made before the one match.
    resource_groups = [*range(N, 2 * N - 1), N - 1]
    reply = served.check(doc_check(groups, resource_groups, SHARED), timeout=CAP_S)
    for action in SHARED:
        decision = reply.results[0].actions[action]
        assert decision.effect == pb.EFFECT_ALLOW and list(decision.reasons) == ["shared"]
    reply = served.check(doc_check(groups, resource_groups[:-1], SHARED), timeout=CAP_S)
    assert {d.effect for d in reply.results[0].actions.values()} == {pb.EFFECT_DENY}
    # isSubset and intersect scan the other way round.
    reply = served.check(doc_check(groups, resource_groups, ["list"]), timeout=CAP_S)
    assert reply.results[0].actions["list"].effect == pb.EFFECT_DENY
    subset = [*range(N // 2), N - 1]
    reply = served.check(doc_check(groups, subset, ["list"]), timeout=CAP_S)
    assert reply.results[0].actions["list"].effect == pb.EFFECT_ALLOW


# Values of every CEL kind a request or a condition can put in a list, with the pairs CEL
# treats specially: 1 == 1u == 1.0, true != 1, NaN != NaN, -0.0 == 0.0, [1] == [1.0].
scalars = st.one_of(
    st.sampled_from([0, 1, -1, 2, 0.0, -0.0, 1.0, 2.5, math.nan, True, False, None, "", "1"]),
    st.sampled_from([CelUint(0), CelUint(1), b"1", b""]),
    st.integers(-3, 3),
    st.text(alphabet="ab1", max_size=2),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "1"]), inner, max_size=2),
    ),
    max_leaves=6,
)
lists = st.lists(values, max_size=6)


def quadratic(fn: str, a: list[Any], b: list[Any]) -> Any:
    """The definitions, as CEL's `in` states them."""
    if fn == "hasAll":
        return all(in_(x, a) for x in b)
    if fn == "hasAny":
        return any(in_(x, a) for x in b)
    if fn == "isSubset":
        return all(in_(x, b) for x in a)
    return [x for x in a if in_(x, b)]


@pytest.mark.parametrize("fn", ["hasAll", "hasAny", "isSubset", "intersect"])
@settings(max_examples=300, deadline=None)
@given(a=lists, b=lists)
def test_the_index_decides_as_cel_equality_does(fn: str, a: list[Any], b: list[Any]) -> None:
    # Repeated nine times: past the 64 comparisons under which the helpers scan, not index.
    a, b = a * 9, b * 9
    got = compile_cel(f"{fn}(a, b)", CelEnv(names=["a", "b"]))({"a": a, "b": b})
    want = quadratic(fn, a, b)
    if fn == "intersect":
        assert len(got) == len(want) and all(x is y for x, y in zip(got, want, strict=True))
    else:
        assert got is want


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("1", "1u", True),
        ("1", "1.0", True),
        ("1", "true", False),
        ("0", "false", False),
        ("true", "true", True),
        ("'1'", "1", False),
        ("[1, 'a']", "[1.0, 'a']", True),
        ("{'k': 1}", "{'k': 1u}", True),
        ("{'k': 1}", "{'k': true}", False),
        ("double('NaN')", "double('NaN')", False),
        ("[double('NaN')]", "[double('NaN')]", False),
        ("null", "null", True),
        ("b'1'", "'1'", False),
        ("duration('1s')", "duration('1000ms')", True),
        ("timestamp('2026-01-01T00:00:00Z')", "timestamp('2026-01-01T01:00:00+01:00')", True),
    ],
)
@pytest.mark.parametrize("times", [1, 9])  # 9 x 9 is past the scan: the index decides
def test_the_pairs_cel_treats_specially(a: str, b: str, want: bool, times: int) -> None:
    expr = f"hasAny([{', '.join([a] * times)}], [{', '.join([b] * times)}])"
    assert compile_cel(expr, CelEnv())({}) is want
    expr = f"isSubset([{', '.join([b] * times)}], [{', '.join([a] * times)}])"
    assert compile_cel(expr, CelEnv())({}) is want


def test_empty_lists() -> None:
    def ev(expr: str) -> Any:
        return compile_cel(expr, CelEnv())({})

    assert ev("isSubset([], [1])") is True and ev("hasAll([], [1])") is False
    assert ev("hasAny([], [])") is False and ev("intersect([1], [])") == []

"""An evaluation error's text is cut short where a decision carries it.

CEL's errors quote the value they failed on (``cannot convert `…` to int``, ``IP Address '…'
parse error``), and a reply carries one such text per failing rule, action and resource, again
in the explain trace, and the decision log copies it. A principal attribute of 60 KB failing
`int(P.attr.level)` in a batch of 500 resources x 2 actions made a 74 KB request build and send
a 60 MB reply (800 times the request; the client's 4 MB limit refused it, after the server had
built it). Now rule, derived-role and rate-limit error texts are cut to
`pdp.errors.MAX_ERROR_TEXT` characters, still naming the rule and starting with the message.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.client._convert import request_to_proto
from pdp.errors import MAX_ERROR_TEXT
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
    edit: {}
  rules:
    - id: level
      actions: [read, edit]
      effect: allow
      condition: int(P.attr.level) >= 3
      reason: level
"""

RESOURCES = 500
LONG = 60_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("errors")
    (root / "doc.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(root, "--decision-cache", "0") as s:
        yield s


def batch(level: str, *, explain: bool = False) -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"level": level}}
    resources = [
        {"kind": "doc", "id": f"d{i}", "tenant": "t", "actions": ["read", "edit"]}
        for i in range(RESOURCES)
    ]
    return request_to_proto(principal, resources, explain=explain)


@pytest.mark.parametrize("explain", [False, True])
def test_a_long_value_in_an_error_does_not_multiply_into_the_reply(
    served: Served, explain: bool
) -> None:
    request = batch("x" * LONG, explain=explain)
    reply = served.check(request, timeout=60)
    # 1,000 decisions of a short error each (and its trace step): within a few hundred bytes
    # per decision, not the 60 KB value a thousand times over.
    assert reply.ByteSize() < 1_000 * 1_000, reply.ByteSize()
    for result in reply.results:
        for decision in result.actions.values():
            assert decision.effect == pb.EFFECT_DENY
            (error,) = decision.errors
            assert error.startswith("rule `doc/level`: cannot convert `xxx")
            assert len(error) <= len("rule `doc/level`: ") + MAX_ERROR_TEXT
            assert error.endswith("…")


def test_short_errors_are_kept_whole(served: Served) -> None:
    reply = served.check(batch("high"), timeout=60)
    error = reply.results[0].actions["read"].errors[0]
    assert error == "rule `doc/level`: cannot convert `high` to int"
    allowed = served.check(batch("3"), timeout=60).results[0].actions["read"]
    assert allowed.effect == pb.EFFECT_ALLOW and list(allowed.reasons) == ["level"]

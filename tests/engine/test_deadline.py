"""`Engine.check(stop_at=...)`: a deadline stops a resource being decided, not only a batch
between resources (bench/one_resource.py measures what one resource can cost without it).

The deadline here has always passed already (a monotonic time behind the clock), so nothing
depends on how fast the machine is: what is pinned is where the engine looks at the clock
(inside CEL comprehensions, between a resource's actions) and what it does then (raises
`DeadlineExceeded`, no decision, never a deny or an allow of a half-evaluated condition).
"""

from __future__ import annotations

import time

import pytest

from pdp.bundle.load import compile_files
from pdp.engine import DeadlineExceeded, Engine
from pdp.model.decision import ALLOW, DENY
from pdp.model.request import parse_check_request

# `P.attr.items.exists(...)` is the comprehension: its range is charged to the iteration
# budget, where the clock is read.
LOOP = "P.attr.items.exists(x, x == 7)"
POLICY = f"""
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: ledger}}
spec:
  resource: ledger
  actions:
    read: {{}}
    write: {{}}
    audit: {{}}
    list: {{}}
    a1: {{}}
    a2: {{}}
    a3: {{}}
  rules:
    # A deny rule whose condition errs denies (fail closed): interrupted, it must not.
    - id: guard
      actions: [audit]
      effect: deny
      roles: ["*"]
      condition: '{LOOP} || P.attr.fail.x'
    # `<error> || true` is true in CEL: an interrupted left side must not count as an error.
    - id: absorbs
      actions: [read]
      effect: allow
      roles: ["*"]
      condition: '{LOOP} || true'
    - id: plain
      actions: [write, audit, list, a1, a2, a3]
      effect: allow
      roles: ["*"]
"""
NOTE = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: note}
spec:
  resource: note
  actions:
    read: {}
  rules:
    - id: plain
      actions: [read]
      effect: allow
      roles: ["*"]
"""

PRINCIPAL = {"id": "p", "tenant": "acme", "roles": ["user"], "attr": {"items": [1, 2, 3]}}


def _engine() -> Engine:
    return Engine(
        compile_files({"ledger.yaml": POLICY.encode(), "note.yaml": NOTE.encode()}).policy_set
    )


def _request(*resources: tuple[str, list[str]]) -> object:
    return parse_check_request(
        {
            "principal": PRINCIPAL,
            "resources": [
                {"kind": kind, "id": f"{kind}-{i}", "tenant": "acme", "actions": actions}
                for i, (kind, actions) in enumerate(resources)
            ],
        }
    )


def _passed() -> float:
    return time.monotonic() - 1.0


@pytest.mark.parametrize("action", ["read", "audit"])
def test_a_comprehension_past_the_deadline_stops_the_decision(action: str) -> None:
    """`read`'s allow rule would absorb an error and allow; `audit`'s deny rule would take an
    error as a match and deny: interrupted, neither decides anything."""
    engine = _engine()
    request = _request(("ledger", [action]))
    with pytest.raises(DeadlineExceeded) as stopped:
        engine.check(request, stop_at=_passed())  # type: ignore[arg-type]
    assert (stopped.value.done, stopped.value.total) == (0, 1)
    # Without a deadline (and after a stopped call) it decides.
    effect = engine.check(request).results[0].actions[action].effect  # type: ignore[arg-type]
    assert effect == (ALLOW if action == "read" else DENY)


def test_the_clock_is_read_between_the_actions_of_one_resource() -> None:
    """No comprehension runs for these actions: the clock is read after every fourth action
    of a resource, so a resource of up to four such actions (the usual one to three) reads
    none inside and is decided (and then, late, not answered: 1 of 1 decided), and one that
    asks more stops before its fifth (0 of 1)."""
    engine = _engine()
    four = _request(("ledger", ["write", "list", "a1", "a2"]))
    with pytest.raises(DeadlineExceeded) as late:
        engine.check(four, stop_at=_passed())  # type: ignore[arg-type]
    assert (late.value.done, late.value.total) == (1, 1)
    five = _request(("ledger", ["write", "list", "a1", "a2", "a3"]))
    with pytest.raises(DeadlineExceeded) as stopped:
        engine.check(five, stop_at=_passed())  # type: ignore[arg-type]
    assert (stopped.value.done, stopped.value.total) == (0, 1)


def test_a_decision_made_past_the_deadline_is_not_returned() -> None:
    """Nothing reads the clock while `note` is decided (no comprehension, one action): the
    decision is made, and being late, is not answered (a gRPC caller gave up; an HTTP caller
    is owed a 504)."""
    engine = _engine()
    with pytest.raises(DeadlineExceeded) as late:
        engine.check(_request(("note", ["read"])), stop_at=_passed())  # type: ignore[arg-type]
    assert (late.value.done, late.value.total) == (1, 1)


def test_a_later_resource_stopped_inside_reports_the_resources_decided_before() -> None:
    engine = _engine()
    request = _request(("note", ["read"]), ("ledger", ["read"]))
    with pytest.raises(DeadlineExceeded) as stopped:
        engine.check(request, stop_at=_passed())  # type: ignore[arg-type]
    assert (stopped.value.done, stopped.value.total) == (1, 2)


def test_without_a_deadline_nothing_is_watched() -> None:
    engine = _engine()
    response = engine.check(_request(("note", ["read"]), ("ledger", ["read", "write"])))  # type: ignore[arg-type]
    assert [a.effect for r in response.results for a in r.actions.values()] == [ALLOW] * 3
    future = time.monotonic() + 3600
    response = engine.check(_request(("ledger", ["read", "audit"])), stop_at=future)  # type: ignore[arg-type]
    assert [a.effect for a in response.results[0].actions.values()] == [ALLOW, DENY]

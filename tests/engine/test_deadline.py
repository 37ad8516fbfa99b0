"""`Engine.check(stop_at=...)`: a deadline stops a resource being decided, not only a batch
between resources (bench/one_resource.py measures what one resource can cost without it).

The deadline here has always passed already (a monotonic time behind the clock), so nothing
depends on how fast the machine is: what is pinned is where the engine looks at the clock
(inside CEL comprehensions and RE2 scans, between the rules of a long stage, between a
resource's actions) and what it does then (raises `DeadlineExceeded`, no decision, never a
deny or an allow of a half-evaluated condition). The last test brings a `Deadline` forward
while the call runs, as a server's drain does.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from pdp.bundle.load import compile_files
from pdp.cel import STOP_AT, CelEnv, Deadline, Interrupted, compile_cel
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


# One `matches` outside any comprehension, and a chain of rules that hold neither a
# comprehension nor a `matches`.
SCAN_POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: scan}
spec:
  resource: scan
  actions:
    read: {}
    audit: {}
  rules:
    - id: guard
      actions: [audit]
      effect: deny
      roles: ["*"]
      condition: 'P.id.matches("^p$") || P.attr.fail.x'
    - id: absorbs
      actions: [read]
      effect: allow
      roles: ["*"]
      condition: 'P.id.matches("^q$") || true'
    - id: plain
      actions: [audit]
      effect: allow
      roles: ["*"]
"""


def _chain(rules: int) -> bytes:
    """`rules` allow rules on `read`, none matching, each a plain comparison."""
    body = "".join(
        f"""
    - id: r{i}
      actions: [read]
      effect: allow
      roles: ["*"]
      condition: 'P.id == "nobody-{i}"'"""
        for i in range(rules)
    )
    return f"""apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: chain}}
spec:
  resource: chain
  actions:
    read: {{}}
  rules:{body}
""".encode()


@pytest.mark.parametrize("action", ["read", "audit"])
def test_a_regex_scan_outside_a_comprehension_stops_the_decision(action: str) -> None:
    """Every RE2 scan checks the stop time, in a comprehension or not (a condition of many
    capped scans ran to its end before): `read`'s rule would absorb an error and allow,
    `audit`'s deny rule would take one as a match; stopped, neither decides."""
    engine = Engine(compile_files({"scan.yaml": SCAN_POLICY.encode()}).policy_set)
    request = _request(("scan", [action]))
    with pytest.raises(DeadlineExceeded) as stopped:
        engine.check(request, stop_at=_passed())  # type: ignore[arg-type]
    assert (stopped.value.done, stopped.value.total) == (0, 1)
    effect = engine.check(request).results[0].actions[action].effect  # type: ignore[arg-type]
    assert effect == (ALLOW if action == "read" else DENY)


def test_the_clock_is_read_between_the_rules_of_a_long_stage() -> None:
    """Rules without a comprehension or a `matches` read no clock themselves: a stage of up
    to eight rules reads none (decided, then, late, not answered: 1 of 1), a longer one
    before its ninth rule (0 of 1)."""
    eight = Engine(compile_files({"chain.yaml": _chain(8)}).policy_set)
    with pytest.raises(DeadlineExceeded) as late:
        eight.check(_request(("chain", ["read"])), stop_at=_passed())  # type: ignore[arg-type]
    assert (late.value.done, late.value.total) == (1, 1)
    nine = Engine(compile_files({"chain.yaml": _chain(9)}).policy_set)
    with pytest.raises(DeadlineExceeded) as stopped:
        nine.check(_request(("chain", ["read"])), stop_at=_passed())  # type: ignore[arg-type]
    assert (stopped.value.done, stopped.value.total) == (0, 1)
    decided = nine.check(_request(("chain", ["read"])))  # type: ignore[arg-type]
    assert decided.results[0].actions["read"].effect == DENY


# About 15 s of comprehension work in one resource (150 rules of 30^3 iterations, each a
# scan): far longer than any wait below.
HEAVY = (
    """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: heavy}
spec:
  resource: heavy
  actions:
    read: {}
  rules:"""
    + "".join(
        f"""
    - id: slow-{i}
      actions: [read]
      effect: allow
      roles: ["*"]
      condition: 'P.attr.n.exists(x, P.attr.n.exists(y, P.attr.n.exists(z,
        P.attr.text.matches("b$"))))'"""
        for i in range(150)
    )
    + """
    - id: last
      actions: [read]
      effect: allow
      roles: ["*"]
"""
)


def test_a_deadline_brought_forward_while_the_call_runs_stops_it() -> None:
    """A `Deadline` is read afresh at each check: brought forward from another thread while
    the resource is being decided (what `pdp serve`'s drain does at the end of its grace),
    it stops the decision (0 of 1) instead of letting it run to its end (an allow)."""
    engine = Engine(compile_files({"heavy.yaml": HEAVY.encode()}).policy_set)
    attr = {"n": list(range(30)), "text": "a" * 99}
    request = parse_check_request(
        {
            "principal": {**PRINCIPAL, "attr": attr},
            "resources": [{"kind": "heavy", "id": "h", "tenant": "acme", "actions": ["read"]}],
        }
    )
    stop = Deadline()
    lower = threading.Timer(0.2, lambda: stop.lower(time.monotonic()))
    lower.start()
    try:
        with pytest.raises(DeadlineExceeded) as stopped:
            engine.check(request, stop_at=stop)
    finally:
        lower.cancel()
    assert (stopped.value.done, stopped.value.total) == (0, 1)
    assert stop.at < math.inf


class _PassesAfter(Deadline):
    """A stop time that has not come at its first `reads` readings and has passed at every
    later one: which reads happen is then pinned without timing anything."""

    __slots__ = ("reads",)

    def __init__(self, reads: int) -> None:
        self.reads = reads

    @property  # type: ignore[override]
    def at(self) -> float:
        self.reads -= 1
        return math.inf if self.reads >= 0 else -math.inf


def test_a_comprehension_reads_the_stop_time_while_it_iterates() -> None:
    """A comprehension's range is charged, and the clock read, before its first iteration;
    its body of uncharged comparisons reads none. A long range is then read again every so
    many iterations (fewer the larger the body): past the stop time after the first read,
    the 90,000 iterations of 300 comparisons (~0.7 s) stop. A short range reads only once."""
    env = CelEnv(names=["l"])
    body = " || ".join(f'x == "q{i}"' for i in range(300))
    fn = compile_cel(f"l.exists(x, {body})", env)
    long = [f"a{i}" for i in range(90_000)]
    with pytest.raises(Interrupted):
        fn({"l": long, STOP_AT: _PassesAfter(1)})
    with pytest.raises(Interrupted):  # the two-variable form
        compile_cel(f"l.exists(i, x, {body})", env)({"l": long, STOP_AT: _PassesAfter(1)})
    short = _PassesAfter(1)
    assert fn({"l": [f"a{i}" for i in range(10)], STOP_AT: short}) is False
    assert short.reads == 0

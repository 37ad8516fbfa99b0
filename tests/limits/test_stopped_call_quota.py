"""A call that ends in an error gives back the rate-limit quota its decided actions took.

Limits take their cost when an allowed action is decided. A call whose deadline passes after
that (a later action or resource still deciding, or the whole decision made late) is answered
DEADLINE_EXCEEDED / 504 / UNAVAILABLE, never its allows, yet the quota stayed spent: a caller
retrying a slow call ran out of quota it never used (Envoy's and Cerbos' users expect a call
that answers an error to cost nothing). Now the engine gives the takes back when it stops, and
the HTTP server when a later part of an AuthZEN batch stops. Each store: the in-process buckets,
a real Redis, and the supervisor's buckets of `--workers N` over a real socket pair.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pdp.cel import Deadline
from pdp.client._convert import request_to_proto
from pdp.engine import DeadlineExceeded, Engine, EngineHolder, compile_policy_set
from pdp.engine.counters import Counters, MemoryCounters
from pdp.http.api import HttpApi
from pdp.http.server import HttpServer
from pdp.limits.redis import RedisCounters
from pdp.limits.supervised import CounterServer, SupervisedCounters
from pdp.model.loader import load_policy_files
from pdp.model.request import Limits, parse_check_request
from pdp.server.service import DecisionService

WAIT_CAP = 120.0
# ~0.1 s a rule (RE2 scans of 250 characters in nested comprehensions): `slow` runs ~15 s.
_SLOW = (
    "P.attr.items.exists(x, P.attr.items.exists(y, P.attr.items.exists(z,"
    " P.attr.text.matches('b$'))))"
)
POLICY = (
    "apiVersion: pdp/v1\nkind: ResourcePolicy\nmetadata: {id: notes}\nspec:\n"
    "  resource: note\n  actions:\n    read: {}\n    slow: {}\n  rules:\n"
    "    - {id: reader, actions: [read], effect: allow, roles: ['*']}\n"
    + "".join(
        f'    - id: slow-{i}\n      actions: [slow]\n      effect: allow\n      roles: ["*"]\n'
        f'      condition: "{_SLOW}"\n'
        for i in range(150)
    )
)
LIMITS = """apiVersion: pdp/v1
kind: LimitPolicy
metadata: {id: limits}
spec:
  limits:
    - {id: one-read, resources: [note], actions: [read], key: P.id, limit: 1, per: 1d}
"""
POLICY_SET = compile_policy_set(
    load_policy_files({"note.yaml": POLICY.encode(), "limits.yaml": LIMITS.encode()})
)
PRINCIPAL = {
    "id": "ann",
    "tenant": "acme",
    "roles": ["user"],
    "attr": {"items": list(range(30)), "text": "a" * 250},
}
_NOTE = {"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}


def _request(pid: str, *actions: str) -> Any:
    note = {"kind": "note", "id": "n1", "tenant": "acme", "actions": list(actions)}
    return parse_check_request({"principal": {**PRINCIPAL, "id": pid}, "resources": [note]})


@contextlib.contextmanager
def _counters(store: str, redis_url: str | None) -> Iterator[Counters]:
    if store == "memory":
        yield MemoryCounters()
    elif store == "redis":
        assert redis_url is not None
        counters = RedisCounters.from_url(redis_url)
        try:
            yield counters
        finally:
            counters.close()
    else:  # the supervisor's buckets, asked over a socket pair as a worker asks them
        server = CounterServer()
        theirs = server.connect()
        counters = SupervisedCounters(theirs.detach())
        try:
            yield counters
        finally:
            counters.close()


@pytest.fixture(params=["memory", "redis", "supervised"])
def counters(request: pytest.FixtureRequest) -> Iterator[Counters]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    with _counters(request.param, url) as c:
        yield c


def _read(engine: Engine, pid: str) -> tuple[str, tuple[str, ...]]:
    decision = engine.check(_request(pid, "read")).results[0].actions["read"]
    return decision.effect, decision.reasons


def test_a_call_stopped_after_a_limited_allow_gives_its_quota_back(counters: Counters) -> None:
    engine = Engine(POLICY_SET, counters=counters)
    pid = f"ann-{time.monotonic_ns()}"  # a bucket of its own on a shared Redis
    # `read` is allowed and takes the day's one unit; `slow` then runs past the stop time.
    with pytest.raises(DeadlineExceeded):
        engine.check(_request(pid, "read", "slow"), stop_at=Deadline(time.monotonic() + 1.0))
    # The caller got an error, never that allow: the unit is back, and this read takes it.
    assert _read(engine, pid) == ("allow", ())
    # The limit holds: the next read of the day is refused.
    assert _read(engine, pid) == ("deny", ("rate_limited",))


def test_a_give_back_never_fills_a_bucket_past_its_capacity(counters: Counters) -> None:
    """Given back twice (a buggy caller), the bucket is full, not over: one read, then none."""
    engine = Engine(POLICY_SET, counters=counters)
    pid = f"bob-{time.monotonic_ns()}"
    response = engine.check(_request(pid, "read"))
    assert response.spent and _read(engine, pid) == ("deny", ("rate_limited",))
    engine.give_back(response)
    engine.give_back(response)
    assert _read(engine, pid) == ("allow", ())
    assert _read(engine, pid) == ("deny", ("rate_limited",))


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_CAP)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_an_authzen_batch_answered_504_gives_back_its_first_parts_quota() -> None:
    """`execute_all` decides a batch a group (subject) at a time: carol's read, limited, is
    decided first; dave's heavy evaluation then stops at the 1 s deadline and the call is 504.
    Carol's read was never answered: her unit is back (a real listener in this process)."""
    holder = EngineHolder(counters=MemoryCounters())
    holder.swap(Engine(POLICY_SET))
    srv = HttpServer(HttpApi(holder, Limits(), 1 << 20), ("127.0.0.1:0",), grace=1.0, timeout=1.0)
    srv.start()

    def evaluation(pid: str, action: str) -> dict[str, Any]:
        props = {"tenant": "acme", "roles": ["user"], **PRINCIPAL["attr"]}
        return {
            "subject": {"type": "user", "id": pid, "properties": props},
            "action": {"name": action},
            "resource": {"type": "note", "id": "n1", "properties": {"tenant": "acme"}},
        }

    try:
        batch = {"evaluations": [evaluation("carol", "read"), evaluation("dave", "slow")]}
        status, body = _post(srv.port, "/access/v1/evaluations", batch)
        assert status == 504, body
        one = evaluation("carol", "read")
        assert _post(srv.port, "/access/v1/evaluation", one)[1]["decision"] is True
        assert _post(srv.port, "/access/v1/evaluation", one)[1]["decision"] is False
    finally:
        srv.stop()


class _CancelledContext:
    """What a gRPC handler's context says of a call grpc cancelled while the server drained
    (past the grace) and the handler still finished deciding: inactive, no deadline. grpc
    cancels such calls on its own timer, which a test cannot line up with a decision's end."""

    def time_remaining(self) -> None:
        return None

    def is_active(self) -> bool:
        return False

    def abort_with_status(self, status: Any) -> None:
        raise AssertionError(f"the decision was made, not aborted: {status}")


class _Records:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def on_check(self, record: Any) -> None:
        self.calls.append(record)


@pytest.mark.parametrize("observer", [None, _Records()], ids=["bare", "observed"])
def test_a_grpc_decision_cancelled_while_draining_gives_its_quota_back(
    observer: _Records | None,
) -> None:
    """Both gRPC Check paths (without an observer, the bare one; with one, the logged one):
    ann's limited read, decided once grpc had cancelled the call during the drain, is never
    answered, so her one unit is back (and the observed path logs no decision)."""
    holder = EngineHolder(counters=MemoryCounters())
    holder.swap(Engine(POLICY_SET))
    service = DecisionService(holder, Limits(), 1 << 20, observer)  # type: ignore[arg-type]
    service.begin_drain(time.monotonic() + 3600)
    data = request_to_proto(PRINCIPAL, [_NOTE], None).SerializeToString()
    assert service.check(data, _CancelledContext())  # type: ignore[arg-type]
    assert _read(holder.require(), "ann")[0] == "allow"
    assert _read(holder.require(), "ann")[0] == "deny"
    assert observer is None or observer.calls == []

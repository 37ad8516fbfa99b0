"""A plan stops at its call's deadline and at the drain's end, as a Check does.

A plan runs the known parts of the rules' conditions (those that read no resource attribute)
through the same CEL as a Check, so a kind of 150 rules whose conditions cost ~0.1 s each (RE2
scans in nested comprehensions over principal attributes) is ~15 s of planning. The Plan RPC and
`POST /v1/plan` took no deadline: such a plan ran to its end past the caller's deadline, and
past the drain's grace (grpc cancelled it; its thread went on). Now the plan reads the call's
stop time at CEL's charges and between rules: gRPC DEADLINE_EXCEEDED / HTTP 504 at the
deadline, UNAVAILABLE / 503 at the drain's end. Real servers on 127.0.0.1 in this process; no
duration is asserted (every wait has a generous cap).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import grpc
import pytest

from pdp.bundle.load import compile_files
from pdp.cel import Deadline
from pdp.engine import DeadlineExceeded, Engine, EngineHolder
from pdp.http.api import HttpApi
from pdp.http.server import HttpServer
from pdp.model.request import Limits
from pdp.plan import CONDITIONAL, parse_plan_request, plan
from pdp.server import ServerConfig, build_server
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

WAIT_CAP = 120.0
RULES = 150
# ~0.1 s each: 30^3 iterations, each an RE2 scan of 250 characters for a "b" they lack.
_SLOW = (
    "principal.attr.items.exists(x, principal.attr.items.exists(y,"
    ' principal.attr.items.exists(z, principal.attr.text.matches("b$"))))'
)


def _rule(name: str, condition: str) -> str:
    head = f"\n    - id: {name}\n      actions: [read]\n      effect: allow\n"
    return head + f'      roles: ["*"]\n      condition: "{condition}"'


POLICY = (
    """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: ledger}
spec:
  resource: ledger
  actions:
    read: {}
  rules:"""
    + "".join(_rule(f"slow-{i}", _SLOW.replace('"', "'")) for i in range(RULES))
    + """
    - id: last
      actions: [read]
      effect: allow
      roles: ["*"]
"""
)
ENGINE = Engine(compile_files({"ledger.yaml": POLICY.encode()}).policy_set)
PRINCIPAL: dict[str, Any] = {
    "id": "alice",
    "tenant": "acme",
    "roles": ["user"],
    "attr": {"items": list(range(30)), "text": "a" * 250},
}
BODY = {"principal": PRINCIPAL, "resource": {"kind": "ledger"}, "action": "read"}
EXPIRED = "deadline exceeded before the decision was complete"
SHUTTING_DOWN = "server is shutting down: the call did not finish within the drain grace"


def _grpc_request() -> pb.PlanRequest:
    msg = pb.PlanRequest(resource_kind="ledger", action="read")
    msg.principal.id, msg.principal.tenant = "alice", "acme"
    msg.principal.roles.append("user")
    msg.principal.attr.update({"items": list(range(30)), "text": "a" * 250})
    return msg


def test_the_planner_stops_at_its_stop_time() -> None:
    req = parse_plan_request(BODY)
    with pytest.raises(DeadlineExceeded) as stopped:
        plan(ENGINE, req, Deadline(time.monotonic() - 1.0))
    assert (stopped.value.done, stopped.value.total) == (0, 0)
    # With time to spare, a cheap kind plans as before (the heavy one would take ~15 s here):
    # its one rule's condition is CEL the plan evaluates, and the stop time is read.
    cheap = POLICY.split("  rules:")[0] + "  rules:" + _rule("all", "principal.id == 'alice'")
    engine = Engine(compile_files({"ledger.yaml": cheap.encode()}).policy_set)
    assert plan(engine, req, Deadline(time.monotonic() + 3600)).kind == CONDITIONAL


def _wait(test: Any, what: str) -> None:
    end = time.monotonic() + WAIT_CAP
    while not test():
        assert time.monotonic() < end, what
        time.sleep(0.02)


class Recorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def on_check(self, record: Any) -> None:
        self.records.append(record)

    def close(self) -> None:
        pass


def test_a_grpc_plan_stops_at_its_deadline_and_at_the_drain() -> None:
    rec = Recorder()
    server = build_server(EngineHolder(ENGINE), ServerConfig(listen=("127.0.0.1:0",)), observer=rec)
    server.start()
    try:
        with grpc.insecure_channel(server.addresses[0]) as ch:
            stub = pb_grpc.DecisionServiceStub(ch)
            with pytest.raises(grpc.RpcError) as late:
                stub.Plan(_grpc_request(), timeout=1.0)
            # The client's timer ends its wait either way: what the server answered is the
            # status it set, its details.
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            _wait(lambda: rec.records, "the plan was never recorded")
            assert (rec.records[0].error_code, rec.records[0].error_message) == (
                "DEADLINE_EXCEEDED",
                EXPIRED,
            ), rec.records
            # A plan with time to spare, then the drain with a short grace.
            running = stub.Plan.future(_grpc_request(), timeout=300)
            assert server.activity is not None
            _wait(lambda: server.activity.in_flight >= 1, "the plan never started")
            server.begin_stop(0.5)
            err = running.exception(timeout=WAIT_CAP)
    finally:
        server.stop(0)
    assert isinstance(err, grpc.RpcError), "a 15 s plan finished within a 0.5 s grace"
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN), err


def _post_plan(port: int) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_CAP)
    try:
        conn.request("POST", "/v1/plan", json.dumps(BODY), {"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


@pytest.mark.parametrize("drain", [False, True], ids=["deadline", "drain"])
def test_an_http_plan_stops_at_its_deadline_and_at_the_drain(drain: bool) -> None:
    """`--http-timeout` 1 s: 504. A 300 s timeout and the server stopped with a 0.5 s grace
    while the plan runs: 503 (before, the plan ran to its end and aiohttp cut the
    connection)."""
    api = HttpApi(EngineHolder(ENGINE), Limits(), 1 << 20)
    srv = HttpServer(api, ("127.0.0.1:0",), grace=0.5, timeout=300.0 if drain else 1.0)
    srv.start()
    replies: list[tuple[int, dict[str, Any]]] = []
    caller = threading.Thread(target=lambda: replies.append(_post_plan(srv.port)))
    try:
        caller.start()
        if drain:
            _wait(lambda: srv._deciding, "the plan never started")
        else:
            caller.join(WAIT_CAP)
    finally:
        srv.stop()
    caller.join(WAIT_CAP)
    status, message = (503, SHUTTING_DOWN) if drain else (504, EXPIRED)
    assert replies == [(status, {"error": {"status": status, "message": message}})], replies

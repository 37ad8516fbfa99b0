"""One heavy resource stops at its deadline too, on both protocols: a real `pdp serve` with
gRPC, `--http-listen`, `--http-timeout` and a decision log, and a policy whose ONE resource
runs 150 rules of about 0.1 s each here (a batch of one: nothing to stop between resources;
15 s of work, far past the 2 s deadline even on a machine several times faster).

A server that decided it to the end would log the decision (an allow, by the last rule) and
answer HTTP 200; one that stops logs the deadline error, `decided 0 of 1 resources`, answers
gRPC DEADLINE_EXCEEDED and HTTP 504, and no decision.

A decision made past the deadline (the engine's last look at the clock, after the last
resource) is no longer something a policy can produce here: every comprehension reads the stop
time every so many iterations, and every operation on large values at its charge, so what runs
between two reads is well under a millisecond (a stride of a comprehension body, eight rules,
four actions). The engine still refuses one decided late (tests/engine/test_deadline.py, with a
stop time already passed and nothing inside that reads it), and the server answers it through
the same `DeadlineExceeded` handler as the case below, `decided 1 of 1` in place of `0 of 1`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import assert_error, pdp_serve

from pdp.client._convert import request_to_proto
from tests.decision_logs import complete_records

from .serving import CHECK, HEAVY_PRINCIPAL
from .test_http_stall import SUBJECT

DEADLINE_S = 2
WAIT_CAP = 120.0
RULES = 150
STOPPED = "deadline exceeded before the decision was complete (decided 0 of 1 resources)"

# Each rule's condition scans 30^3 times for a "b" the text lacks (false after ~0.1 s, the
# whole of tests/security/serving.py's heavy condition); the last rule allows.
_SLOW = (
    "principal.attr.items.exists(x, principal.attr.items.exists(y,"
    ' principal.attr.items.exists(z, principal.attr.text.matches("b$"))))'
)
_RULE = """
    - id: slow-{i}
      actions: [read]
      effect: allow
      roles: ["*"]
      condition: '{condition}'"""
POLICY = (
    """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: ledger}
spec:
  resource: ledger
  actions:
    read: {}
  rules:"""
    + "".join(_RULE.format(i=i, condition=_SLOW) for i in range(RULES))
    + """
    - id: last
      actions: [read]
      effect: allow
      roles: ["*"]
"""
)


def _record(log: Path, rpc: str) -> dict[str, Any]:
    """The first record of `rpc` in the decision log (fails at the cap)."""
    end = time.monotonic() + WAIT_CAP
    while True:
        found = [r for r in complete_records(log) if r.get("rpc") == rpc]
        if found:
            return found[0]
        assert time.monotonic() < end, f"no `{rpc}` record in {complete_records(log)}"
        time.sleep(0.05)


def _assert_stopped_on_both(
    policies: Path, timeout: float, kind: str, attr: dict[str, Any], message: str
) -> None:
    """One resource of `kind` asked over gRPC (deadline `timeout`) and over AuthZEN
    (`--http-timeout` `timeout`): both calls end DEADLINE_EXCEEDED / 504 with `message`, no
    decision answered, and the decision log holds an error record and no decision for each."""
    log = policies / "decisions.jsonl"
    flags = ["--http-timeout", str(timeout), "--decision-log", str(log)]
    flags += ["--telemetry-writer", "thread"]
    resource = {"kind": kind, "id": "r-1", "tenant": "acme", "attr": attr, "actions": ["read"]}
    with pdp_serve(*flags, policies=policies) as pdp:
        with grpc.insecure_channel(pdp.grpc_address) as channel:
            check = channel.unary_unary(CHECK)
            body = request_to_proto(HEAVY_PRINCIPAL, [resource], None).SerializeToString()
            try:
                check(body, timeout=timeout)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
        # The client's own timer ends its wait either way: the server's record says what the
        # server did.
        grpc_record = _record(log, CHECK)
        reply = pdp.post(
            "/access/v1/evaluation",
            {
                "subject": SUBJECT,
                "action": {"name": "read"},
                "resource": {"type": kind, "id": "r-2", "properties": {"tenant": "acme", **attr}},
            },
        )
        http_record = _record(log, "POST /access/v1/evaluation")

    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "decisions" not in grpc_record, grpc_record
    assert grpc_record["error"] == {"code": "DEADLINE_EXCEEDED", "message": message}
    err = assert_error(reply, 504)
    assert err["message"] == message, err
    assert "decision" not in reply.json
    assert "decisions" not in http_record, http_record
    assert http_record["error"] == {"code": "DEADLINE_EXCEEDED", "message": message}


def test_one_heavy_resource_stops_at_the_deadline_on_grpc_and_http(tmp_path: Path) -> None:
    (tmp_path / "ledger.yaml").write_text(POLICY)
    _assert_stopped_on_both(tmp_path, DEADLINE_S, "ledger", {}, STOPPED)

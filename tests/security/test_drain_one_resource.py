"""SIGTERM stops a decision inside one heavy resource at the end of the grace, against a real
`pdp serve` (one worker, the decision log on).

The call asks ONE resource whose 150 rules take about 0.1 s each here (15 s of work; a batch
of one: nothing to stop between resources) and has no deadline of its own to speak of (300
s). The drain's end is checked between resources, and now inside one too: the server brings
each call's stop time forward to the end of the grace, and the engine reads it at its checks.
So the call answers UNAVAILABLE (`decided 0 of 1 resources`) at the end of the 2 s grace, its
handler is done before `stop` stops waiting for handlers (no "still running at shutdown"
warning: the process exits within grace + 2 x STOP_MARGIN_S + the log's flush, docs/SERVING.md),
and nothing is logged for it. Before, it ran on to its end: grpc cancelled it past the grace,
its thread kept deciding, and the process waited for it. The same call over AuthZEN
(`--http-timeout 300`) answers 503 with the same message; before, aiohttp cut it off at the end
of the grace and the process waited for its decision thread. No duration is asserted.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from server.conftest import ALICE, free_port

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .serving import CHECK, HEAVY_PRINCIPAL, pdp_serve, wait_serving
from .test_deadline_one_resource import POLICY
from .test_drain import assert_log_matches, logged, serve_args
from .test_http_stall import SUBJECT

STOPPED = (
    "server is shutting down: the call did not finish within the drain grace "
    "(decided 0 of 1 resources)"
)


def test_a_call_inside_one_heavy_resource_answers_unavailable_at_the_end_of_the_grace(
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "ledger.yaml").write_text(POLICY)
    port = free_port()
    heavy = {"kind": "ledger", "id": "l-1", "tenant": "acme", "actions": ["read"]}
    body = request_to_proto(HEAVY_PRINCIPAL, [heavy], None).SerializeToString()
    # A kind no policy governs: denied at once, without a rule.
    quick = {"kind": "memo", "id": "m-1", "tenant": "acme", "actions": ["read"]}
    marker = request_to_proto(ALICE, [quick], None).SerializeToString()
    flags = ["--grace", "2", "--workers", "1"]
    with pdp_serve(*serve_args(policies, port, tmp_path, *flags)) as served:
        wait_serving(port, served)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            check = ch.unary_unary(CHECK)
            idle = _cpu_seconds(served.proc.pid)
            slow = check.future(body, timeout=300)
            # The event: the server is deciding it (half a second of CPU). Only then the
            # marker, or the native transport may take both in one batch, decided in order:
            # the marker answered after the slow call's 15 s, and the SIGTERM too late.
            end = time.monotonic() + 120
            while _cpu_seconds(served.proc.pid) < idle + 0.5:
                assert time.monotonic() < end and not slow.done(), served.output()
                time.sleep(0.05)
            answered = pb.CheckResponse.FromString(check(marker, timeout=120))
            served.proc.send_signal(signal.SIGTERM)
            err = slow.exception(timeout=300)
        assert served.exit_code() == 0, served.output()
    out = served.output()
    assert isinstance(err, grpc.RpcError), "a 15 s call finished within a 2 s grace"
    assert (err.code(), err.details()) == (grpc.StatusCode.UNAVAILABLE, STOPPED), err
    assert "still running at shutdown" not in out, out
    assert "dropped" not in out, out
    assert_log_matches(tmp_path, [answered.decision_id])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        data = json.dumps(body).encode()
        conn.request("POST", "/access/v1/evaluation", data, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def test_an_http_call_inside_one_heavy_resource_answers_503_at_the_end_of_the_grace(
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "ledger.yaml").write_text(POLICY)
    port, http_port = free_port(), free_port()
    flags = ["--grace", "2", "--workers", "1", "--http-listen", f"127.0.0.1:{http_port}"]
    flags += ["--http-timeout", "300"]
    evaluation = {
        "subject": SUBJECT,
        "action": {"name": "read"},
        "resource": {"type": "ledger", "id": "l-1", "properties": {"tenant": "acme"}},
    }
    replies: list[tuple[int, dict[str, Any]]] = []
    with pdp_serve(*serve_args(policies, port, tmp_path, *flags)) as served:
        wait_serving(port, served)
        idle = _cpu_seconds(served.proc.pid)
        caller = threading.Thread(target=lambda: replies.append(_post(http_port, evaluation)))
        caller.start()
        # The event: the server is deciding (half a second of CPU, ~5 of the 150 rules).
        end = time.monotonic() + 120
        while _cpu_seconds(served.proc.pid) < idle + 0.5:
            assert time.monotonic() < end and caller.is_alive(), (replies, served.output())
            time.sleep(0.05)
        served.proc.send_signal(signal.SIGTERM)
        caller.join(300)
        assert served.exit_code() == 0, served.output()
    assert replies == [(503, {"error": {"status": 503, "message": STOPPED}})], replies
    # No decision of it in the log (an error record of the call, at most).
    assert not [r for r in logged(tmp_path) if "decisions" in r], logged(tmp_path)

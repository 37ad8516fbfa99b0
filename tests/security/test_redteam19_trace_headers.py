"""Red-team sweep 19: trace context headers cannot flood pdp's log.

Any caller chooses `traceparent`, `tracestate` and `baggage` (HTTP headers, gRPC metadata), and
OpenTelemetry's propagators log a warning for every malformed one, quoting it whole: each call
with a 7 KB `tracestate` wrote a 7 KB line to pdp's log, as fast as the caller could send. They
are at most one line per propagator logger per minute now, printable and short, the rest
counted; the decisions themselves are unchanged.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import pdp_serve

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.decision_logs import complete_records

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
HOSTILE = [
    {"traceparent": TRACEPARENT, "tracestate": "a=" + "b" * 7000},
    {"traceparent": TRACEPARENT, "tracestate": ",".join(f"k{i}=v" for i in range(40))},
    {"baggage": "a=" + "b" * 7000},
    {"baggage": "a" + " " * 4000 + "=b"},
    {"traceparent": "00-" + "a" * 600},
]
EVALUATION = {
    "subject": {"type": "user", "id": "alice", "properties": {"tenant": "acme"}},
    "action": {"name": "read"},
    "resource": {"type": "document", "id": "d-1", "properties": {"tenant": "acme"}},
}
CHECK = request_to_proto(
    {"id": "alice", "tenant": "acme", "roles": ["user"]},
    [{"kind": "document", "id": "d-1", "tenant": "acme", "actions": ["read"]}],
    None,
)
CALLS = 10  # of each hostile header set, per protocol
WAIT_CAP = 60.0


def test_hostile_trace_headers_log_a_short_line_per_logger_not_one_per_call(
    tmp_path: Path,
) -> None:
    log = tmp_path / "decisions.jsonl"
    with pdp_serve("--workers", "1", "--decision-log", str(log)) as pdp:
        with grpc.insecure_channel(pdp.grpc_address) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for headers in HOSTILE:
                for _ in range(CALLS):
                    reply = pdp.post("/access/v1/evaluation", EVALUATION, headers=headers)
                    assert reply.status == 200
                    stub.Check(CHECK, metadata=list(headers.items()), timeout=30)
        # Every call observed: the writer has parsed (and complained about) every header.
        end = time.monotonic() + WAIT_CAP
        while len(complete_records(log)) < 2 * CALLS * len(HOSTILE):
            assert time.monotonic() < end, len(complete_records(log))
            time.sleep(0.05)
        stderr = "".join(pdp.stderr)
    lines = [line for line in stderr.splitlines() if "opentelemetry" in line]
    assert lines, stderr[-3000:]  # the propagators did complain
    per_logger: dict[str, int] = {}
    for line in lines:
        assert len(line) < 400, line[:400]
        assert "trace context header: " in line, line
        name = line.split(" WARNING ", 1)[1].split("[", 1)[0]
        per_logger[name] = per_logger.get(name, 0) + 1
    assert per_logger and all(n == 1 for n in per_logger.values()), per_logger

"""`pdp serve --decision-log FILE` as a real process: a Check over gRPC, the record in the file,
and the logged request replays to the same decision."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.model.request import parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.telemetry import MASKED, request_from_record

from .conftest import TOKEN, TRACE_ID, TRACEPARENT

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
REQUEST = POLICIES / "requests" / "agent_on_behalf.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < end:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    pytest.fail("server did not become SERVING")


@pytest.mark.skipif(not REQUEST.exists(), reason="example policies not present")
@pytest.mark.parametrize("writer", ["process", "thread"])
def test_pdp_serve_writes_the_decision_log(tmp_path: Path, writer: str) -> None:
    log_file = tmp_path / "decisions.jsonl"
    port = free_port()
    request = json.loads(REQUEST.read_text())
    request["principal"]["attr"]["email"] = "alice@acme.example"
    request["principal"]["attr"]["token"] = TOKEN
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pdp.cli.main", "serve",
            "--policies", str(POLICIES),
            "--listen", f"127.0.0.1:{port}",
            "--decision-log", str(log_file),
            "--mask", "principal.attr.email",
            "--otel", "off",
            "--telemetry-writer", writer,
            "--allow-client-time",  # the example request fixes its time; the replay needs it
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_serving(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = pb_grpc.DecisionServiceStub(ch).Check(
                json_format.ParseDict(request, pb.CheckRequest()),
                metadata=(("traceparent", TRACEPARENT), ("authorization", f"Bearer {TOKEN}")),
                timeout=10,
            )
        proc.send_signal(signal.SIGTERM)  # graceful: the observer flushes before exit
        output = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    text = log_file.read_text()
    assert TOKEN not in text and "alice@acme.example" not in text
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert record["decision_id"] == reply.decision_id
    assert record["trace_id"] == TRACE_ID
    assert record["principal"]["actor"]["id"] == "research-agent"
    assert record["request"]["principal"]["attr"]["email"] == MASKED
    effects = {
        (r.id, action): result.effect for r in reply.results for action, result in r.actions.items()
    }
    logged = {
        (r["id"], action): d["effect"].upper()
        for r in record["decisions"]
        for action, d in r["actions"].items()
    }
    assert logged == {k: pb.Effect.Name(v).removeprefix("EFFECT_") for k, v in effects.items()}

    # The logged request replays to the same decisions under the same policies.
    from pdp.engine import Engine
    from pdp.engine.compile import compile_policy_set
    from pdp.model.loader import load_policy_dir

    engine = Engine(compile_policy_set(load_policy_dir(POLICIES)))
    replay = engine.check(parse_check_request(request_from_record(record)))
    replayed = {
        (r.id, action): d.effect.upper() for r in replay.results for action, d in r.actions.items()
    }
    assert replayed == logged

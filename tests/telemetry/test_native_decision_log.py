"""`pdp serve --transport native --decision-log FILE`: each Check and Plan decided is logged as
the grpcio transport logs it (same fields, masking, the caller's trace id), by the in-process writer and by
the writer process (which reads the call's metadata on the serving thread).

The three servers start side by side: one start-up's wait, not three."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from .conftest import TOKEN, TRACE_ID, TRACEPARENT
from .test_serve_cli_e2e import POLICIES, REQUEST, free_port, wait_serving

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

# Differ from call to call, or server to server: not the transport's to keep equal.
_PER_CALL = {"decision_id", "timestamp", "latency_ms", "caller", "span_id"}


def _start(transport: str, writer: str, log_file: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(POLICIES),
            "--listen", f"127.0.0.1:{port}", "--transport", transport, "--workers", "1",
            "--decision-log", str(log_file), "--mask", "principal.attr.email", "--otel", "off",
            "--telemetry-writer", writer, "--allow-client-time", "--no-ext-authz",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    return proc, port


def _records(proc: subprocess.Popen[str], port: int, log_file: Path) -> list[dict[str, Any]]:
    """The Check's record, then the Plan's."""
    request = json.loads(REQUEST.read_text())
    request["principal"]["attr"]["email"] = "alice@acme.example"
    request["principal"]["attr"]["token"] = TOKEN
    principal = json_format.ParseDict(request["principal"], pb.Principal())
    context = json_format.ParseDict(request["context"], pb.Context())
    try:
        wait_serving(port, proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            reply = pb_grpc.DecisionServiceStub(ch).Check(
                json_format.ParseDict(request, pb.CheckRequest()),
                metadata=(
                    ("traceparent", TRACEPARENT),
                    ("tracestate", "vendor=1"),
                    ("x-request-id", "req-native-1"),
                    ("authorization", f"Bearer {TOKEN}"),
                ),
                timeout=10,
            )
            plan = pb.PlanRequest(
                principal=principal, resource_kind="document", action="read", context=context
            )  # the client's time (--allow-client-time): the server's differs per server
            planned = pb_grpc.DecisionServiceStub(ch).Plan(
                plan, metadata=(("traceparent", TRACEPARENT),), timeout=10
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
    check, plan = [json.loads(line) for line in text.splitlines()]
    assert check["decision_id"] == reply.decision_id
    assert plan["rpc"].endswith("/Plan") and planned.plan_id
    return [check, plan]


@pytest.mark.skipif(not REQUEST.exists(), reason="example policies not present")
def test_native_calls_are_logged_as_on_grpcio(tmp_path: Path) -> None:
    runs = {
        (transport, writer): (*_start(transport, writer, tmp_path / f"{transport}-{writer}"),)
        for transport, writer in (("grpcio", "thread"), ("native", "thread"), ("native", "process"))
    }
    logs = {key: _records(*run, tmp_path / f"{key[0]}-{key[1]}") for key, run in runs.items()}
    for i, reference in enumerate(logs["grpcio", "thread"]):
        assert reference["trace_id"] == TRACE_ID
        for key, records in logs.items():
            record = records[i]
            assert record["caller"]["address"].startswith("ipv4:127.0.0.1:"), key
            assert record["caller"]["identity"] == "", key
            same = {k: v for k, v in record.items() if k not in _PER_CALL}
            assert same == {k: v for k, v in reference.items() if k not in _PER_CALL}, (key, i)

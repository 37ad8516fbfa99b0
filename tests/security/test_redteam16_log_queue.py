"""A stalled decision-log sink and large requests cannot make `pdp serve` hold gigabytes.

The queue between the serving threads and the decision-log writer was bounded by count only
(10,000 observations, "about 10 MiB at 1 KiB each"). A caller sending ~1 MB requests while the
sink stalls (stdout piped to a log shipper that stopped reading) filled it with 10 GB: a real
`pdp serve` grew by 1 MB per call, 6.5 GB in 30 s, until the kernel killed it. With 4 MB
requests (the default `--max-message-bytes`) that is 40 GB. Now observations of large requests
also count against a byte budget and are dropped (and counted) past it, so the server's peak
memory stays bounded whatever the caller sends; every call is still decided. Both writer
modes (a thread of the server, a writer process fed through a pipe), HTTP and the Plan RPC too.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.telemetry.intake import DEFAULT_QUEUE_BYTES

from .serving import Served, wait_serving

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CALLS = 600  # of ~1 MB each: 0.6 GB queued without a byte budget
CALLERS = 4
# Far above what the server needs with the budget (about 250 MB here), far below what 600
# queued requests take without it (about 650 MB here, measured with the budget check removed).
MAX_PEAK_RSS_MB = 150 + 4 * DEFAULT_QUEUE_BYTES // 2**20


def _request() -> pb.CheckRequest:
    big = {f"note{i}": "x" * 60_000 for i in range(16)}  # ~1 MB of attributes
    return json_format.ParseDict(
        {
            "principal": {
                "id": "alice",
                "tenant": "acme",
                "roles": ["user"],
                "scopes": ["docs:read"],
                "attr": big,
            },
            "resources": [
                {
                    "kind": "document",
                    "id": "d1",
                    "tenant": "acme",
                    "attr": {"owner": "alice", "classification": "internal"},
                    "actions": ["read"],
                }
            ],
            "context": {"ip": "10.20.30.40"},
        },
        pb.CheckRequest(),
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve_with_stalled_stdout(
    *args: str, policies: Path = POLICIES
) -> Iterator[tuple[Served, int]]:
    """`pdp serve` whose stdout is a pipe nobody reads: its decision log blocks once the pipe's
    buffer is full, as a stuck log shipper would make it."""
    port = _free_port()
    stalled_r, stalled_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdp.cli.main", "serve", "--no-pin-workers", "--workers", "1",
         "--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--otel", "off",
         "--decision-log", "stdout", *args],
        stdout=stalled_w,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    os.close(stalled_w)
    try:
        served = Served(proc)
        wait_serving(port, served)
        yield served, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)  # a server blocked on its stdout would not drain on SIGTERM
        proc.wait(30)
        os.close(stalled_r)


def _peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


def _grpc_caller(port: int, n: int, effects: list[str]) -> None:
    message = _request()
    options = [("grpc.max_send_message_length", 8 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        for i in range(n):
            message.request_id = f"{threading.get_ident()}-{i}"
            reply = stub.Check(message, timeout=60)
            effects.append(pb.Effect.Name(reply.results[0].actions["read"].effect))


def _plan_caller(port: int, n: int, effects: list[str]) -> None:
    check = _request()
    message = pb.PlanRequest(resource_kind="document", action="read")
    message.principal.CopyFrom(check.principal)
    message.context.CopyFrom(check.context)
    options = [("grpc.max_send_message_length", 8 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        for i in range(n):
            message.request_id = f"{threading.get_ident()}-{i}"
            reply = stub.Plan(message, timeout=60)
            effects.append(pb.PlanResponse.Kind.Name(reply.kind))


def _http_caller(port: int, n: int, effects: list[str]) -> None:
    body = json_format.MessageToJson(_request()).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(n):
            connection.request(
                "POST", "/v1/check", body, headers={"Content-Type": "application/json"}
            )
            reply = connection.getresponse()
            answer = json.loads(reply.read())
            assert reply.status == 200, answer
            effects.append(answer["results"][0]["actions"]["read"]["effect"])
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("protocol", "writer"),
    [("grpc", "thread"), ("grpc", "process"), ("http", "thread"), ("plan", "thread")],
)
def test_large_requests_to_a_stalled_log_keep_memory_bounded(protocol: str, writer: str) -> None:
    assert len(_request().SerializeToString()) > 900_000
    http_port = _free_port()
    flags = ["--telemetry-writer", writer, "--http-listen", f"127.0.0.1:{http_port}"]
    with _serve_with_stalled_stdout(*flags) as (served, grpc_port):
        effects: list[str] = []
        failures: list[BaseException] = []

        def caller(n: int) -> None:
            try:
                if protocol == "grpc":
                    _grpc_caller(grpc_port, n, effects)
                elif protocol == "plan":
                    _plan_caller(grpc_port, n, effects)
                else:
                    _http_caller(http_port, n, effects)
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=caller, args=(CALLS // CALLERS,)) for _ in range(CALLERS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert failures == [], failures[:1]
        expected = "CONDITIONAL" if protocol == "plan" else "EFFECT_ALLOW"
        assert len(effects) == CALLS and set(effects) == {expected}
        peak = _peak_rss_mb(served.proc.pid)
        assert peak < MAX_PEAK_RSS_MB, f"pdp serve peaked at {peak} MB"

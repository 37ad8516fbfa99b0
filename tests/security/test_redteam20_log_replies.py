"""A stalled decision log counts what each queued call's reply keeps alive, not its request alone.

The queue between the serving threads and the decision-log writer is bounded by count (10,000)
and, for observations of large requests, by bytes (`DEFAULT_QUEUE_BYTES`). Only the request's
bytes were counted. A 15 KB request (500 resources x 2 actions, under the 16 KiB at which an
observation counts at all) whose 1,000 decisions each carry the errors of the rules that failed
on its values (five failing rules of ~200-character errors: ~1 MB of reply) was queued by count
alone while the sink stalled: 600 such calls took a real server to 2.7 GB (790 MB with the
writer process), 10 GB at the queue's 10,000. Now a decided
call's reply counts too: its bytes over gRPC (in the server's thread or on the way to the
writer process), an estimate from its decisions over HTTP.
"""

from __future__ import annotations

import json
import textwrap
import threading
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest

from pdp.client._convert import request_to_proto
from pdp.server import wire
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.telemetry import intake

from .serving import Served
from .test_redteam16_log_queue import _free_port, _peak_rss_mb, _serve_with_stalled_stdout

RULES = 5
POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: doc}
spec:
  resource: doc
  actions:
    read: {}
    edit: {}
  rules:
""" + "".join(
    f"""    - id: level-{k}
      actions: [read, edit]
      effect: allow
      condition: int(P.attr.level) >= {k}
"""
    for k in range(RULES)
)
RESOURCES = 500
# A byte budget smaller than the default (`DEFAULT_QUEUE_BYTES`) shows the same bound with
# fewer calls: without the reply counted, 120 calls of ~1 MB of reply (~4.5 MB of server
# memory each, queued) pass any bound on the peak that holds with it.
QUEUE_BYTES = 8 * 2**20
CALLS = 120
CALLERS = 4
# As in test_redteam16_log_queue: far above what the server needs with the budget, far below
# what the queued replies take without it.
MAX_PEAK_RSS_MB = 150 + 4 * QUEUE_BYTES // 2**20


def batch(i: int) -> pb.CheckRequest:
    principal = {"id": "eve", "tenant": "t", "attr": {"level": "x" * 180}}
    resources = [
        {"kind": "doc", "id": f"d{k}", "tenant": "t", "actions": ["read", "edit"]}
        for k in range(RESOURCES)
    ]
    return request_to_proto(principal, resources, request_id=str(i))


def serve_with_stalled_stdout(
    policies: Path, *args: str
) -> AbstractContextManager[tuple[Served, int]]:
    """`pdp serve` whose decision log is a pipe nobody reads (test_redteam16_log_queue's), with
    no decision cache and this test's byte budget."""
    flags = ("--decision-cache", "0", "--log-queue-bytes", str(QUEUE_BYTES))
    return _serve_with_stalled_stdout(*flags, *args, policies=policies)


def grpc_caller(port: int, n: int, sizes: list[int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        for i in range(n):
            reply = stub.Check(batch(i), timeout=120)
            assert reply.results[0].actions["read"].effect == pb.EFFECT_DENY
            sizes.append(reply.ByteSize())


def http_caller(port: int, n: int, sizes: list[int]) -> None:
    import http.client

    from google.protobuf import json_format

    body = json_format.MessageToJson(batch(0)).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(n):
            connection.request("POST", "/v1/check", body, {"Content-Type": "application/json"})
            reply = connection.getresponse()
            data = reply.read()
            assert reply.status == 200, data[:200]
            assert json.loads(data)["results"][0]["actions"]["read"]["effect"] == "EFFECT_DENY"
            sizes.append(len(data))
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("protocol", "writer"), [("grpc", "thread"), ("grpc", "process"), ("http", "thread")]
)
def test_large_replies_to_a_stalled_log_keep_memory_bounded(
    tmp_path: Path, protocol: str, writer: str
) -> None:
    # The request is small: under the 16 KiB from which requests alone used to count bytes.
    assert len(batch(0).SerializeToString()) < 16 * 1024
    (tmp_path / "doc.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    http_port = _free_port()
    flags = ["--telemetry-writer", writer, "--http-listen", f"127.0.0.1:{http_port}"]
    with serve_with_stalled_stdout(tmp_path, *flags) as (served, grpc_port):
        sizes: list[int] = []
        failures: list[BaseException] = []

        def caller(n: int) -> None:
            try:
                if protocol == "grpc":
                    grpc_caller(grpc_port, n, sizes)
                else:
                    http_caller(http_port, n, sizes)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=caller, args=(CALLS // CALLERS,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(900)
        assert failures == [], failures[:1]
        assert len(sizes) == CALLS and min(sizes) > 900_000  # every call decided, ~1 MB each
        peak = _peak_rss_mb(served.proc.pid)
        assert peak < MAX_PEAK_RSS_MB, f"pdp serve peaked at {peak} MB"


def test_the_queue_reads_a_decided_calls_reply_from_its_wire_item() -> None:
    item = wire.check_item("rpc", b"q" * 10, b"r" * 1000, "", "", "peer", "", (), 0.0, 0.0)
    assert intake._CHECK_ITEM == wire._CHECK
    assert intake.request_size(item) == 1010
    hit = wire.hit_item("rpc", b"k" * 10, b"b" * 1000, "d", "r", "t", "p", "", (), 0.0, 0.0)
    assert intake.request_size(hit) == 10  # the entry's shared reply is not counted per hit

"""`pdp serve --workers N` says SERVING only once every worker serves the same bundle.

The kernel deals each new connection to any worker (SO_REUSEPORT), so a SERVING answer from one
worker while another still loads its policies sends callers to a worker that answers
`UNAVAILABLE: no policies are active yet`. Here every call after the first SERVING, each on a
fresh connection (so spread over the workers), must be decided.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from server.conftest import ALICE, DOC, free_port, write_policies

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .serving import CHECK, health, pdp_serve, wait_serving

FRESH_CALLS = 250


@pytest.mark.parametrize("workers", [2, 3])
def test_serving_means_every_worker_serves(tmp_path: Path, workers: int) -> None:
    policies = write_policies(tmp_path)
    port = free_port()
    data = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None).SerializeToString()
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}"]
    with pdp_serve(*args, "--workers", str(workers)) as served:
        wait_serving(port, served)
        failed = []
        for _ in range(FRESH_CALLS):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                try:
                    reply = pb.CheckResponse.FromString(ch.unary_unary(CHECK)(data, timeout=30))
                    assert reply.results[0].actions["read"].effect == pb.EFFECT_ALLOW
                except grpc.RpcError as err:
                    failed.append(f"{err.code().name}: {err.details()}")
        assert failed == []
        # Any worker answers a health check on a new connection: all say SERVING now.
        statuses = {health(port, timeout=30) for _ in range(50)}
        assert statuses == {health_pb2.HealthCheckResponse.SERVING}
        served.wait_for(f"all {workers} workers serve")

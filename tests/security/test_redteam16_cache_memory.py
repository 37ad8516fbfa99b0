"""Distinct large requests cannot make the decision cache of a real `pdp serve` hold gigabytes.

The cache was bounded by entries only (10,000, "~1-4 KB each"), and any request up to 16 KiB
was cached. An explained batch of 315 resources x 2 actions is 15.7 KB and its answer 100 KB;
with the decoded request and response kept for the decision log an entry held ~0.85 MB, so a
caller sending distinct such requests (one principal id apart) grew the server by 0.85 MB per
call: 2.5 GB after 3,000, 8.5 GB at the cap. Now entries also count against a weight budget
(`DEFAULT_CACHE_BYTES`) and large ones evict each other; the answers stay right and the cache
still serves repeats.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from .real_pdp import pdp_serve

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: document
  tenancy: global
  actions:
    read: {}
    write: {}
  rules:
    - id: owner
      actions: [read, write]
      effect: allow
      condition: R.attr.owner == P.id && P.attr.level > 2
    - id: blocked
      actions: [write]
      effect: deny
      condition: P.attr.blocked == true
"""
CALLS = 600  # 0.5 GB of cache entries without a budget
MAX_PEAK_RSS_MB = 400  # about 250 MB with the budget, 550 MB without (measured here)


def _peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


def test_large_distinct_requests_keep_the_cache_bounded(tmp_path: Path) -> None:
    (tmp_path / "docs.yaml").write_text(POLICY)
    request = {
        "explain": True,
        "principal": {"id": "alice", "attr": {"level": 3, "blocked": False}},
        "resources": [
            {
                "kind": "document",
                "id": str(i),
                "attr": {"owner": "alice"},
                "actions": ["read", "write"],
            }
            for i in range(315)
        ],
    }
    message = json_format.ParseDict(request, pb.CheckRequest())
    assert len(message.SerializeToString()) < 16 * 1024  # a request the cache takes
    options = [("grpc.max_receive_message_length", 64 << 20)]
    with pdp_serve(tmp_path, "--otel", "off") as served:
        with grpc.insecure_channel(served.address, options=options) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            for i in range(CALLS):
                message.principal.id = f"user-{i}"  # every request distinct: no resource allowed
                reply = stub.Check(message, timeout=60)
                assert reply.results[0].actions["read"].effect == pb.EFFECT_DENY
            # Still a cache: alice's own batch, asked twice, is decided alike (allowed).
            message.principal.id = "alice"
            first, again = stub.Check(message, timeout=60), stub.Check(message, timeout=60)
            for reply in (first, again):
                assert {a.effect for r in reply.results for a in r.actions.values()} == {
                    pb.EFFECT_ALLOW
                }
            assert first.decision_id != again.decision_id
        peak = _peak_rss_mb(served.proc.pid)
    assert peak < MAX_PEAK_RSS_MB, f"pdp serve peaked at {peak} MB"

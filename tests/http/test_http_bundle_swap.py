"""HTTP answers from the same engine holder as gRPC: not ready before the first bundle, then
each hot-swapped bundle decides over both at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc
from authzen.support import Pdp, assert_error, pdp_serve

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))
from bundle_helpers import make_bundle, serve_bundles

SUBJECT = {"type": "user", "id": "u1", "properties": {"tenant": "t1", "roles": ["user"]}}
THING = {"type": "thing", "id": "r1", "properties": {"tenant": "t1"}}


def _allowed(pdp: Pdp) -> list[str]:
    reply = pdp.post("/access/v1/search/action", {"subject": SUBJECT, "resource": THING})
    assert reply.status == 200, reply.body
    return [r["name"] for r in reply.json["results"]]


def _wait_version(pdp: Pdp, version: str) -> None:
    deadline = time.monotonic() + 60
    while pdp.get("/v1/server-info").json.get("activeBundle", {}).get("version") != version:
        assert time.monotonic() < deadline, f"never served {version}"
        time.sleep(0.05)


def test_http_follows_the_active_bundle() -> None:
    with serve_bundles(b"") as source:
        flags = ["--bundle", source.url, "--poll-interval", "0.3", "--poll-jitter", "0.1"]
        with pdp_serve(*flags, wait_ready=False) as p:
            assert p.get("/readyz").status == 503
            body = {"subject": SUBJECT, "action": {"name": "a1"}, "resource": THING}
            assert_error(p.post("/access/v1/evaluation", body), 503)
            source.set(make_bundle(1))
            _wait_version(p, "1.0.0")
            assert p.get("/readyz").json["bundle"]["version"] == "1.0.0"
            assert _allowed(p) == ["a1"]
            assert p.post("/access/v1/evaluation", body).json["decision"] is True
            source.set(make_bundle(2))
            _wait_version(p, "2.0.0")
            assert _allowed(p) == ["a2"]
            assert p.post("/access/v1/evaluation", body).json["decision"] is False
            with grpc.insecure_channel(p.grpc_address) as ch:
                info = pb_grpc.DecisionServiceStub(ch).ServerInfo(
                    pb.ServerInfoRequest(), timeout=10
                )
            assert info.active_bundle.version == "2.0.0"

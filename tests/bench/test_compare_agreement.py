"""bench/compare.py's agreement step, small: every in-process engine decides like the floor.

pdp and the hand-written floor are always installed, so they always run; the peers (cedarpy,
regopy, casbin) come with the `bench` extra, which `make test` does not install, and are
skipped with that reason when absent.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_peers() -> None:
    """Import bench/peers as the package `peers` without putting bench/ (or bench/peers/, whose
    policy folder `pdp/` would shadow the real package) on sys.path for the whole test run."""
    if "peers" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "peers",
        ROOT / "bench/peers/__init__.py",
        submodule_search_locations=[str(ROOT / "bench/peers")],
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = module
    spec.loader.exec_module(module)


_load_peers()
from peers import inproc, workload  # noqa: E402

REQUESTS = [
    *workload.generate(40),
    *workload.generate(2, resources=20),
    workload.heavy(1),
    workload.heavy(20),
]

PEER_MODULES = {"cedar": "cedarpy", "rego": "regopy", "casbin": "casbin"}


def test_workload_covers_every_outcome() -> None:
    outcomes = {
        (action, allowed)
        for raw in REQUESTS
        for res in workload.floor_request(raw)
        for action, allowed in res.items()
    }
    assert outcomes == {(a, v) for a in workload.ACTIONS for v in (True, False)}


def test_floor_is_the_spec_on_edge_cases() -> None:
    p = {"id": "acme-u1", "tenant": "acme", "roles": ["viewer"], "scopes": list(workload.SCOPES)}
    doc = {"tenant": "acme", "attr": {"owner": "acme-u1", "classification": "confidential"}}
    decide = workload.floor_decide
    assert decide(p, doc, "delete", "10.255.0.1")
    assert not decide(p, doc, "delete", "172.32.0.1")  # just outside 172.16.0.0/12
    assert not decide(p, {**doc, "tenant": "globex"}, "read", "10.0.0.1")
    assert not decide({**p, "tenant": ""}, {**doc, "tenant": ""}, "read", "10.0.0.1")
    assert not decide({**p, "scopes": ["docs:read"]}, doc, "write", "10.0.0.1")
    other = {**doc, "attr": {"owner": "acme-u2", "classification": "confidential"}}
    assert not decide(p, other, "read", "10.0.0.1")  # viewers do not read confidential


@pytest.mark.parametrize("engine", ["pdp", "pdp-parse", "cedar", "rego", "casbin"])
def test_engine_agrees_with_floor(engine: str) -> None:
    if engine in PEER_MODULES:
        pytest.importorskip(PEER_MODULES[engine], reason="bench extra not installed")
    adapter = inproc.ALL[engine]()
    for raw in REQUESTS:
        native = adapter.prepare(raw)
        assert adapter.effects(native, adapter.run(native)) == workload.floor_request(raw), raw


def test_peer_payloads_encode_the_same_question() -> None:
    """The gRPC payloads carry every field the policies read (no server needed)."""
    from peers import grpcload

    raw = workload.heavy(20)
    from pdp.server._gen.pdp.v1 import decision_pb2

    msg = decision_pb2.CheckRequest.FromString(grpcload.pdp_payload(raw))
    assert msg.principal.tenant == "acme" and msg.context.ip == raw["context"]["ip"]
    assert [r.attr["owner"] for r in msg.resources] == [
        r["attr"]["owner"] for r in raw["resources"]
    ]
    if importlib.util.find_spec("cerbos") is None:
        pytest.skip("bench extra (cerbos protobufs) not installed")
    from cerbos.request.v1 import request_pb2

    cmsg = request_pb2.CheckResourcesRequest.FromString(grpcload.cerbos_payload(raw))
    assert cmsg.principal.attr["ip"].string_value == raw["context"]["ip"]
    assert [e.resource.attr["owner"].string_value for e in cmsg.resources] == [
        r["attr"]["owner"] for r in raw["resources"]
    ]

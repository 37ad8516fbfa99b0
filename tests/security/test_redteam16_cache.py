"""The decision cache across bundle swaps, raced: no decision made under a replaced bundle is
served to a call that started after the swap.

Callers on a real gRPC server send one request, byte for byte, over and over, while the bundle
is swapped back and forth between one that allows it and one that denies it (each decision
takes a while, so calls are in flight under the old engine at every swap and store their
answers after it). Every answer must be one a single bundle made (its version and its effect
agree), and a call started after swap k completed must be answered by bundle k or a later one.
The cache is on and hit, or the test would prove nothing.
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import grpc
from google.protobuf import json_format

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.decision import BundleInfo
from pdp.model.loader import load_policy_dir
from pdp.server import ServerConfig, build_server
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

# Odd versions allow, even versions deny; both scan the whole list, so a decision takes long
# enough (about a millisecond) for calls to be in flight at each swap.
POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: document
  tenancy: global
  actions:
    read: {}
  rules:
    - id: scan
      actions: [read]
      effect: allow
      condition: P.attr.items.filter(x, x.startsWith("a")).size() OP 0
"""
VERSIONS = 8
CALLERS = 6
CALLS_PER_BUNDLE = 40
WAIT_CAP_S = 120.0  # a cap on waiting for calls to be answered, not a measured duration
REQUEST = {
    "request_id": "same-every-time",
    "principal": {"id": "alice", "attr": {"items": ["a"] * 1500}},
    "resources": [{"kind": "document", "id": "d1", "actions": ["read"]}],
}


def _engine(root: Path, version: int) -> Engine:
    folder = root / str(version)
    folder.mkdir()
    op = ">" if version % 2 else "=="
    (folder / "p.yaml").write_text(textwrap.dedent(POLICY).lstrip().replace("OP", op))
    return Engine(
        compile_policy_set(load_policy_dir(folder)), BundleInfo("race", str(version), str(version))
    )


def test_no_decision_of_a_replaced_bundle_is_served_after_the_swap(tmp_path: Path) -> None:
    engines = [_engine(tmp_path, v) for v in range(1, VERSIONS + 1)]
    holder = EngineHolder(engines[0])
    server = build_server(holder, ServerConfig(listen=("127.0.0.1:0",), threads=CALLERS + 2))
    server.start()
    message = json_format.ParseDict(REQUEST, pb.CheckRequest())
    assert len(message.SerializeToString()) < 16 * 1024  # small enough to be cached
    answers: list[tuple[float, str, int]] = []  # (monotonic start, bundle version, effect)
    failures: list[BaseException] = []
    answered = threading.Condition()
    stop = threading.Event()

    def caller() -> None:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                while not stop.is_set():
                    started = time.monotonic()
                    reply = stub.Check(message, timeout=30)
                    effect = reply.results[0].actions["read"].effect
                    with answered:
                        answers.append((started, reply.bundle.version, effect))
                        answered.notify_all()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
            with answered:
                answered.notify_all()

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + WAIT_CAP_S
        with answered:
            while len(answers) < count and not failures:
                assert time.monotonic() < deadline, f"only {len(answers)} answers"
                answered.wait(1.0)

    swapped_at = [0.0]  # swapped_at[k - 1]: when bundle k was active (monotonic)
    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    try:
        for t in threads:
            t.start()
        for version in range(2, VERSIONS + 1):
            wait_for(len(answers) + CALLS_PER_BUNDLE)
            holder.swap(engines[version - 1])
            swapped_at.append(time.monotonic())
        wait_for(len(answers) + CALLS_PER_BUNDLE)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        server.stop(0)
    assert failures == []
    for started, version, effect in answers:
        v = int(version)
        assert effect == (pb.EFFECT_ALLOW if v % 2 else pb.EFFECT_DENY), (version, effect)
        active = max(k for k, at in enumerate(swapped_at, 1) if at <= started)
        assert v >= active, f"a call started under bundle {active} was answered by bundle {v}"
    cache = server.decision_cache
    assert cache is not None and cache.hits > VERSIONS

"""`--limits-store memory` with several workers: one set of buckets in the supervisor, so N
workers never admit N times a limit; a worker cut off from it fails as for a lost Redis."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest

from pdp.client._convert import request_to_proto
from pdp.engine.counters import CounterStoreError, Take
from pdp.limits.supervised import CounterServer, SupervisedCounters
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from ._procs import start_pdp, stop
from .conftest import LIMITED, write_policies

CHECK = "/pdp.v1.DecisionService/Check"


def worker(server: CounterServer, timeout: float = 10.0) -> SupervisedCounters:
    channel = server.connect()
    return SupervisedCounters(channel.detach(), timeout=timeout)


def test_workers_share_one_bucket_all_or_nothing() -> None:
    server = CounterServer()
    a, b = worker(server), worker(server)
    five = Take("k", capacity=5, rate=1e-9, cost=1)
    other = Take("o", capacity=1, rate=1e-9, cost=1)
    granted = [c.take([five], 0.0).granted for c in [a, b] * 5]
    assert granted.count(True) == 5 and granted[:5] == [True] * 5
    # All or nothing across workers: `o` is not taken by a take that `k` refuses.
    assert not a.take([other, five], 0.0).granted
    assert b.take([other], 0.0).granted
    a.close()
    b.close()


def test_concurrent_takes_never_overshoot() -> None:
    server = CounterServer()
    clients = [worker(server) for _ in range(4)]
    take = [Take("shared", capacity=50, rate=1e-9, cost=1)]
    results: list[bool] = []
    lock = threading.Lock()

    def run(c: SupervisedCounters) -> None:
        for _ in range(40):
            ok = c.take(take, 0.0).granted
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(results) == Counter({True: 50, False: 270})


def test_a_gone_supervisor_is_a_store_error() -> None:
    ours, theirs = socket.socketpair()
    counters = SupervisedCounters(theirs.detach(), timeout=10)
    ours.close()
    with pytest.raises(CounterStoreError):
        counters.take([Take("k", 1, 1, 1)], 0.0)


def test_a_silent_supervisor_is_a_store_error() -> None:
    ours, theirs = socket.socketpair()
    counters = SupervisedCounters(theirs.detach(), timeout=0.2)
    with pytest.raises(CounterStoreError):
        counters.take([Take("k", 1, 1, 1)], 0.0)
    ours.close()


@pytest.mark.parametrize(
    "answer",
    [b"nonsense\n", b"[1, true]\n", b'[1, "bad request"]\n', b"[1, true, [1.0, 2.0], -1, 0]\n"],
)
def test_a_garbled_answer_is_a_store_error_not_a_grant(answer: bytes) -> None:
    ours, theirs = socket.socketpair()
    counters = SupervisedCounters(theirs.detach(), timeout=10)
    replier = threading.Thread(target=lambda: (ours.recv(65536), ours.sendall(answer)))
    replier.start()
    with pytest.raises(CounterStoreError):
        counters.take([Take("k", 1, 1, 1)], 0.0)
    replier.join(10)
    ours.close()


def test_a_late_answer_is_skipped_by_its_sequence_number() -> None:
    ours, theirs = socket.socketpair()
    counters = SupervisedCounters(theirs.detach(), timeout=10)

    def reply() -> None:
        seq = json.loads(ours.recv(65536))[0]
        # An answer to an earlier take first (that one timed out), then the real one.
        ours.sendall(json.dumps([seq - 1, True, [9.0], -1, 0]).encode() + b"\n")
        ours.sendall(json.dumps([seq, False, [0.0], 0, 2.5]).encode() + b"\n")

    replier = threading.Thread(target=reply)
    replier.start()
    outcome = counters.take([Take("k", 1, 1, 1)], 0.0)
    replier.join(10)
    assert not outcome.granted and outcome.retry_after == 2.5
    ours.close()


@pytest.mark.parametrize(
    "request_line",
    [b"{}\n", b'[1, [["k", 1, 1, "NaN"]]]\n', b'[1, [["k", 1]]]\n', b"[1, 7]\n"],
)
def test_the_supervisor_answers_a_bad_request_and_keeps_serving(request_line: bytes) -> None:
    server = CounterServer()
    raw = server.connect()
    raw.sendall(request_line)
    assert b"bad request" in raw.recv(65536)
    good = SupervisedCounters(raw.detach(), timeout=10)
    assert good.take([Take("k", 1, 1, 1)], 0.0).granted


def test_two_workers_hold_one_limit(tmp_path: Path) -> None:
    """A real `pdp serve --workers 2` (memory store): 20 reads by one user on 4 connections,
    dealt to both workers, admit exactly the 5 a day the policy allows."""
    policies = write_policies(tmp_path / "policies", LIMITED)
    log = tmp_path / "decisions.jsonl"
    proc, port = start_pdp(
        policies, tmp_path / "pdp.log", "--workers", "2", "--decision-cache", "0",
        "--decision-log", str(log),
    )  # fmt: skip
    principal = {"id": "gwen", "tenant": "acme", "roles": ["member"]}
    note = {"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}
    data = request_to_proto(principal, [note], None).SerializeToString()
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(4)
    ]
    effects: Counter[int] = Counter()
    try:
        for _ in range(5):
            for ch in channels:
                reply = pb.CheckResponse.FromString(ch.unary_unary(CHECK)(data, timeout=30))
                effects[reply.results[0].actions["read"].effect] += 1
    finally:
        for ch in channels:
            ch.close()
        stop(proc)
    assert effects == Counter({pb.EFFECT_ALLOW: 5, pb.EFFECT_DENY: 15})
    files = [p for p in tmp_path.glob("decisions*.jsonl") if p.read_text().strip()]
    assert len(files) == 2, "both workers decided some of the calls"
    lines = [line for p in files for line in p.read_text().splitlines()]
    assert len(lines) == 20
    assert sum("rate_limited" in line for line in lines) == 15

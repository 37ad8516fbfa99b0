"""A Redis that hangs (stopped, not gone: connections open, no answers) mid-traffic, under a
real `pdp serve --limits-store redis://...`: every call is still answered within its deadline,
fail-closed limits deny `rate_limit_unavailable`, fail-open ones allow, and once Redis answers
again limits are enforced again. tests/limits/test_replicas.py kills Redis; a hung one is what
a network partition or a paused VM looks like, and it must not hold decisions hostage.

A take whose reply timed out was sent, so a Redis that resumes runs it then; the script
takes nothing once the take's deadline has passed on Redis's clock
(test_weak17_redis_deadline.py pins it). Here Redis resumes right after the last hung call,
within that deadline's slack, so kim may still be charged for it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from tests.limits._procs import start_redis, stop
from tests.limits.conftest import LIMITED, write_policies

from .real_pdp import Served, pdp_serve

DEADLINE_S = 20.0  # a generous cap on each call, not a measured duration
READS_PER_DAY = 5  # per-user-reads in LIMITED


def _call(served: Served, pid: str, action: str, ip: str = "") -> tuple[int, list[str]]:
    request = {
        "principal": {"id": pid, "tenant": "acme", "roles": ["member"]},
        "resources": [{"kind": "note", "id": "n1", "tenant": "acme", "actions": [action]}],
        "context": {"ip": ip} if ip else {},
    }
    reply = served.check(json_format.ParseDict(request, pb.CheckRequest()), timeout=DEADLINE_S)
    d = reply.results[0].actions[action]
    return d.effect, list(d.reasons)


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[tuple[object, str]]:
    proc, url = start_redis(tmp_path)
    try:
        yield proc, url
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process does not handle SIGTERM
        stop(proc)


def test_a_hung_redis_fails_closed_and_recovers(tmp_path: Path, redis_proc: tuple) -> None:
    proc, url = redis_proc
    policies = write_policies(tmp_path / "policies", LIMITED)
    flags = ("--limits-store", url, "--otel", "off", "--decision-cache", "0")
    with pdp_serve(policies, *flags) as served:
        assert _call(served, "kim", "read") == (pb.EFFECT_ALLOW, [])
        os.kill(proc.pid, signal.SIGSTOP)
        for _ in range(3):
            assert _call(served, "kim", "read") == (pb.EFFECT_DENY, ["rate_limit_unavailable"])
            # per-ip-archive says `onStoreError: allow`.
            assert _call(served, "kim", "archive", ip="10.0.0.9") == (pb.EFFECT_ALLOW, [])
        os.kill(proc.pid, signal.SIGCONT)
        # Enforced again, on a principal the hang did not touch: five reads, then the limit.
        for _ in range(READS_PER_DAY):
            assert _call(served, "lee", "read") == (pb.EFFECT_ALLOW, [])
        assert _call(served, "lee", "read") == (pb.EFFECT_DENY, ["rate_limited"])
        # kim: one read before the hang, at most the three hung ones charged late.
        assert _call(served, "kim", "read")[1] in ([], ["rate_limited"])
        assert served.proc.poll() is None
    log = "".join(served.log)
    assert "Traceback" not in log, log[-2000:]
    assert log.count("rate-limit counters unavailable") == 1  # once per cause per interval

"""A take that timed out against a hung Redis charges nothing when Redis resumes.

A stopped Redis (SIGSTOP: connections open, no answers) holds the takes pdp sent; pdp gives
up after its socket timeout and the call is denied `rate_limit_unavailable` (or allowed, for
`onStoreError: allow`). When Redis resumed it ran the queued script and charged the bucket for a
call that had been answered without it. Each take now carries a deadline on Redis's clock
(pdp/limits/redis.py), and a take that runs past it takes nothing. Against a real
redis-server; the waits before resuming are preconditions (Redis resumes well past the
deadline), the assertions are on the buckets.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from google.protobuf import json_format

from pdp.engine.counters import CounterStoreError, Take
from pdp.limits.redis import DEADLINE_SLACK_S, KEY_PREFIX, SOCKET_TIMEOUT_S, RedisCounters
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from tests.limits._procs import start_redis, stop
from tests.limits.conftest import LIMITED, write_policies

from .real_pdp import Served, pdp_serve

# Redis stays stopped this long after the last take was sent: far past its deadline.
PAST_DEADLINE_S = 4 * (SOCKET_TIMEOUT_S + DEADLINE_SLACK_S)
CAP_S = 30.0  # a cap on waiting for Redis to run what it holds, not a measured duration
DAY = 86400.0


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[tuple[object, str]]:
    proc, url = start_redis(tmp_path)
    try:
        yield proc, url
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process does not handle SIGTERM
        stop(proc)


def _scripts_run(observer: redis.Redis) -> int:
    """How many EVALSHA calls Redis has executed (`INFO commandstats`)."""
    return int(observer.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def _resume_and_drain(proc: object, observer: redis.Redis, sent: float, expected: int) -> None:
    """Resume Redis once the last take is far past its deadline, and wait until it has run
    the `expected` scripts it held."""
    time.sleep(max(0.0, sent + PAST_DEADLINE_S - time.monotonic()))
    os.kill(proc.pid, signal.SIGCONT)  # type: ignore[attr-defined]
    cap = time.monotonic() + CAP_S
    while _scripts_run(observer) < expected:
        assert time.monotonic() < cap, "redis never ran the takes it held"
        time.sleep(0.05)


def test_a_take_that_timed_out_is_not_charged_when_redis_resumes(
    redis_proc: tuple[object, str],
) -> None:
    proc, url = redis_proc
    counters = RedisCounters.from_url(url)
    observer = redis.Redis.from_url(url, socket_timeout=CAP_S)
    bucket = Take("hung", capacity=5, rate=5 / DAY, cost=1)
    try:
        assert counters.take([Take("warm", 5, 5 / DAY, 1)], 0.0).granted  # loads the script
        before = _scripts_run(observer)
        os.kill(proc.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
        sent = time.monotonic()
        with pytest.raises(CounterStoreError):
            counters.take([bucket], 0.0)
        _resume_and_drain(proc, observer, sent, before + 1)
        assert observer.exists(KEY_PREFIX + "hung") == 0  # never written: nothing charged
        after = counters.take([bucket], 0.0)
        assert after.granted and after.remaining == (4.0,)  # the full bucket, less this take
    finally:
        counters.close()
        observer.close()


def test_a_stale_estimate_of_redis_clock_costs_one_resend_not_a_deny(
    redis_proc: tuple[object, str],
) -> None:
    """As if Redis's clock had stepped a minute forward since the last reply: the first send
    is expired by Redis (nothing taken), the reply teaches the new offset, and the resend is
    charged once."""
    _, url = redis_proc
    counters = RedisCounters.from_url(url)
    observer = redis.Redis.from_url(url, socket_timeout=CAP_S)
    bucket = Take("stepped", capacity=5, rate=5 / DAY, cost=1)
    try:
        assert counters.take([Take("warm", 5, 5 / DAY, 1)], 0.0).granted
        before = _scripts_run(observer)
        counters._offset_ms -= 60_000  # type: ignore[operator]  # the estimate, a minute behind
        outcome = counters.take([bucket], 0.0)
        assert outcome.granted and outcome.remaining == (4.0,)
        assert _scripts_run(observer) == before + 2  # expired once, then taken
        assert float(observer.hget(KEY_PREFIX + "stepped", "tok")) == 4.0  # charged once
    finally:
        counters.close()
        observer.close()


def _read(served: Served, pid: str) -> tuple[int, list[str]]:
    request = {
        "principal": {"id": pid, "tenant": "acme", "roles": ["member"]},
        "resources": [{"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}],
    }
    reply = served.check(json_format.ParseDict(request, pb.CheckRequest()), timeout=CAP_S)
    d = reply.results[0].actions["read"]
    return d.effect, list(d.reasons)


def test_reads_denied_while_redis_hung_take_no_quota(
    tmp_path: Path, redis_proc: tuple[object, str]
) -> None:
    """Through `pdp serve --limits-store`: per-user-reads allows 5 a day. One read, three
    denied `rate_limit_unavailable` while Redis is stopped; after it resumes (and has run
    the take it held), exactly four more reads are allowed."""
    proc, url = redis_proc
    policies = write_policies(tmp_path / "policies", LIMITED)
    observer = redis.Redis.from_url(url, socket_timeout=CAP_S)
    flags = ("--limits-store", url, "--otel", "off", "--decision-cache", "0")
    try:
        with pdp_serve(policies, *flags) as served:
            assert _read(served, "kim") == (pb.EFFECT_ALLOW, [])
            before = _scripts_run(observer)
            os.kill(proc.pid, signal.SIGSTOP)  # type: ignore[attr-defined]
            for _ in range(3):
                sent = time.monotonic()
                assert _read(served, "kim") == (pb.EFFECT_DENY, ["rate_limit_unavailable"])
            # The first held take went out on the connection the warm read left open; the
            # next two opened new connections, whose handshake (HELLO) timed out before the
            # take was sent. So Redis holds one take (at least: the test only needs one).
            _resume_and_drain(proc, observer, sent, before + 1)
            reads = [_read(served, "kim") for _ in range(5)]
            assert reads == [(pb.EFFECT_ALLOW, [])] * 4 + [(pb.EFFECT_DENY, ["rate_limited"])]
    finally:
        observer.close()

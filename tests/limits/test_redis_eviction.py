"""A Redis that may evict rate-limit buckets is named at start: an evicted bucket comes back
full, refilling a spent quota (`maxmemory-policy allkeys-lru`, or `volatile-*`, since every
bucket has a TTL). pdp reads the policy with CONFIG GET and warns; where CONFIG is renamed or
denied it says it could not check; it never fails start-up on it unless the operator asked
(`--limits-require-noeviction`). Real redis-servers on loopback ports."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pdp.engine.counters import Take
from pdp.limits.redis import EVICTS, SAFE, UNKNOWN, UNREACHABLE, RedisCounters

from ._procs import free_port, start_pdp, start_redis, stop

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def lru_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(
        tmp_path_factory.mktemp("lru"), "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"
    )
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def noeviction_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("noev"), "--maxmemory-policy", "noeviction")
    try:
        yield url
    finally:
        stop(proc)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_evicting_policy_is_a_warning_naming_the_risk_and_the_fix(
    lru_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    counters = RedisCounters.from_url(lru_url)
    try:
        with caplog.at_level(logging.INFO, logger="pdp.limits"):
            outcome, message = counters.check_eviction()
    finally:
        counters.close()
    assert outcome == EVICTS
    assert _warnings(caplog) == [message]
    assert "`allkeys-lru`" in message and "maxmemory 67108864" in message
    assert "comes back full" in message
    assert "maxmemory-policy noeviction" in message and "instance of its own" in message


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl", "allkeys-random"])
def test_every_policy_but_noeviction_evicts_buckets(
    tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    # volatile-*: every bucket has a TTL (it expires once full again), so each may go.
    proc, url = start_redis(tmp_path, "--maxmemory-policy", policy)
    counters = RedisCounters.from_url(url)
    try:
        outcome, message = counters.check_eviction()
    finally:
        counters.close()
        stop(proc)
    assert outcome == EVICTS and f"`{policy}`" in message
    assert "no limit yet" in message  # maxmemory 0: it evicts once someone sets one


def test_noeviction_is_quiet(noeviction_url: str, caplog: pytest.LogCaptureFixture) -> None:
    counters = RedisCounters.from_url(noeviction_url)
    try:
        with caplog.at_level(logging.INFO, logger="pdp.limits"):
            assert counters.check_eviction()[0] == SAFE
    finally:
        counters.close()
    assert _warnings(caplog) == []


def test_a_disabled_config_command_is_reported_and_takes_still_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc, url = start_redis(tmp_path, "--rename-command", "CONFIG", "")
    counters = RedisCounters.from_url(url)
    try:
        with caplog.at_level(logging.INFO, logger="pdp.limits"):
            outcome, message = counters.check_eviction()
        assert counters.take([Take("p/l:k", 1, 1.0, 1)], 0.0).granted
    finally:
        counters.close()
        stop(proc)
    assert outcome == UNKNOWN
    assert "could not check" in message and "CONFIG GET refused" in message
    assert _warnings(caplog) == [message]


def test_a_redis_back_after_failing_is_checked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Unreachable at start: no error, and the check runs once Redis answers a take."""
    port = free_port()
    counters = RedisCounters.from_url(f"redis://127.0.0.1:{port}/0")
    proc = None
    try:
        with caplog.at_level(logging.INFO, logger="pdp.limits"):
            assert counters.check_eviction()[0] == UNREACHABLE
            proc, _url = start_redis(tmp_path, "--maxmemory-policy", "allkeys-lfu", port=port)
            assert counters.take([Take("p/l:k", 1, 1.0, 1)], 0.0).granted
            deadline = time.monotonic() + 30  # the check runs on a thread of its own
            while not any("`allkeys-lfu`" in m for m in _warnings(caplog)):
                assert time.monotonic() < deadline, _warnings(caplog)
                time.sleep(0.05)
    finally:
        counters.close()
        if proc is not None:
            stop(proc)


def test_serve_refuses_an_evicting_redis_only_when_asked(lru_url: str, tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(POLICIES),
         "--listen", f"127.0.0.1:{free_port()}", "--otel", "off", "--limits-store", lru_url,
         "--limits-require-noeviction"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "error: --limits-require-noeviction: Redis maxmemory-policy is `allkeys-lru`" in (
        refused.stderr
    ), refused.stderr[-2000:]
    # Without the flag: the warning, and a server that serves.
    log = tmp_path / "serve.log"
    proc, _port = start_pdp(POLICIES, log, "--limits-store", lru_url)
    try:
        text = log.read_text()
        assert "WARNING pdp.limits" in text and "`allkeys-lru`" in text, text[-2000:]
    finally:
        stop(proc)
    assert redis.Redis.from_url(lru_url).ping()


def test_serve_workers_check_a_redis_that_was_down_at_start(tmp_path: Path) -> None:
    """`pdp serve --workers 2` started while Redis is down: each worker checks the policy
    once Redis answers one of its takes (the supervisor's check could not tell), and warns."""
    from pdp.client import Client

    from .conftest import LIMITED, write_policies

    redis_port = free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    policies = write_policies(tmp_path / "policies", LIMITED)
    log = tmp_path / "serve.log"
    proc, port = start_pdp(policies, log, "--limits-store", url, "--workers", "2")
    redis_proc = None
    try:
        assert "could not check Redis's maxmemory-policy" in log.read_text()
        redis_proc, _url = start_redis(
            tmp_path, "--maxmemory-policy", "allkeys-lfu", port=redis_port
        )
        principal = {"id": "dora", "tenant": "acme", "roles": ["member"]}
        note = {"kind": "note", "id": "n1", "tenant": "acme", "actions": ["read"]}
        deadline = time.monotonic() + 60
        with Client(f"127.0.0.1:{port}", timeout=10) as client:
            while "`allkeys-lfu`" not in (text := log.read_text()):
                assert time.monotonic() < deadline, text[-3000:]
                client.check({**principal, "id": f"u{time.monotonic_ns()}"}, [note])
                time.sleep(0.1)
        assert "WARNING pdp.limits" in text.split("`allkeys-lfu`")[0].rsplit("\n", 1)[-1]
    finally:
        stop(proc)
        if redis_proc is not None:
            stop(redis_proc)

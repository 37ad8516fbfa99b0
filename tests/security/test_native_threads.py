"""The native transport's decision threads (`--threads`) against a slow rate-limit store.

A real redis-server, stopped (SIGSTOP: connections open, no answers), holds the take of a
rate-limit call; pdp waits for it (its socket timeout raised for the test, so the call stays
stuck until Redis resumes). With one decision thread, every other call waited behind it;
with several, other calls are answered meanwhile, and --max-concurrent-rpcs still bounds the
calls outstanding (the stuck ones count). No duration is asserted: each wait has a cap.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import pdp.limits.redis as redis_store
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway.ratelimit import SERVICE_NAME, rate_limit_registrar
from pdp.model.loader import load_policy_dir
from pdp.server import ServerConfig
from tests.limits._procs import start_redis, stop
from tests.limits.conftest import LIMITED, write_policies

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native.server import NativeServer

CAP_S = 60.0  # a cap on every wait, not a measured duration
OK = rls.RateLimitResponse.OK
SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    proc, url = start_redis(tmp_path)
    try:
        yield proc, url
    finally:
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process does not handle SIGTERM
        stop(proc)


def _descriptor(user: str, action: str = "read") -> bytes:
    message = rls.RateLimitRequest(domain="pdp")
    d = message.descriptors.add()
    for key, value in (("kind", "note"), ("action", action), ("principal.id", user)):
        d.entries.add(key=key, value=value)
    return message.SerializeToString()


def test_a_decision_stuck_in_a_slow_store_holds_up_no_other_call(
    redis_proc: tuple[Any, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, url = redis_proc
    monkeypatch.setattr(redis_store, "SOCKET_TIMEOUT_S", 2 * CAP_S)  # stuck until resumed
    counters = redis_store.RedisCounters.from_url(url)
    entered = threading.Semaphore(0)  # released by each take as it goes to Redis
    take = counters.take

    def spying(*args: Any, **kwargs: Any) -> Any:
        entered.release()
        return take(*args, **kwargs)

    counters.take = spying  # type: ignore[method-assign]
    holder = EngineHolder(counters=counters)
    holder.swap(Engine(compile_policy_set(load_policy_dir(write_policies(tmp_path, LIMITED)))))
    config = ServerConfig(listen=("127.0.0.1:0",), threads=3, max_concurrent_rpcs=2)
    server = NativeServer(holder, config, extra_services=[rate_limit_registrar(holder)])
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        should = channel.unary_unary(
            f"/{SERVICE_NAME}/ShouldRateLimit",
            response_deserializer=rls.RateLimitResponse.FromString,
        )
        health = health_pb2_grpc.HealthStub(channel).Check
        assert should(_descriptor("warm"), timeout=CAP_S).overall_code == OK  # loads the script
        assert entered.acquire(timeout=0)
        os.kill(proc.pid, signal.SIGSTOP)
        stuck = should.future(_descriptor("kim"), timeout=2 * CAP_S)
        assert entered.acquire(timeout=CAP_S), "the take never started"
        # One decision thread is held by Redis; the others answer.
        assert health(health_pb2.HealthCheckRequest(), timeout=CAP_S).status == SERVING
        unlimited = should(_descriptor("kim", action="nothing"), timeout=CAP_S)
        assert unlimited.overall_code == OK and not stuck.done()
        # A second stuck call: two outstanding, as many as --max-concurrent-rpcs allows.
        second = should.future(_descriptor("lee"), timeout=2 * CAP_S)
        assert entered.acquire(timeout=CAP_S), "the second take never started"
        with pytest.raises(grpc.RpcError) as refused:
            health(health_pb2.HealthCheckRequest(), timeout=CAP_S)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-concurrent-rpcs" in (refused.value.details() or "")
        assert not stuck.done() and not second.done()
        os.kill(proc.pid, signal.SIGCONT)
        assert stuck.result(timeout=CAP_S).overall_code == OK
        assert second.result(timeout=CAP_S).overall_code == OK
        assert health(health_pb2.HealthCheckRequest(), timeout=CAP_S).status == SERVING
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        channel.close()
        server.stop(0)
        counters.close()

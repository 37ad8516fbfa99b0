"""Two takes of one bucket in one call (two descriptors of one Envoy call that name the same
limit and key) against a real ShouldRateLimit server, and against Redis: each take counts.
Both stores checked every take against the bucket's level before the call and wrote the
level after the last one, so two descriptors cost what one does and a bucket of 5 gave 3 + 3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pdp.engine.counters import MemoryCounters, Take
from pdp.gateway._gen.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from pdp.limits.redis import RedisCounters
from tests.limits.conftest import LIMITED, redis_url, rls_stub, write_policies

__all__ = ["redis_url"]  # the fixture, imported for this module

OK, OVER = rls.RateLimitResponse.OK, rls.RateLimitResponse.OVER_LIMIT
SLOW = 1e-9  # units per second: no refill within a test


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rls_grpc.RateLimitServiceStub]:
    root = write_policies(tmp_path_factory.mktemp("rls-dup"), dict(LIMITED))
    with rls_stub(root) as stub:
        yield stub


def _reads(user: str) -> rl.RateLimitDescriptor:
    entries = {"kind": "note", "action": "read", "principal.id": user}
    return rl.RateLimitDescriptor(
        entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries.items()]
    )


def test_two_descriptors_of_one_bucket_take_twice(stub: rls_grpc.RateLimitServiceStub) -> None:
    # per-user-reads: 5 a day. Two reads per call: two calls, then the third lacks one unit.
    def call(n: int) -> int:
        request = rls.RateLimitRequest(domain="pdp", descriptors=[_reads("dup-user")] * n)
        return stub.ShouldRateLimit(request, timeout=10).overall_code

    assert [call(2), call(2), call(2)] == [OK, OK, OVER]
    assert [call(1), call(1)] == [OK, OVER]  # the refused call took nothing: one unit was left


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_store_counts_every_take_of_a_bucket(store: str, request: pytest.FixtureRequest) -> None:
    if store == "memory":
        counters: MemoryCounters | RedisCounters = MemoryCounters()
    else:
        counters = RedisCounters.from_url(request.getfixturevalue("redis_url"))
    three = Take(f"dup-{store}", 5, SLOW, 3)
    refused = counters.take([three, three], 0.0)
    assert not refused.granted and refused.refused == 1  # 3 + 3 from a bucket of 5
    one = Take(f"dup-{store}", 5, SLOW, 1)
    granted = counters.take([one, one, one], 0.0)
    assert granted.granted
    assert [round(r) for r in granted.remaining] == [4, 3, 2]
    assert not counters.take([three], 0.0).granted  # 2 left: the refused 3 + 3 took nothing
    assert counters.take([one, one], 0.0).granted
    assert not counters.take([one], 0.0).granted

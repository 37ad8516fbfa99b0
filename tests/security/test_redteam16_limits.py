"""A caller-chosen rate-limit cost cannot fail a call: a real `pdp serve`, memory and Redis stores.

A limit's `cost` is often the caller's own number (`cost: context.attr.units`, tokens a model
call will use). A cost of 1e20 is refused (`rate_limited`: no bucket holds it), but the wait it
implies (1e20 units at 10 a day) is 8.6e23 seconds, which no field of the reply holds
(`retry_after_seconds` is a uint32): the call failed with INTERNAL over gRPC and 500 over HTTP,
and every one wrote a traceback to the server's log. Now the wait is capped (`MAX_WAIT_S`, 136
years: never), the deny is answered, and the log stays clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from pdp.engine.limits import MAX_WAIT_S
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from tests.limits._procs import start_redis, stop
from tests.limits.conftest import LIMITED, write_policies

from .real_pdp import pdp_serve

# tests/ on the path for the shared HTTP server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import pdp_serve as pdp_serve_http

# Costs no bucket of 10 can hold, up to the largest double (whose wait is infinite).
HUGE_COSTS = [1e20, 2**63, 9007199254740993, 1.7976931348623157e308]


def _write(units: float | int, tenant: str) -> dict:
    return {
        "principal": {"id": "u", "tenant": tenant, "roles": ["member"]},
        "resources": [{"kind": "note", "id": "n", "tenant": tenant, "actions": ["write"]}],
        "context": {"attr": {"units": units}},
    }


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies(tmp_path_factory.mktemp("limits") / "policies", LIMITED)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop(proc)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_huge_cost_is_a_rate_limited_deny_over_grpc(
    policies: Path, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_url") if store == "redis" else "memory"
    with pdp_serve(policies, "--limits-store", url, "--otel", "off") as served:
        for i, units in enumerate(HUGE_COSTS):
            msg = json_format.ParseDict(_write(units, f"t{i}"), pb.CheckRequest())
            d = served.check(msg).results[0].actions["write"]
            assert d.effect == pb.EFFECT_DENY and list(d.reasons) == ["rate_limited"], units
            (status,) = d.limits
            assert status.exceeded and status.retry_after_seconds == MAX_WAIT_S
            assert status.remaining == 10  # a refused take takes nothing
        # The bucket is untouched: an ordinary cost is still granted.
        ok = served.check(json_format.ParseDict(_write(3, "t0"), pb.CheckRequest()))
        assert ok.results[0].actions["write"].effect == pb.EFFECT_ALLOW
    log = "".join(served.log)
    assert "Traceback" not in log and "internal error" not in log, log[-2000:]


def test_a_huge_cost_is_a_rate_limited_deny_over_http(policies: Path) -> None:
    with pdp_serve_http("--otel", "off", policies=policies) as pdp:
        for i, units in enumerate(HUGE_COSTS):
            reply = pdp.post("/v1/check", _write(units, f"h{i}"))
            assert reply.status == 200, (reply.status, reply.body[:300])
            d = reply.json["results"][0]["actions"]["write"]
            assert d["effect"] == "EFFECT_DENY" and d["reasons"] == ["rate_limited"], units
            assert d["limits"][0]["retryAfterSeconds"] == MAX_WAIT_S
    assert "Traceback" not in "".join(pdp.stderr)

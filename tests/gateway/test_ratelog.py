"""Caller-triggered log lines: one per cause per interval, with a count of the suppressed."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from pdp.ratelog import MAX_CAUSES, RateLimitedLog, printable

from ._support import MAPPING


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_cause_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.ratelog"):
        assert rl.log(logging.WARNING, "a", "first a")
        assert rl.log(logging.WARNING, "b", "first b")
        assert not any(rl.log(logging.WARNING, "a", "again a") for _ in range(7))
        clock.now += 9.9
        assert not rl.log(logging.WARNING, "a", "still a")
        clock.now += 0.2
        assert rl.log(logging.WARNING, "a", "later a")
        assert not rl.log(logging.WARNING, "a", "x")
    assert [r.getMessage() for r in caplog.records] == [
        "first a",
        "first b",
        "later a (8 more like it suppressed in the last 10 s)",
    ]


def test_causes_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(logging.getLogger("t.ratelog2"), interval=60, clock=Clock())
    with caplog.at_level(logging.INFO, logger="t.ratelog2"):
        logged = sum(rl.log(logging.WARNING, f"c{i}", "m") for i in range(MAX_CAUSES + 50))
    # Past the cap, new causes share one `other` cause: logged once, then suppressed.
    assert logged == MAX_CAUSES + 1


def test_printable() -> None:
    assert printable("a\r\nb\x00c") == "a??b?c"
    assert printable("x" * 500).endswith("…") and len(printable("x" * 500)) == 201


class _FailingEngine:
    policy_set = SimpleNamespace(data={}, route_mapping=MAPPING, route_mapping_file="m.yaml")

    def check(self, request):
        raise RuntimeError("boom\nforged line")


class _Holder:
    def require(self):
        return _FailingEngine()


def test_internal_errors_are_rate_limited_with_one_traceback(caplog):
    from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
    from pdp.gateway.servicer import ExtAuthzServicer, GatewayOptions, GatewayResolver

    from ._support import Keys

    keys = Keys()
    servicer = ExtAuthzServicer(_Holder(), GatewayResolver(GatewayOptions(jwks=keys.jwks())))
    request = ext.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/v1/tenants/acme/kb/k1/docs/d1"
    http.headers["authorization"] = f"Bearer {keys.token()}"
    with caplog.at_level(logging.INFO, logger="pdp.gateway"):
        outcomes = [servicer.check(request) for _ in range(20)]
    assert all(o.http_status == 500 and not o.allowed for o in outcomes)
    records = [r for r in caplog.records if r.name == "pdp.gateway"]
    assert len(records) == 1 and records[0].exc_info
    assert "forged line" not in records[0].getMessage()

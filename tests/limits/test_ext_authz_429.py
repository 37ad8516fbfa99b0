"""ext_authz answers a rate-limited Check with 429 and the draft RFC's headers, never OK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pdp.engine import Engine, compile_policy_set
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import Translation
from pdp.gateway.response import outcome_for, to_envoy
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

from .conftest import LIMITED, write_policies

MAPPING = {
    "apiVersion": "pdp/v1",
    "kind": "RouteMapping",
    "metadata": {"id": "m"},
    "spec": {"routes": [{"path": "/n/{id}", "methods": {"GET": "read"},
                         "resource": {"kind": "note", "id": "{id}"}}]},
}  # fmt: skip


def test_a_rate_limited_check_is_a_429_with_headers(tmp_path) -> None:
    engine = Engine(compile_policy_set(load_policy_dir(write_policies(tmp_path, LIMITED))))
    mapping = load_route_mapping(MAPPING)
    t0 = datetime(2026, 3, 10, tzinfo=UTC)
    outcomes = []
    for i in range(6):
        request = parse_check_request(
            {
                "principal": {"id": "ann", "tenant": "acme", "roles": ["member"]},
                "resources": [{"kind": "note", "id": "n", "tenant": "acme", "actions": ["read"]}],
                "context": {"time": (t0 + timedelta(seconds=i)).isoformat()},
            }
        )
        outcomes.append(
            outcome_for(Translation("check", request=request), engine.check(request), mapping, "")
        )
    assert [o.http_status for o in outcomes] == [200] * 5 + [429]
    limited = outcomes[-1]
    assert (limited.allowed, limited.grpc_code, limited.reason) == (False, 8, "rate_limited")
    assert (
        limited.headers["retry-after"] == "17275"
    )  # one unit back every 17,280 s; 5 s have passed
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert limited.headers["x-ratelimit-limit"] == "5, 5;w=86400"
    reply = to_envoy(limited)
    assert reply.status.code == 8 and reply.denied_response.status.code == 429
    assert b'"error":"too_many_requests"' in reply.denied_response.body.encode()

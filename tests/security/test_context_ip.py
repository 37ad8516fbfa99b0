"""`context.ip` has one spelling per address: rate-limit buckets keyed on it, and conditions
comparing it as a string, must not see `2001:DB8::1`, `2001:0db8::1` and `::ffff:10.0.0.9` as
other clients. A zone (`fe80::1%eth0`) is refused: its spellings never run out.

Through a real gRPC server with the rate limit service beside Check (in-memory counters)."""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdp.client import Client
from pdp.gateway._gen.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from pdp.model.request import canonical_ip
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from tests.limits.conftest import LIMITED, limits_server, write_policies

MEMBER = {"id": "mia", "tenant": "acme", "roles": ["member"]}
_notes = itertools.count()


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with limits_server(write_policies(tmp_path_factory.mktemp("policies"), LIMITED)) as address:
        yield address


def archive(client: Client, ip: str) -> bool:
    note = {"kind": "note", "id": f"n{next(_notes)}", "tenant": "acme"}
    return client.is_allowed(MEMBER, note, "archive", {"ip": ip})


@pytest.mark.parametrize(
    "spellings",
    [
        ["2001:db8::1", "2001:DB8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8:0::1"],
        ["10.0.0.9", "::ffff:10.0.0.9", "::FFFF:a00:9", "0:0:0:0:0:ffff:10.0.0.9"],
    ],
    ids=["ipv6", "ipv4-mapped"],
)
def test_every_spelling_of_one_address_takes_from_one_bucket(
    address: str, spellings: list[str]
) -> None:
    # per-ip-archive: 3 a day per context.ip. Respelling the address opened a fresh bucket.
    with Client(address, timeout=10) as client:
        allowed = [archive(client, ip) for ip in spellings + spellings[:1]]
    assert allowed == [True, True, True, False, False]


def test_the_rate_limit_service_reads_every_spelling_as_one_address(address: str) -> None:
    def should(ip: str) -> int:
        entries = [("kind", "note"), ("action", "archive"), ("remote_address", ip)]
        descriptor = rl.RateLimitDescriptor(
            entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
        )
        request = rls.RateLimitRequest(domain="pdp", descriptors=[descriptor])
        with grpc.insecure_channel(address) as channel:
            stub = rls_grpc.RateLimitServiceStub(channel)
            return stub.ShouldRateLimit(request, timeout=10).overall_code

    spellings = ["2001:db8::77", "2001:DB8:0:0::77", "2001:0db8::0077", "2001:db8::77"]
    ok, over = rls.RateLimitResponse.OK, rls.RateLimitResponse.OVER_LIMIT
    assert [should(ip) for ip in spellings] == [ok, ok, ok, over]


@pytest.mark.parametrize("ip", ["fe80::1%eth0", "fe80::1%1", "2001:db8::1%x"])
def test_an_address_with_a_zone_is_refused(address: str, ip: str) -> None:
    request = pb.CheckRequest(
        principal=pb.Principal(id=MEMBER["id"], tenant="acme", roles=["member"]),
        resources=[pb.Resource(kind="note", id="z", tenant="acme", actions=["archive"])],
        context=pb.Context(ip=ip),
    )
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(
            "/pdp.v1.DecisionService/Check",
            request_serializer=pb.CheckRequest.SerializeToString,
            response_deserializer=pb.CheckResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            check(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("context.ip:")

        entries = [("kind", "note"), ("action", "archive"), ("remote_address", ip)]
        descriptor = rl.RateLimitDescriptor(
            entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
        )
        reply = rls_grpc.RateLimitServiceStub(channel).ShouldRateLimit(
            rls.RateLimitRequest(domain="pdp", descriptors=[descriptor]), timeout=10
        )
    assert reply.overall_code == rls.RateLimitResponse.OVER_LIMIT
    assert json.loads(reply.raw_body)["error"] == "invalid_descriptor"


@given(st.ip_addresses(v=6), st.booleans())
def test_the_spelling_is_the_compressed_lower_case_or_the_mapped_ipv4(
    address: ipaddress.IPv6Address, upper: bool
) -> None:
    exploded = address.exploded.upper() if upper else address.exploded
    want = str(address.ipv4_mapped) if address.ipv4_mapped else address.compressed
    assert canonical_ip(exploded) == canonical_ip(address.compressed) == want

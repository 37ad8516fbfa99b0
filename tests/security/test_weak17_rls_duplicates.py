"""A rate-limit descriptor that gives one key twice is unreadable, not "the last one wins".

Two `principal.tenant` entries, one from the route and one from a header a client can bend:
the last one filled the activation, so a client whose tenant had spent its quota named a fresh
tenant in its own header and was answered OK. Now such a descriptor (any key twice, or
`context.ip` beside its alias `remote_address`) is OVER_LIMIT with the `invalid_descriptor`
body naming the second entry, like every descriptor pdp cannot read, and charges nothing.
Through the real rate limit service (`limits_server`, tests/limits/conftest.py).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pdp.gateway._gen.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as rl
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2_grpc as rls_grpc
from tests.limits.conftest import LIMITED, limits_server, write_policies

OK, OVER = rls.RateLimitResponse.OK, rls.RateLimitResponse.OVER_LIMIT
_fresh = itertools.count()


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rls_grpc.RateLimitServiceStub]:
    root = write_policies(Path(tmp_path_factory.mktemp("dups")), LIMITED)
    with limits_server(root) as address, grpc.insecure_channel(address) as channel:
        yield rls_grpc.RateLimitServiceStub(channel)


def should(stub: rls_grpc.RateLimitServiceStub, *entries: tuple[str, str]):
    desc = rl.RateLimitDescriptor(
        entries=[rl.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    return stub.ShouldRateLimit(rls.RateLimitRequest(domain="pdp", descriptors=[desc]), timeout=30)


def write(tenant: str, units: int) -> list[tuple[str, str]]:
    """tenant-write-units: 10 units a day per `principal.tenant`."""
    return [("kind", "note"), ("action", "write"), ("principal.tenant", tenant),
            ("units", str(units))]  # fmt: skip


def refusal(reply: rls.RateLimitResponse) -> str:
    assert reply.overall_code == OVER, reply
    assert [s.code for s in reply.statuses] == [OVER]
    body = json.loads(reply.raw_body)
    assert body["error"] == "invalid_descriptor", body
    return body["message"]


def test_a_second_tenant_entry_does_not_shadow_the_first(
    stub: rls_grpc.RateLimitServiceStub,
) -> None:
    spent, fresh = f"spent-{next(_fresh)}", f"fresh-{next(_fresh)}"
    assert should(stub, *write(spent, 10)).overall_code == OK
    assert should(stub, *write(spent, 1)).overall_code == OVER  # its quota is gone
    # The route's tenant first, the client's header after it (and the other way round).
    for entries in (
        [*write(spent, 1), ("principal.tenant", fresh)],
        [("principal.tenant", fresh), *write(spent, 1)],
    ):
        message = refusal(should(stub, *entries))
        second = max(i for i, (k, _) in enumerate(entries) if k == "principal.tenant")
        assert message.startswith(f"descriptors[0].entries[{second}].key: `principal.tenant`")
    # Nothing was charged to the fresh tenant: its whole quota is still there.
    assert should(stub, *write(fresh, 10)).overall_code == OK
    assert should(stub, *write(fresh, 1)).overall_code == OVER


def test_any_repeated_key_and_an_aliased_ip_are_refused(
    stub: rls_grpc.RateLimitServiceStub,
) -> None:
    tenant = f"t-{next(_fresh)}"
    message = refusal(should(stub, *write(tenant, 1), ("units", "0")))
    assert message.startswith("descriptors[0].entries[4].key: `units` repeats"), message
    message = refusal(should(stub, *write(tenant, 1), ("kind", "note")))
    assert message.startswith("descriptors[0].entries[4].key: `kind` repeats"), message
    archive = [("kind", "note"), ("action", "archive")]
    for ip_keys in (("context.ip", "remote_address"), ("remote_address", "context.ip")):
        entries = [*archive, (ip_keys[0], "192.0.2.1"), (ip_keys[1], "192.0.2.2")]
        message = refusal(should(stub, *entries))
        assert message.startswith(f"descriptors[0].entries[3].key: `{ip_keys[1]}` repeats")
    # Each key once is read and limited as before (per-ip-archive: 3 a day).
    codes = [should(stub, *archive, ("remote_address", "192.0.2.2")).overall_code for _ in "1234"]
    assert codes == [OK, OK, OK, OVER]
    assert should(stub, *write(tenant, 10)).overall_code == OK

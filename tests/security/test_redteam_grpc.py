"""Undecodable protobuf messages to every RPC of a real `pdp serve` (health and reflection too): each is
INVALID_ARGUMENT naming `request`, as `Check` answers it, and costs no traceback in the log.
grpcio's own deserializer answered them INTERNAL ("Exception deserializing request!") and
logged a traceback per call, which any caller could send by the thousand."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, pdp_serve

from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext

METHODS = [
    "/pdp.v1.DecisionService/Check",
    "/pdp.v1.DecisionService/Plan",
    "/pdp.v1.DecisionService/ServerInfo",
    "/envoy.service.auth.v3.Authorization/Check",
    "/grpc.health.v1.Health/Check",
]
# Envoy's rate limit filter admits a call the service errors on (`failure_mode_deny: false`,
# its default): ShouldRateLimit answers OVER_LIMIT instead (test_redteam19_rls.py).
RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
STREAMING = [
    ("unary_stream", "/grpc.health.v1.Health/Watch"),
    ("stream_stream", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
]
BROKEN = [
    b"\xff\xff\xff\xff",  # a varint that never ends
    b"\x12\x05\x0a\x01",  # a length past the end
    b"\x0f",  # wire type 7
]


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve() as p:
        yield p


@pytest.fixture(scope="module")
def channel(pdp: Pdp) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(pdp.grpc_address) as ch:
        yield ch


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("data", BROKEN)
def test_an_undecodable_message_is_invalid_argument(
    channel: grpc.Channel, method: str, data: bytes
) -> None:
    call = channel.unary_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as info:
        call(data, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert info.value.details().startswith("request: "), info.value.details()


@pytest.mark.parametrize("data", BROKEN)
def test_an_undecodable_message_to_the_rate_limit_service_is_over_limit(
    channel: grpc.Channel, data: bytes
) -> None:
    from pdp.gateway._gen.envoy.service.ratelimit.v3 import rls_pb2 as rls

    call = channel.unary_unary(
        RATE_LIMIT,
        request_serializer=lambda b: b,
        response_deserializer=rls.RateLimitResponse.FromString,
    )
    reply = call(data, timeout=30)
    assert reply.overall_code == rls.RateLimitResponse.OVER_LIMIT
    assert b"request: is not a valid protobuf message" in reply.raw_body


@pytest.mark.parametrize(("kind", "method"), STREAMING)
def test_an_undecodable_message_to_a_streaming_rpc_is_invalid_argument(
    channel: grpc.Channel, kind: str, method: str
) -> None:
    call = getattr(channel, kind)(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    request = BROKEN[0] if kind == "unary_stream" else iter([BROKEN[0]])
    with pytest.raises(grpc.RpcError) as info:
        list(call(request, timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert info.value.details().startswith("request: "), info.value.details()


def test_health_and_reflection_still_answer(pdp: Pdp, channel: grpc.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([ask]), timeout=30
    )
    names = {s.name for s in answer.list_services_response.service}
    assert "pdp.v1.DecisionService" in names


def test_a_good_message_still_works_on_each_wrapped_rpc(channel: grpc.Channel) -> None:
    # Empty messages decode: the handlers run (and answer for themselves).
    info = channel.unary_unary(
        "/pdp.v1.DecisionService/ServerInfo",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    assert info(b"", timeout=30)
    with pytest.raises(grpc.RpcError) as plan:
        channel.unary_unary(
            "/pdp.v1.DecisionService/Plan",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )(b"", timeout=30)
    assert plan.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request:" not in plan.value.details()


def test_no_traceback_is_logged(pdp: Pdp, channel: grpc.Channel) -> None:
    for kind, method in STREAMING:
        with pytest.raises(grpc.RpcError):
            call = getattr(channel, kind)(
                method, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            list(call(BROKEN[0] if kind == "unary_stream" else iter([BROKEN[0]]), timeout=30))
    for method in METHODS:
        call = channel.unary_unary(
            method, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError):
            call(BROKEN[0], timeout=30)
    # Then a call that logs a known line: grpcio logged the bad calls' tracebacks before
    # answering them, so once this line is in the log, theirs would be too.
    marked = ext.CheckRequest()
    marked.attributes.request.http.method = "GET"
    marked.attributes.request.http.path = "not-absolute"
    channel.unary_unary(
        METHODS[3],
        request_serializer=ext.CheckRequest.SerializeToString,
        response_deserializer=ext.CheckResponse.FromString,
    )(marked, timeout=30)
    end = time.monotonic() + 60
    while not any("path_not_absolute" in line for line in pdp.stderr):
        assert time.monotonic() < end, "".join(pdp.stderr)
        time.sleep(0.05)
    text = "".join(pdp.stderr)
    assert "Traceback" not in text
    assert "Exception deserializing" not in text

"""Undecodable protobuf messages to every unary RPC of a real `pdp serve`: each is
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
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
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

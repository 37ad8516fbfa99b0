"""The one place where failures become gRPC status codes.

    RequestError        -> INVALID_ARGUMENT   (google.rpc.BadRequest names the field path)
    LimitExceeded       -> RESOURCE_EXHAUSTED (same detail)
    undecodable message -> INVALID_ARGUMENT   (field `request`)
    NoPoliciesError     -> UNAVAILABLE
    anything else       -> INTERNAL, with a generic message; the traceback goes to the log only

A caller never gets an allow from a failed call: every failure aborts without a response body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from pdp.errors import LimitExceeded, NoPoliciesError, RequestError

log = logging.getLogger("pdp.server")

INTERNAL_MESSAGE = "internal error"


def _with_field(code: grpc.StatusCode, field: str, message: str) -> grpc.Status:
    detail = AnyPb()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
            ]
        )
    )
    text = f"{field}: {message}" if field else message
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=text, details=[detail])
    )


def _plain(code: grpc.StatusCode, message: str) -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message))


def status_for(exc: BaseException, rpc: str = "") -> grpc.Status:
    """The status a failed call answers with; logs what the caller must not see."""
    if isinstance(exc, LimitExceeded):
        return _with_field(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.field, exc.message)
    if isinstance(exc, RequestError):
        return _with_field(grpc.StatusCode.INVALID_ARGUMENT, exc.field, exc.message)
    if isinstance(exc, DecodeError):
        return _with_field(
            grpc.StatusCode.INVALID_ARGUMENT, "request", "is not a valid protobuf message"
        )
    if isinstance(exc, NoPoliciesError):
        return _plain(grpc.StatusCode.UNAVAILABLE, str(exc))
    log.error("internal error in %s", rpc or "call", exc_info=exc)
    return _plain(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def decoding(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler`, decoding its requests itself: grpcio answers a message its own deserializer
    cannot read with INTERNAL and logs a traceback for it, and any caller can send one. This
    one answers INVALID_ARGUMENT naming `request`, as Check does."""
    parse = handler.request_deserializer
    if parse is None:
        return handler

    def one(data: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            context.abort_with_status(status_for(exc))
            raise  # abort_with_status raises; this line only tells the type checker

    def many(datas: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        for data in datas:
            yield one(data, context)

    # The same behaviour and serializer, rebuilt through grpc's public constructors.
    out = handler.response_serializer
    if handler.unary_unary is not None:
        b = handler.unary_unary
        return grpc.unary_unary_rpc_method_handler(
            lambda data, context: b(one(data, context), context), response_serializer=out
        )
    if handler.unary_stream is not None:
        b = handler.unary_stream

        def stream(data: bytes, context: grpc.ServicerContext, *send_response: Any) -> Any:
            return b(one(data, context), context, *send_response)

        # grpc_health's Watch answers through a callback rather than holding an RPC thread for
        # the stream's life; grpcio reads that from these attributes of the behaviour. Without
        # them, as many Watch streams as RPC threads stop every decision.
        for name in ("experimental_non_blocking", "experimental_thread_pool"):
            if hasattr(b, name):
                setattr(stream, name, getattr(b, name))
        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=out)
    if handler.stream_unary is not None:
        b = handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(
            lambda datas, context: b(many(datas, context), context), response_serializer=out
        )
    b = handler.stream_stream
    return grpc.stream_stream_rpc_method_handler(
        lambda datas, context: b(many(datas, context), context), response_serializer=out
    )


class _DecodingGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per method the inner serves

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = self._inner.service(details)
            if handler is None:
                return None
            wrapped = self._wrapped[details.method] = decoding(handler)
        return wrapped


class DecodingServer:
    """What a generated `add_..._to_server` (or grpc_health's, grpc_reflection's) registers
    on in place of the server: every handler it adds decodes its own requests (`decoding`)."""

    def __init__(self, server: grpc.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_DecodingGeneric(h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        wrapped = {name: decoding(handler) for name, handler in handlers.items()}
        self._server.add_registered_method_handlers(service, wrapped)


def permission_denied(identity: str) -> grpc.Status:
    who = f"`{identity}`" if identity else "a caller without a client certificate identity"
    return _plain(grpc.StatusCode.PERMISSION_DENIED, f"{who} is not allowed")


def code_name(status: grpc.Status) -> str:
    """`INVALID_ARGUMENT` etc., as the observer reports it."""
    return status.code.name

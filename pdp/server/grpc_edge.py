"""Where pdp's services meet grpcio's server API. With grpcio's server (`server`) and the
streaming servicers (`streams`), the only modules of pdp.server that import grpc: the native
transport (`pdp serve`'s default) imports none of them for its unary calls.

pdp's servicers fail a call by raising `status.Aborted` with a transport-neutral `Status`;
here a behaviour is wrapped (`edge`) to hand that to grpc's `abort_with_status` with grpc's
own code. A `Service` (its unary methods, `pdp.server.hooks`) becomes grpcio's handlers here
(`register_service`), each decoding its own requests (`decoding`). The allow-list's grpcio
interceptor lives here too.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .hooks import Service, Unary
from .identity import AllowList
from .status import Aborted, Status, StatusCode, status_for

# pdp's code -> grpc's (the same names and values).
GRPC_CODES = {code: grpc.StatusCode[code.name] for code in StatusCode}


class _GrpcStatus(
    collections.namedtuple("_GrpcStatus", "code details trailing_metadata"), grpc.Status
):
    """A `grpc.Status`, as grpc_status's `to_status` makes one."""


def grpc_status(status: Status) -> grpc.Status:
    return _GrpcStatus(GRPC_CODES[status.code], status.details, status.trailing_metadata)


def abort(context: grpc.ServicerContext, status: Status) -> None:
    """End the call with `status` on grpcio's context (raises, as grpc's abort does)."""
    if status.trailing_metadata:
        context.abort_with_status(grpc_status(status))
    context.abort(GRPC_CODES[status.code], status.details)


def edge(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """`behaviour(request, context, ...)` on grpcio: its `Aborted` ends the call there."""

    def call(request: Any, context: grpc.ServicerContext, *more: Any) -> Any:
        try:
            return behaviour(request, context, *more)
        except Aborted as exc:
            abort(context, exc.status)

    for name in ("experimental_non_blocking", "experimental_thread_pool"):
        if hasattr(behaviour, name):  # grpc_health's Watch: see `decoding`
            setattr(call, name, getattr(behaviour, name))
    return call


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
            context.abort_with_status(grpc_status(status_for(exc)))
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


def handler(method: Unary) -> grpc.RpcMethodHandler:
    """grpcio's handler of one unary method, decoding its own requests."""
    return decoding(
        grpc.unary_unary_rpc_method_handler(
            edge(method.behaviour),
            request_deserializer=method.parse,
            response_serializer=method.serialize,
        )
    )


def register_service(server: grpc.Server, service: Service) -> str:
    """Register `service`'s methods on a grpc server; its full name (for health, reflection)."""
    handlers = {name: handler(method) for name, method in service.methods.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.name, handlers),))
    server.add_registered_method_handlers(service.name, handlers)
    return service.name


def guard_handler(allow: AllowList, method: str, handler: grpc.RpcMethodHandler) -> Any:
    """`handler` (streaming or not) with each behaviour refusing as `allow` refuses, an open
    service's as it is: grpcio's interception, and the native transport's streaming calls."""
    if allow.is_open(method):
        return handler
    kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    replace = {
        k: edge(allow.guard(method, getattr(handler, k))) for k in kinds if getattr(handler, k)
    }
    return handler._replace(**replace)  # type: ignore[attr-defined]


class AllowListInterceptor(grpc.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) callers none of whose certificate identities is allowed
    (`pdp.server.identity.AllowList`; ValueError on a bad entry)."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allow = AllowList(allowed)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return guard_handler(self.allow, handler_call_details.method, handler)

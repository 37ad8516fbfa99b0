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
from collections.abc import Mapping
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
    """A unary handler that decodes its request itself: grpcio answers a message its own
    deserializer cannot read with INTERNAL and logs a traceback for it, and any caller can
    send one. This one answers INVALID_ARGUMENT naming `request`, as Check does."""
    parse = handler.request_deserializer
    behaviour = handler.unary_unary
    assert parse is not None and behaviour is not None

    def decoded(data: bytes, context: grpc.ServicerContext) -> Any:
        try:
            request = parse(data)
        except DecodeError as exc:
            context.abort_with_status(status_for(exc))
        return behaviour(request, context)

    return handler._replace(request_deserializer=None, unary_unary=decoded)  # type: ignore[attr-defined]


def register_decoding(
    server: grpc.Server, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
) -> None:
    """Register a service's unary `handlers` (as its generated `add_..._to_server` would),
    each decoding its own request (`decoding`)."""
    wrapped = {name: decoding(handler) for name, handler in handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
    server.add_registered_method_handlers(service, wrapped)


def permission_denied(identity: str) -> grpc.Status:
    who = f"`{identity}`" if identity else "a caller without a client certificate identity"
    return _plain(grpc.StatusCode.PERMISSION_DENIED, f"{who} is not allowed")


def code_name(status: grpc.Status) -> str:
    """`INVALID_ARGUMENT` etc., as the observer reports it."""
    return status.code.name

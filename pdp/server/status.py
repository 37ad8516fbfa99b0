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


def permission_denied(identity: str) -> grpc.Status:
    who = f"`{identity}`" if identity else "a caller without a client certificate identity"
    return _plain(grpc.StatusCode.PERMISSION_DENIED, f"{who} is not allowed")


def code_name(status: grpc.Status) -> str:
    """`INVALID_ARGUMENT` etc., as the observer reports it."""
    return status.code.name

"""The one place where failures become gRPC status codes, without grpcio: the native transport
(`pdp serve`'s default) sends them itself, grpcio's transport hands them to grpc at its edge
(`pdp.server.grpc_edge`).

    RequestError        -> INVALID_ARGUMENT   (google.rpc.BadRequest names the field path)
    LimitExceeded       -> RESOURCE_EXHAUSTED (same detail)
    undecodable message -> INVALID_ARGUMENT   (field `request`)
    NoPoliciesError     -> UNAVAILABLE
    anything else       -> INTERNAL, with a generic message; the traceback goes to the log only

A caller never gets an allow from a failed call: every failure aborts without a response body.
"""

from __future__ import annotations

import base64
import enum
import logging
from typing import NamedTuple

from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from pdp.errors import LimitExceeded, NoPoliciesError, RequestError

log = logging.getLogger("pdp.server")

INTERNAL_MESSAGE = "internal error"
# The trailer grpc_status writes the google.rpc.Status into (its GRPC_DETAILS_METADATA_KEY).
DETAILS_KEY = "grpc-status-details-bin"


class StatusCode(enum.Enum):
    """gRPC's status codes: the names and values of grpcio's `grpc.StatusCode`, so a code
    reads alike whichever the servicer was handed (`code.value[0]`, `code.name`)."""

    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")


class Status(NamedTuple):
    """A failed call's status, as grpcio's `grpc.Status` holds it (code, details, trailing
    metadata: the google.rpc.Status in `grpc-status-details-bin`, or none)."""

    code: StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...] = ()


class Aborted(Exception):
    """A call failed with `status`: raised by a servicer, answered by the transport (the
    native one sends it; grpcio's edge gives it to grpc's `abort_with_status`)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.details)
        self.status = status

    @property
    def reply(self) -> tuple[int, str, str | None]:
        """(code, message, base64 grpc-status-details-bin or None): what the native transport
        sends."""
        status, details = self.status, None
        for key, value in status.trailing_metadata:
            if key == DETAILS_KEY:
                details = base64.b64encode(value).decode("ascii")
        return status.code.value[0], status.details or "", details


def rich(code: StatusCode, message: str, details: list[AnyPb] | None = None) -> Status:
    """A status carrying its google.rpc.Status in the trailers, as grpc_status's `to_status`
    makes it."""
    proto = status_pb2.Status(code=code.value[0], message=message, details=details or ())
    return Status(code, message, ((DETAILS_KEY, proto.SerializeToString()),))


def _with_field(code: StatusCode, field: str, message: str) -> Status:
    detail = AnyPb()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
            ]
        )
    )
    return rich(code, f"{field}: {message}" if field else message, [detail])


def status_for(exc: BaseException, rpc: str = "") -> Status:
    """The status a failed call answers with; logs what the caller must not see."""
    if isinstance(exc, LimitExceeded):
        return _with_field(StatusCode.RESOURCE_EXHAUSTED, exc.field, exc.message)
    if isinstance(exc, RequestError):
        return _with_field(StatusCode.INVALID_ARGUMENT, exc.field, exc.message)
    if isinstance(exc, DecodeError):
        return _with_field(
            StatusCode.INVALID_ARGUMENT, "request", "is not a valid protobuf message"
        )
    if isinstance(exc, NoPoliciesError):
        return rich(StatusCode.UNAVAILABLE, str(exc))
    log.error("internal error in %s", rpc or "call", exc_info=exc)
    return rich(StatusCode.INTERNAL, INTERNAL_MESSAGE)


def permission_denied(identity: str) -> Status:
    who = f"`{identity}`" if identity else "a caller without a client certificate identity"
    return rich(StatusCode.PERMISSION_DENIED, f"{who} is not allowed")


def code_name(status: Status) -> str:
    """`INVALID_ARGUMENT` etc., as the observer reports it."""
    return status.code.name

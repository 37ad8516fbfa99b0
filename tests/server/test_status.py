"""pdp's transport-neutral status (pdp.server.status) against grpcio's: the native transport
sends it as it is, the grpcio transport hands it to grpc (pdp.server.grpc_edge); both must
answer what grpc_status answered before."""

from __future__ import annotations

import base64

import grpc
import pytest
from google.rpc import status_pb2
from grpc_status import rpc_status

from pdp.errors import RequestError
from pdp.server.grpc_edge import grpc_status
from pdp.server.status import Aborted, StatusCode, status_for


def test_the_codes_are_grpcs_names_and_values() -> None:
    assert [(c.name, c.value) for c in StatusCode] == [(c.name, c.value) for c in grpc.StatusCode]


def test_a_status_with_details_is_what_grpc_status_made() -> None:
    ours = status_for(RequestError("principal.id", "required"))
    theirs = rpc_status.to_status(status_pb2.Status.FromString(ours.trailing_metadata[0][1]))
    assert grpc_status(ours) == theirs
    assert (theirs.code, theirs.details) == (grpc.StatusCode.INVALID_ARGUMENT, ours.details)
    assert isinstance(grpc_status(ours), grpc.Status)


def test_the_native_context_sends_a_grpc_status_a_servicer_aborts_with() -> None:
    """A servicer of grpcio's (a registrar pdp did not write) may still call
    `context.abort_with_status(grpc_status)` on the native transport: its code, message and
    details are sent as grpcio sends them."""
    pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
    from pdp.server.native.server import _Context

    detail = status_for(RequestError("principal.id", "required")).trailing_metadata[0][1]
    theirs = rpc_status.to_status(status_pb2.Status.FromString(detail))
    with pytest.raises(Aborted) as aborted:
        _Context(None, "ipv4:127.0.0.1:1", b"").abort_with_status(theirs)
    assert aborted.value.reply == (3, theirs.details, base64.b64encode(detail).decode())
    with pytest.raises(Aborted) as aborted:
        _Context(None, "ipv4:127.0.0.1:1", b"").abort(grpc.StatusCode.NOT_FOUND, "no")
    assert aborted.value.reply == (5, "no", None)

"""pdp's transport-neutral status (pdp.server.status) against grpcio's: the native transport
sends it as it is, the grpcio transport hands it to grpc (pdp.server.grpc_edge); both must
answer what grpc_status answered before."""

from __future__ import annotations

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from pdp.errors import RequestError
from pdp.server.grpc_edge import grpc_status
from pdp.server.status import StatusCode, status_for


def test_the_codes_are_grpcs_names_and_values() -> None:
    assert [(c.name, c.value) for c in StatusCode] == [(c.name, c.value) for c in grpc.StatusCode]


def test_a_status_with_details_is_what_grpc_status_made() -> None:
    ours = status_for(RequestError("principal.id", "required"))
    theirs = rpc_status.to_status(status_pb2.Status.FromString(ours.trailing_metadata[0][1]))
    assert grpc_status(ours) == theirs
    assert (theirs.code, theirs.details) == (grpc.StatusCode.INVALID_ARGUMENT, ours.details)
    assert isinstance(grpc_status(ours), grpc.Status)

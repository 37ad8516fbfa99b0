"""Observations as plain bytes and strings, for a telemetry writer in another process.

A Check already has its request and reply as protobuf bytes, so what crosses the pipe is
those bytes (no conversion on the server) plus the call's details; the writer process turns
them back into the same `CheckRequest` and `CheckResponse` the server had, with the server's
own converters. Other observations (Envoy ext_authz calls) are pickled whole. Only the trace
propagation keys of the metadata cross: the rest (`authorization` above all) never leaves
the server process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pdp.model.decision import CheckResponse
from pdp.model.request import CheckRequest, Limits

from ._gen.pdp.v1 import decision_pb2 as _pb
from .convert import request_from_proto, response_from_proto
from .hooks import CheckObservation

# Keys a trace propagator reads (W3C trace context and baggage).
PROPAGATION_KEYS = frozenset({"traceparent", "tracestate", "baggage"})
# The server validated the request against its limits already; rebuilding it must not fail
# on a server started with larger ones.
_NO_LIMITS = Limits(
    max_checks=2**31,
    max_resources=2**31,
    max_attr_depth=2**31,
    max_attr_values=2**31,
    max_string_length=2**31,
    max_id_length=2**31,
)
_CHECK, _OBJECT = 0, 1


def _propagation(metadata: Any) -> tuple[tuple[str, str], ...]:
    return tuple(
        (k, v) for k, v in metadata if k.lower() in PROPAGATION_KEYS and isinstance(v, str)
    )


def encode_observation(obs: Any) -> tuple[Any, ...]:
    """Runs on the server's feeder thread, off the request path."""
    request_bytes = getattr(obs, "wire_request", None)
    if request_bytes is not None:
        return (
            _CHECK,
            obs.rpc,
            request_bytes,
            obs.wire_reply,
            obs.error_code,
            obs.error_message,
            obs.peer,
            obs.peer_identity,
            _propagation(obs.metadata),
            obs.start_time,
            obs.latency_s,
        )
    return (
        _OBJECT,
        CheckObservation(
            request=obs.request,
            response=obs.response,
            error_code=obs.error_code,
            error_message=obs.error_message,
            peer=obs.peer,
            peer_identity=obs.peer_identity,
            metadata=_propagation(obs.metadata),
            start_time=obs.start_time,
            latency_s=obs.latency_s,
            rpc=obs.rpc,
        ),
    )


def decode_observation(item: tuple[Any, ...]) -> CheckObservation:
    """Runs in the writer process."""
    if item[0] == _OBJECT:
        obs: CheckObservation = item[1]
        return obs
    _, rpc, request_bytes, reply, code, message, peer, identity, metadata, start, latency = item
    request = response = None
    if reply is not None:
        # As the server observes a failed call: no request, no response.
        request = request_from_proto(_pb.CheckRequest.FromString(request_bytes), _NO_LIMITS)
        response = _in_request_order(
            request, response_from_proto(_pb.CheckResponse.FromString(reply))
        )
    return CheckObservation(
        request=request,
        response=response,
        error_code=code,
        error_message=message,
        peer=peer,
        peer_identity=identity,
        metadata=metadata,
        start_time=start,
        latency_s=latency,
        rpc=rpc,
    )


def _in_request_order(request: CheckRequest, response: CheckResponse) -> CheckResponse:
    """Each result's actions in the order the request listed them, as the engine answers:
    a protobuf map does not keep its order on the wire."""
    results = []
    for res, asked in zip(response.results, request.resources):
        actions = res.actions
        if list(actions) != list(asked.actions) and set(actions) == set(asked.actions):
            res = dataclasses.replace(res, actions={a: actions[a] for a in asked.actions})
        results.append(res)
    return dataclasses.replace(response, results=tuple(results))

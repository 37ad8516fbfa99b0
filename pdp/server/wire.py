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
import functools
from operator import itemgetter
from typing import Any

from pdp.model.decision import CheckResponse
from pdp.model.request import CheckRequest, Limits

from ._gen.pdp.v1 import decision_pb2 as _pb
from .cache import split_request_id
from .convert import request_from_proto, response_from_proto
from .hooks import CheckObservation

# Keys a trace propagator reads (W3C trace context and baggage): the same set as
# pdp.telemetry.tracing.PROPAGATION_KEYS, which the server may not import (opentelemetry).
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
_CHECK, _OBJECT, _HIT = 0, 1, 2
_propagates = PROPAGATION_KEYS.__contains__
_key = itemgetter(0)


def propagation(metadata: Any) -> tuple[tuple[str, str], ...]:
    """The trace propagation entries of a call's gRPC metadata: all that crosses of it.

    gRPC metadata keys are lowercase (grpc refuses any other), and a value is bytes only
    under a `-bin` key, which none of these is: one membership test per entry, on every call.
    """
    if not metadata or not any(map(_propagates, map(_key, metadata))):
        return ()  # the common call, checked in C (no comprehension frame)
    return tuple([(k, v) for k, v in metadata if k in PROPAGATION_KEYS])


def hit_item(
    rpc: str,
    key: bytes,
    body: bytes,
    decision_id: str,
    request_id: str,
    evaluated_at: str,
    peer: str,
    identity: str,
    propagated: tuple[tuple[str, str], ...],
    start_time: float,
    latency_s: float,
) -> tuple[Any, ...]:
    """A call answered from the decision cache: the entry's key and body (the same bytes
    objects for every hit on it, which pickle writes once per batch) and this hit's ids."""
    return (_HIT, rpc, key, body, decision_id, request_id, evaluated_at,
            peer, identity, propagated, start_time, latency_s)  # fmt: skip


def check_item(
    rpc: str,
    request: bytes,
    reply: bytes | None,
    error_code: str,
    error_message: str,
    peer: str,
    identity: str,
    propagated: tuple[tuple[str, str], ...],
    start_time: float,
    latency_s: float,
) -> tuple[Any, ...]:
    """A call decided (or failed, `reply` None) from its request and reply bytes."""
    return (_CHECK, rpc, request, reply, error_code, error_message,
            peer, identity, propagated, start_time, latency_s)  # fmt: skip


def encode_observation(obs: Any) -> tuple[Any, ...]:
    """An observation other than the decision service's Checks (those arrive as wire items
    already, see `hit_item` and `check_item`): an Envoy ext_authz call, pickled whole with
    only its propagation metadata. Runs on the server's feeder thread."""
    return (
        _OBJECT,
        CheckObservation(
            request=obs.request,
            response=obs.response,
            error_code=obs.error_code,
            error_message=obs.error_message,
            peer=obs.peer,
            peer_identity=obs.peer_identity,
            metadata=propagation(obs.metadata),
            start_time=obs.start_time,
            latency_s=obs.latency_s,
            rpc=obs.rpc,
        ),
    )


def _decoded(request: bytes, reply: bytes) -> tuple[CheckRequest, CheckResponse]:
    """A request and its reply as the server had them."""
    req = request_from_proto(_pb.CheckRequest.FromString(request), _NO_LIMITS)
    return req, _in_request_order(req, response_from_proto(_pb.CheckResponse.FromString(reply)))


# A cached decision's entry is decoded once for all its hits (they send the same bytes).
_decoded_entry = functools.lru_cache(maxsize=1024)(_decoded)


def decoded_hit(
    key: bytes, body: bytes, decision_id: str, request_id: str, evaluated_at: str
) -> tuple[CheckRequest, CheckResponse]:
    """A call answered with a known decision (`key`: the request without its id, `body`: the
    reply without its ids), with this call's own ids."""
    request, response = _decoded_entry(key, body)
    return dataclasses.replace(request, request_id=request_id), dataclasses.replace(
        response, decision_id=decision_id, request_id=request_id, evaluated_at=evaluated_at
    )


def decode_observation(item: tuple[Any, ...]) -> CheckObservation:
    """Runs in the writer process."""
    if item[0] == _OBJECT:
        obs: CheckObservation = item[1]
        return obs
    request: CheckRequest | None = None
    response: CheckResponse | None = None
    if item[0] == _HIT:
        (_, rpc, key, body, decision_id, request_id, evaluated_at, peer, identity, metadata,
         start, latency) = item  # fmt: skip
        request, response = decoded_hit(key, body, decision_id, request_id, evaluated_at)
        code = message = ""
    else:
        _, rpc, data, reply, code, message, peer, identity, metadata, start, latency = item
        # A failed call (no reply) is observed as the server observes it: no request, no
        # response.
        split = split_request_id(data) if reply is not None else None
        if split is not None:
            # Decided afresh, yet often a question asked before: split off this call's ids
            # and decode the rest once, as for a cache hit.
            answer = _pb.CheckResponse.FromString(reply)
            ids = (answer.decision_id, answer.request_id, answer.evaluated_at)
            for name in ("decision_id", "request_id", "evaluated_at"):
                answer.ClearField(name)
            request, response = decoded_hit(split[0], answer.SerializeToString(), *ids)
            request = dataclasses.replace(request, request_id=split[1])
        elif reply is not None:
            request, response = _decoded(data, reply)
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

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


class _Entry:
    """A cached decision as the writer process knows it: decoded once, shared by its hits
    (telemetry builds the shared parts of their records once per entry, as in-process)."""

    __slots__ = ("request", "response")

    def __init__(self, request: CheckRequest, response: CheckResponse) -> None:
        self.request = request
        self.response = response


class HitObservation(tuple):  # type: ignore[type-arg]
    """A call answered from a cached decision, as the writer process observes it: the hit
    itself (`cache_hit` is the observation: entry, decision_id, request_id, evaluated_at) and
    the call's details. A tuple, so that decoding a wire item is one C-level tuple build;
    `request`/`response` are made only if telemetry asks (it does not when it can share the
    entry's record parts)."""

    __slots__ = ()

    entry: _Entry = property(itemgetter(0))  # type: ignore[assignment]
    rpc: str = property(itemgetter(1))  # type: ignore[assignment]
    decision_id: str = property(itemgetter(2))  # type: ignore[assignment]
    request_id: str = property(itemgetter(3))  # type: ignore[assignment]
    evaluated_at: str = property(itemgetter(4))  # type: ignore[assignment]
    peer: str = property(itemgetter(5))  # type: ignore[assignment]
    peer_identity: str = property(itemgetter(6))  # type: ignore[assignment]
    metadata: tuple[tuple[str, str], ...] = property(itemgetter(7))  # type: ignore[assignment]
    start_time: float = property(itemgetter(8))  # type: ignore[assignment]
    latency_s: float = property(itemgetter(9))  # type: ignore[assignment]
    error_code = error_message = ""
    # The layout of pdp.telemetry.observation.HIT_ROW_FIELDS (which this package may not import).
    hit_row = True

    @property
    def cache_hit(self) -> HitObservation:
        return self

    @property
    def request(self) -> CheckRequest:
        return dataclasses.replace(self.entry.request, request_id=self.request_id)

    @property
    def response(self) -> CheckResponse:
        return dataclasses.replace(
            self.entry.response,
            decision_id=self.decision_id,
            request_id=self.request_id,
            evaluated_at=self.evaluated_at,
        )


_new_hit = tuple.__new__


# Decoded cache entries by (cache key, cached reply body); cleared when full.
_entries: dict[tuple[bytes, bytes], _Entry] = {}
_MAX_ENTRIES = 1024


def _entry(key: bytes, body: bytes) -> _Entry:
    entry = _entries.get((key, body))
    if entry is None:
        if len(_entries) >= _MAX_ENTRIES:
            _entries.clear()
        request = request_from_proto(_pb.CheckRequest.FromString(key), _NO_LIMITS)
        response = _in_request_order(
            request, response_from_proto(_pb.CheckResponse.FromString(body))
        )
        entry = _entries[(key, body)] = _Entry(request, response)
    return entry


def split_reply(reply: bytes) -> tuple[bytes, str, str, str]:
    """(the reply without its ids, decision_id, request_id, evaluated_at) for a serialized
    CheckResponse: the body a decision-cache entry keeps, and this call's own ids.

    Read off the top-level fields' bytes (a decided reply is a handful of them), which is
    what parsing, clearing the three fields and serialising again gives, at a fraction of its
    cost; a reply it cannot walk takes that protobuf path instead."""
    ids = ["", "", "", "", "", ""]
    keep = []
    i, n = 0, len(reply)
    try:
        while i < n:
            at = i
            tag = reply[i]
            i += 1
            if tag & 0x80:
                tag, i = _varint_at(reply, at)
            kind = tag & 7
            if kind == 2:
                length = reply[i]
                i += 1
                if length & 0x80:
                    length, i = _varint_at(reply, i - 1)
                end = i + length
            elif kind == 0:
                _, end = _varint_at(reply, i)
            elif kind == 1:
                end = i + 8
            elif kind == 5:
                end = i + 4
            else:
                raise ValueError(f"wire type {kind}")
            if end > n:
                raise ValueError("truncated")
            field = tag >> 3
            if kind == 2 and field in _REPLY_IDS:
                ids[field] = reply[i:end].decode()  # the last occurrence wins, as in protobuf
            else:
                keep.append(reply[at:end])
            i = end
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        answer = _pb.CheckResponse.FromString(reply)
        found = (answer.decision_id, answer.request_id, answer.evaluated_at)
        for name in ("decision_id", "request_id", "evaluated_at"):
            answer.ClearField(name)
        return answer.SerializeToString(), *found
    return b"".join(keep), ids[1], ids[2], ids[5]


# CheckResponse.decision_id = 1, request_id = 2, evaluated_at = 5 (proto/pdp/v1/decision.proto)
_REPLY_IDS = frozenset({1, 2, 5})


def _varint_at(data: bytes, i: int) -> tuple[int, int]:
    """The varint at `data[i]` and the index after it."""
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def decode_observation(item: tuple[Any, ...]) -> CheckObservation | HitObservation:
    """Runs in the writer process."""
    if item[0] == _HIT:
        (_, rpc, key, body, decision_id, request_id, evaluated_at, peer, identity, meta, start,
         latency) = item  # fmt: skip
        entry = _entries.get((key, body)) or _entry(key, body)
        return _new_hit(  # type: ignore[no-any-return]
            HitObservation,
            (entry, rpc, decision_id, request_id, evaluated_at, peer, identity, meta, start,
             latency),
        )  # fmt: skip
    if item[0] == _OBJECT:
        obs: CheckObservation = item[1]
        return obs
    _, rpc, request_bytes, reply, code, message, peer, identity, metadata, start, latency = item
    split = split_request_id(request_bytes) if reply is not None else None
    if split is not None:
        # A decision decoded once per distinct (request, answer): the record parts of a
        # repeated question are shared exactly as those of a cache hit are.
        body, decision_id, request_id, evaluated_at = split_reply(reply)
        entry = _entry(split[0], body)
        return _new_hit(  # type: ignore[no-any-return]
            HitObservation,
            (entry, rpc, decision_id, request_id, evaluated_at, peer, identity, metadata, start,
             latency),
        )  # fmt: skip
    # A failed call (no reply) is observed as the server observes it: no request, no
    # response. A reply with a request too large to key is decoded on its own.
    request = response = None
    if reply is not None:
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

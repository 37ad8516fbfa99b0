"""OTLP/gRPC span export with a faster encoder than the SDK's.

The SDK exporter turns each span into protobuf message objects field by field in Python
(`_encode_span`, one `KeyValue`/`AnyValue` object per attribute): measured on a loaded server
it was about a third of the whole telemetry cost per call, all of it holding the GIL the
decisions need. Here a span is written straight to protobuf wire bytes (the resource and scope
once per batch, attribute keys once per process), and the request's bytes go to the collector
as they are, through a client whose serializer is the identity. Everything else — endpoint,
TLS, headers, compression, timeout, retries — stays the SDK's `OTLPSpanExporter`.

Spans this encoder does not handle (events, links, attribute values that are sequences) are
encoded by the SDK's own `_encode_span`, so the output is always what the SDK would send.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

from pdp.telemetry.otel_private import SPAN_KIND_MAP as _SPAN_KIND_MAP
from pdp.telemetry.otel_private import encode_instrumentation_scope as _encode_instrumentation_scope
from pdp.telemetry.otel_private import encode_resource as _encode_resource
from pdp.telemetry.otel_private import encode_span as _encode_span

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack

_HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_KINDS = {kind: bytes((0x30, value)) for kind, value in _SPAN_KIND_MAP.items()}  # field 6


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ld(tag: int, data: bytes) -> bytes:
    """A length-delimited field (`tag` already shifted: `(number << 3) | 2`)."""
    return bytes((tag,)) + _varint(len(data)) + data


# KeyValue field 1 (key) with its tag and length, per attribute key: keys repeat on every span.
_key_prefixes: dict[str, bytes] = {}
_MAX_KEYS = 1024


# Whole encoded `KeyValue`s for the (key, value) pairs that repeat (rpc names, revision,
# counts); cleared when full, since unique values (decision ids) pass through it too.
_pairs: dict[tuple[str, Any], bytes] = {}
_MAX_PAIRS = 4096


def _key_value(key: str, value: str | bool | int | float) -> bytes:
    """An encoded `Span.attributes` entry (field 9)."""
    pair = (key, value, type(value))  # 1 and True are equal keys, not equal encodings
    kv = _pairs.get(pair)  # type: ignore[arg-type]
    if kv is not None:
        return kv
    t = type(value)
    if t is str:
        any_value = ld(0x0A, value.encode())  # AnyValue.string_value = 1
    elif t is bool:
        any_value = b"\x10\x01" if value else b"\x10\x00"  # bool_value = 2
    elif t is int:
        any_value = b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int_value = 3 (int64)
    elif t is float:
        any_value = b"\x21" + _pack_d(value)  # double_value = 4
    else:
        raise TypeError(f"attribute {key!r}: {t.__name__} is not a scalar")
    prefix = _key_prefixes.get(key)
    if prefix is None:
        prefix = ld(0x0A, key.encode())
        if len(_key_prefixes) < _MAX_KEYS:
            _key_prefixes[key] = prefix
    kv = ld(0x4A, prefix + ld(0x12, any_value))  # Span.attributes = 9
    if len(_pairs) >= _MAX_PAIRS:
        _pairs.clear()
    _pairs[pair] = kv  # type: ignore[index]
    return kv


def encode_span(span: ReadableSpan) -> bytes:
    """One `Span` message's wire bytes, the same message `_encode_span` builds."""
    if span.events or span.links:
        return _encode_span(span).SerializeToString()  # type: ignore[arg-type]
    attributes = span.attributes or {}
    for value in attributes.values():
        if type(value) not in _SCALARS:
            return _encode_span(span).SerializeToString()  # type: ignore[arg-type]
    ctx = span.get_span_context()
    status = span.status
    return span_bytes(
        ctx.trace_id,
        ctx.span_id,
        ctx.trace_state,
        span.parent,
        span.name,
        span.kind,
        span.start_time or 0,
        span.end_time or 0,
        attributes,
        span.dropped_attributes,  # type: ignore[union-attr]
        status.status_code.value if status is not None else None,
        status.description if status is not None else None,
    )


_SCALARS = frozenset({str, bool, int, float})


def span_bytes(
    trace_id: int,
    span_id: int,
    trace_state: Any,
    parent: SpanContext | None,
    name: str,
    kind: SpanKind,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
    dropped_attributes: int = 0,
    status_code: int | None = 0,
    status_description: str | None = None,
) -> bytes:
    """A `Span` message from its parts; attribute values must be str, bool, int or float."""
    parts = [
        b"\x0a\x10" + trace_id.to_bytes(16, "big"),  # trace_id = 1
        b"\x12\x08" + span_id.to_bytes(8, "big"),  # span_id = 2
    ]
    if trace_state:
        state = ",".join(f"{k}={v}" for k, v in trace_state.items())
        parts.append(ld(0x1A, state.encode()))  # trace_state = 3
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))  # parent_span_id = 4
    parts.append(ld(0x2A, name.encode()))  # name = 5
    parts.append(_KINDS[kind])
    parts.append(b"\x39" + _pack_q(start_ns))  # start_time_unix_nano = 7
    parts.append(b"\x41" + _pack_q(end_ns))  # end_time_unix_nano = 8
    for key, value in attributes.items():
        parts.append(_key_value(key, value))  # type: ignore[arg-type]
    if dropped_attributes:
        parts.append(b"\x50" + _varint(dropped_attributes))  # = 10
    if status_code is not None:
        # Status: message = 2, code = 3 (the SDK always sends a status, even UNSET).
        body = b""
        if status_description:
            body += ld(0x12, status_description.encode())
        if status_code:
            body += b"\x18" + _varint(status_code)
        parts.append(ld(0x7A, body))  # status = 15
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    parts.append(b"\x85\x01" + _pack_i(flags))  # flags = 16 (fixed32)
    return b"".join(parts)


class SpanChunk:
    """Encoded `Span` messages of one resource and scope, handed over together (see
    `pdp.telemetry.span_batches`): counted as `len(spans)` spans."""

    __slots__ = ("resource", "scope", "spans")

    def __init__(self, resource: Resource, scope: InstrumentationScope | None, spans: list[bytes]):
        self.resource = resource
        self.scope = scope
        self.spans = spans


# ScopeSpans.spans field heads (tag and length) for the span sizes decisions have.
_HEADS = 4096
_SPAN_HEADS = [b"\x12" + _varint(n) for n in range(_HEADS)]


def encode_request(spans: Sequence[ReadableSpan | SpanChunk]) -> bytes:
    """`ExportTraceServiceRequest` wire bytes: spans grouped by resource, then scope."""
    # Grouped by resource object identity first: hashing a Resource (all its attributes) for
    # every span was a visible cost; equal resources are merged below as the SDK does.
    by_id: dict[int, tuple[Resource, dict[Any, list[bytes]]]] = {}
    for span in spans:
        resource = span.resource
        group = by_id.get(id(resource))
        if group is None:
            group = by_id[id(resource)] = (resource, {})
        if type(span) is SpanChunk:
            # Each span behind its field tag and length (ScopeSpans.spans = 2), as parts of
            # the one join below: no per-span concatenation.
            parts = group[1].setdefault(span.scope or None, [])
            for data in span.spans:
                n = len(data)
                parts.append(_SPAN_HEADS[n] if n < _HEADS else b"\x12" + _varint(n))
                parts.append(data)
            continue
        group[1].setdefault(span.instrumentation_scope or None, []).append(  # type: ignore[union-attr]
            ld(0x12, encode_span(span))  # type: ignore[arg-type]
        )
    groups: dict[Resource, dict[Any, list[bytes]]] = {}
    for resource, scopes in by_id.values():
        merged = groups.setdefault(resource, {})
        for scope, encoded in scopes.items():
            merged.setdefault(scope, []).extend(encoded)
    out = []
    for resource, scopes in groups.items():
        body = [ld(0x0A, _encode_resource(resource).SerializeToString())]  # resource = 1
        for scope, encoded in scopes.items():
            scope_body = []
            if scope is not None:
                scope_body.append(
                    ld(0x0A, _encode_instrumentation_scope(scope).SerializeToString())
                )
            scope_body.extend(encoded)
            if scope is not None and scope.schema_url:
                scope_body.append(ld(0x1A, scope.schema_url.encode()))
            body.append(ld(0x12, b"".join(scope_body)))  # scope_spans = 2
        if resource.schema_url:
            body.append(ld(0x1A, resource.schema_url.encode()))
        out.append(ld(0x0A, b"".join(body)))  # ExportTraceServiceRequest.resource_spans = 1
    return b"".join(out)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """`OTLPSpanExporter` with `encode_request` in place of the SDK's message building, whose
    bytes go to the collector as they are (not parsed into a message for gRPC to serialise
    again). It also takes `SpanChunk`s, the batches of an `EncodedSpanProcessor`."""

    def _initialize_channel_and_stub(self) -> None:
        # Also what the SDK calls to reconnect after UNAVAILABLE: the raw client follows.
        super()._initialize_channel_and_stub()
        self._client = _RawTraceClient(self._channel)  # type: ignore[assignment]

    def _translate_data(  # type: ignore[override]
        self, data: Sequence[ReadableSpan | SpanChunk]
    ) -> bytes:
        return encode_request(data)

    def _count_data(self, data: Sequence[ReadableSpan | SpanChunk]) -> int:  # type: ignore[override]
        return sum(len(item.spans) if type(item) is SpanChunk else 1 for item in data)


# The OTLP trace service's one method (opentelemetry-proto, collector/trace/v1).
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _RawTraceClient:
    """The trace service stub's `Export`, taking the request's wire bytes."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,  # bytes as they are
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

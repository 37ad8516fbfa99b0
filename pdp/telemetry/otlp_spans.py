"""OTLP/gRPC span export with a faster encoder than the SDK's.

The SDK exporter turns each span into protobuf message objects field by field in Python
(`_encode_span`, one `KeyValue`/`AnyValue` object per attribute): measured on a loaded server
it was about a third of the whole telemetry cost per call, all of it holding the GIL the
decisions need. Here a span is written straight to protobuf wire bytes (the resource and scope
once per batch, attribute keys once per process), and the batch is parsed back into the
`ExportTraceServiceRequest` the exporter sends in one C call. Everything else — endpoint, TLS,
headers, compression, timeout, retries — stays the SDK's `OTLPSpanExporter`.

Spans this encoder does not handle (events, links, attribute values that are sequences) are
encoded by the SDK's own `_encode_span`, so the output is always what the SDK would send.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
    _SPAN_KIND_MAP,
    _encode_span,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk.trace import ReadableSpan

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


def _ld(tag: int, data: bytes) -> bytes:
    """A length-delimited field (`tag` already shifted: `(number << 3) | 2`)."""
    return bytes((tag,)) + _varint(len(data)) + data


# KeyValue field 1 (key) with its tag and length, per attribute key: keys repeat on every span.
_key_prefixes: dict[str, bytes] = {}
_MAX_KEYS = 1024


def _key_value(key: str, value: Any) -> bytes | None:
    """An encoded `KeyValue`, or None for a value this encoder leaves to the SDK."""
    t = type(value)
    if t is str:
        any_value = _ld(0x0A, value.encode())  # AnyValue.string_value = 1
    elif t is bool:
        any_value = b"\x10\x01" if value else b"\x10\x00"  # bool_value = 2
    elif t is int:
        any_value = b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int_value = 3 (int64)
    elif t is float:
        any_value = b"\x21" + _pack_d(value)  # double_value = 4
    else:
        return None
    prefix = _key_prefixes.get(key)
    if prefix is None:
        prefix = _ld(0x0A, key.encode())
        if len(_key_prefixes) < _MAX_KEYS:
            _key_prefixes[key] = prefix
    body = prefix + _ld(0x12, any_value)
    return _ld(0x4A, body)  # Span.attributes = 9


def encode_span(span: ReadableSpan) -> bytes:
    """One `Span` message's wire bytes, the same message `_encode_span` builds."""
    if span.events or span.links:
        return _encode_span(span).SerializeToString()
    attributes = []
    for key, value in (span.attributes or {}).items():
        kv = _key_value(key, value)
        if kv is None:
            return _encode_span(span).SerializeToString()
        attributes.append(kv)
    ctx = span.get_span_context()
    parts = [
        b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),  # trace_id = 1
        b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),  # span_id = 2
    ]
    if ctx.trace_state:
        state = ",".join(f"{k}={v}" for k, v in ctx.trace_state.items())
        parts.append(_ld(0x1A, state.encode()))  # trace_state = 3
    parent = span.parent
    if parent is not None:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))  # parent_span_id = 4
    parts.append(_ld(0x2A, span.name.encode()))  # name = 5
    parts.append(_KINDS[span.kind])
    parts.append(b"\x39" + _pack_q(span.start_time or 0))  # start_time_unix_nano = 7
    parts.append(b"\x41" + _pack_q(span.end_time or 0))  # end_time_unix_nano = 8
    parts.extend(attributes)
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))  # = 10
    status = span.status
    if status is not None:
        # Status: message = 2, code = 3 (the SDK always sends a status, even UNSET).
        body = b""
        if status.description:
            body += _ld(0x12, status.description.encode())
        if status.status_code.value:
            body += b"\x18" + _varint(status.status_code.value)
        parts.append(_ld(0x7A, body))  # status = 15
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    parts.append(b"\x85\x01" + _pack_i(flags))  # flags = 16 (fixed32)
    return b"".join(parts)


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """`ExportTraceServiceRequest` wire bytes: spans grouped by resource, then scope."""
    groups: dict[Any, dict[Any, list[bytes]]] = {}
    for span in spans:
        scopes = groups.setdefault(span.resource, {})
        scopes.setdefault(span.instrumentation_scope or None, []).append(
            _ld(0x12, encode_span(span))  # ScopeSpans.spans = 2
        )
    out = []
    for resource, scopes in groups.items():
        body = [_ld(0x0A, _encode_resource(resource).SerializeToString())]  # resource = 1
        for scope, encoded in scopes.items():
            scope_body = []
            if scope is not None:
                scope_body.append(
                    _ld(0x0A, _encode_instrumentation_scope(scope).SerializeToString())
                )
            scope_body.extend(encoded)
            if scope is not None and scope.schema_url:
                scope_body.append(_ld(0x1A, scope.schema_url.encode()))
            body.append(_ld(0x12, b"".join(scope_body)))  # scope_spans = 2
        if resource.schema_url:
            body.append(_ld(0x1A, resource.schema_url.encode()))
        out.append(_ld(0x0A, b"".join(body)))  # ExportTraceServiceRequest.resource_spans = 1
    return b"".join(out)


class FastOTLPSpanExporter(OTLPSpanExporter):
    """`OTLPSpanExporter` with `encode_request` in place of the SDK's message building."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(encode_request(data))

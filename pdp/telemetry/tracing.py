"""One span per Check, created after the fact with the call's real start and end times.

The observer runs after the answer is sent, on the writer thread, so tracing costs the request
path nothing: the span is started at `start_time` and ended at `start_time + latency`, under
the W3C trace context the caller sent in its gRPC metadata (`traceparent`, `tracestate`),
extracted with the configured propagator (`OTEL_PROPAGATORS`, W3C trace context by default).
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pdp.telemetry.decision_log import Summary
from pdp.telemetry.observation import Observation
from pdp.telemetry.otel_private import (
    TRACEPARENT_HEADER_FORMAT,
    TRACEPARENT_MAXIMUM_LENGTH,
    TRACESTATE_MAXIMUM_LENGTH,
    composite_propagators,
    tracer_scope,
)
from pdp.telemetry.otlp_spans import ld, span_bytes

SPAN_NAME = "pdp.Check"

# Only these metadata keys are handed to the propagator: the rest (`authorization` above all)
# has no business in trace context and is never copied out of the observation. The server's
# pdp.server.wire keeps the same set for what it sends a writer process.
PROPAGATION_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


def extract_context(metadata: Sequence[tuple[str, str | bytes]]) -> Context:
    carrier: dict[str, str] = {}
    for key, value in metadata:
        k = key.lower()
        if k in PROPAGATION_KEYS and isinstance(value, str):
            carrier[k] = value
    # An untraced caller (no propagation keys) starts a new trace; skip the propagators.
    return propagate.extract(carrier) if carrier else Context()


def w3c_parent(metadata: Sequence[tuple[str, str | bytes]]) -> SpanContext | None:
    """The caller's span context from its `traceparent` (and `tracestate`), exactly as the
    OpenTelemetry W3C trace-context propagator extracts it (the last value of each key
    counts, as in `extract_context`'s carrier); None when absent or invalid."""
    fields = w3c_fields(metadata)
    if fields is None:
        return None
    trace_id, span_id, flags, tracestate = fields
    state = None
    if tracestate is not None and len(tracestate) <= _TRACESTATE_MAX:
        state = TraceState.from_header([tracestate])
    return SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(flags),
        trace_state=state,
    )


def w3c_fields(
    metadata: Sequence[tuple[str, str | bytes]],
) -> tuple[str, str, int, str | None] | None:
    """`w3c_parent` before any object is built: (trace id and span id as lowercase hex, trace
    flags, the `tracestate` header or None), None when there is no valid parent."""
    traceparent = tracestate = None
    for key, value in metadata:
        k = key.lower()
        if k == "traceparent":
            if isinstance(value, str):
                traceparent = value
        elif k == "tracestate" and isinstance(value, str):
            tracestate = value
    if not traceparent or len(traceparent) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.search(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if (version == "00" and rest) or version == "ff":
        return None
    return trace_id, span_id, int(flags, 16), tracestate


def _w3c_only() -> bool:
    """Whether the configured propagators read the span context from W3C trace context
    alone (the default `tracecontext,baggage`, or `tracecontext`): baggage never changes it."""
    global _w3c_checked
    textmap = propagate.get_global_textmap()
    if _w3c_checked[0] is not textmap:
        fields = composite_propagators(textmap)
        kinds = [type(p) for p in fields] if fields is not None else [type(textmap)]
        w3c = (
            type(textmap) in (CompositePropagator, TraceContextTextMapPropagator)
            and TraceContextTextMapPropagator in kinds
            and all(k in (TraceContextTextMapPropagator, W3CBaggagePropagator) for k in kinds)
        )
        _w3c_checked = (textmap, w3c)
    return _w3c_checked[1]


_w3c_checked: tuple[object, bool] = (None, False)
_TRACEPARENT = re.compile(TRACEPARENT_HEADER_FORMAT)
_TRACEPARENT_MAX = TRACEPARENT_MAXIMUM_LENGTH
_TRACESTATE_MAX = TRACESTATE_MAXIMUM_LENGTH
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def record_span(
    tracer: Tracer | None,
    obs: Observation,
    *,
    decision_id: str = "",
    revision: str = "",
    summary: Summary | None = None,
) -> tuple[str, str]:
    """Create the Check span (when tracing is on); return (trace id, span id) as hex.

    `decision_id`, `revision` and `summary` are the call's (the writer has them already, from
    the response or from a cache hit's shared shape); `summary` is None when the call failed.
    With tracing off, the caller's trace id (if it sent one) is still returned, so decision
    records can be joined with the caller's trace.
    """
    parent = extract_context(obs.metadata)
    if tracer is None:
        ctx = trace.get_current_span(parent).get_span_context()
        return (trace.format_trace_id(ctx.trace_id) if ctx.is_valid else "", "")
    # Via whole microseconds: a float of unix seconds times 1e9 exceeds a double's exact
    # integers (2**53) and would land a few hundred nanoseconds off.
    start_ns = round(obs.start_time * 1e6) * 1000
    span = tracer.start_span(
        SPAN_NAME,
        context=parent,
        kind=SpanKind.SERVER,
        start_time=start_ns,
        attributes=_attributes(obs, decision_id, revision, summary),
    )
    if obs.error_code:
        span.set_status(Status(StatusCode.ERROR, f"{obs.error_code}: {obs.error_message}"[:200]))
    span.end(end_time=start_ns + round(obs.latency_s * 1e9))
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ("", "")
    return (trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id))


# (rpc path) -> (service, method): one rpc per servicer, split once.
_rpc_names: dict[str, tuple[str, str]] = {}


def _attributes(
    obs: Observation, decision_id: str, revision: str, summary: Summary | None
) -> Mapping[str, str | int]:
    return _call_attributes(obs.rpc, obs.error_code, decision_id, revision, summary)


def _call_attributes(
    rpc: str, error_code: str, decision_id: str, revision: str, summary: Summary | None
) -> Mapping[str, str | int]:
    names = _rpc_names.get(rpc)
    if names is None:
        service, _, method = rpc.lstrip("/").partition("/")
        names = _rpc_names[rpc] = (service, method)
    # Few attributes on purpose: the SDK validates each one, and the span's cost is paid on
    # the writer thread for every call. The rest of the story is in the decision-log record,
    # found by the trace id.
    attrs: dict[str, str | int] = {
        "rpc.system": "grpc",
        "rpc.service": names[0],
        "rpc.method": names[1],
    }
    if error_code:
        attrs["rpc.grpc.status"] = error_code
    if summary is not None:
        attrs["pdp.decision_id"] = decision_id
        attrs["pdp.bundle.revision"] = revision
        attrs["pdp.decisions.allow"] = summary.allow
        attrs["pdp.decisions.deny"] = summary.deny
        if summary.near_limits:
            attrs["pdp.rate_limit.near"] = summary.near_limits
        if summary.limited:
            attrs["pdp.rate_limit.limited"] = summary.limited
    return attrs


class EncodedSpans(Protocol):
    """Where `DirectSpans` hands its spans (an `EncodedSpanProcessor`)."""

    def add(
        self, resource: Resource, scope: InstrumentationScope, spans: Sequence[bytes]
    ) -> None: ...


class DirectSpans:
    """The Check span written straight to OTLP bytes, without an SDK `Span` object.

    Creating, validating and ending an SDK span, then encoding it, was the largest cost per
    call on the writer thread (~55 µs of ~110 µs), all of it holding the GIL the serving
    threads need. This makes the same span with the tracer's own sampler (so
    `OTEL_TRACES_SAMPLER` applies as usual), id generator, resource and scope, encodes it once
    and keeps its bytes until `flush`, which hands a whole write batch of spans to the
    `EncodedSpanProcessor`s (pdp.telemetry.span_batches) in one call. Used only when every span
    exporter is a `FastOTLPSpanExporter` (which sends encoded spans); any other exporter gets
    real SDK spans through `record_span`.
    """

    def __init__(self, tracer: Tracer, processors: Sequence[EncodedSpans], scope: str) -> None:
        sdk_tracer: Any = tracer
        self._sampler = sdk_tracer.sampler
        self._ids = sdk_tracer.id_generator
        self._resource = sdk_tracer.resource
        # The tracer's own scope: SDK spans of the same tracer are grouped with these.
        self._scope = tracer_scope(sdk_tracer) or InstrumentationScope(scope)
        self._processors = tuple(processors)
        # The default sampler (parent-based, always on: also what OTEL_TRACES_SAMPLER=
        # parentbased_always_on builds) is decided inline from the parent's flag, as it
        # would decide, without its SamplingResult; any other sampler is asked.
        self._default_sampler = (
            self._sampler.get_description() == sampling.DEFAULT_ON.get_description()
        )
        # The SDK's default generator is `random.getrandbits` looped until non-zero: called
        # directly (a zero id, 2**-64 likely, falls back to the generator itself).
        self._lean = self._default_sampler and type(self._ids) is RandomIdGenerator
        self._decision_formats: dict[tuple[str, str, int, int, bool, bool], bytes] = {}
        self._pending: list[bytes] = []  # spans recorded, not yet flushed

    def record(
        self,
        obs: Observation,
        decision_id: str = "",
        revision: str = "",
        summary: Summary | None = None,
    ) -> tuple[str, str]:
        """As `record_span`: (trace id, span id) as hex."""
        if self._lean:
            return self._record_lean(obs, decision_id, revision, summary)
        parent, parent_context = self._parent(obs.metadata)
        ids = self._ids
        trace_id = parent.trace_id if parent is not None else ids.generate_trace_id()
        if self._default_sampler:
            span_id = ids.generate_span_id()
            if not self._processors or (parent is not None and not parent.trace_flags.sampled):
                return (format(trace_id, "032x"), format(span_id, "016x"))
            attributes = _attributes(obs, decision_id, revision, summary)
            trace_state = parent.trace_state if parent is not None else None
            data = self._span(obs, trace_id, span_id, trace_state, parent, attributes)
        else:
            attributes = _attributes(obs, decision_id, revision, summary)
            result = self._sampler.should_sample(
                parent_context, trace_id, SPAN_NAME, SpanKind.SERVER, attributes, ()
            )
            span_id = ids.generate_span_id()
            if not self._processors or not result.decision.is_sampled():
                return (format(trace_id, "032x"), format(span_id, "016x"))
            trace_state = result.trace_state
            data = self._span(obs, trace_id, span_id, trace_state, parent, result.attributes or {})
        self._pending.append(data)
        return (format(trace_id, "032x"), format(span_id, "016x"))  # trace.format_*_id

    def _parent(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> tuple[SpanContext | None, Context | None]:
        """The caller's span context (None without a valid one), and the extracted context
        when the propagators had to be asked for it."""
        if not metadata:
            return None, None
        if self._default_sampler and _w3c_only():
            # The parent is all the default sampler and the span need: parsed as the W3C
            # propagator parses it, without building contexts for it.
            return w3c_parent(metadata), None
        parent_context = extract_context(metadata)
        parent = trace.get_current_span(parent_context).get_span_context()
        return (parent if parent.is_valid else None), parent_context

    def _record_lean(
        self, obs: Observation, decision_id: str, revision: str, summary: Summary | None
    ) -> tuple[str, str]:
        """`record` under the default sampler and id generator, decided and drawn inline; ids
        are hex from their bytes, which the span needs anyway."""
        metadata = obs.metadata
        if not metadata and summary is not None and not obs.error_code:
            return self.untraced_decision(
                obs.rpc, obs.start_time, obs.latency_s, decision_id, revision, summary
            )
        parent: SpanContext | None = None
        fields = w3c_fields(metadata) if metadata and _w3c_only() else None
        if fields is not None and fields[3] is None:
            # The common traced call, a W3C traceparent and no tracestate: the parent's ids
            # are taken from their hex, no span context built.
            trace_hex, parent_hex, flags, _ = fields
            trace_id = bytes.fromhex(trace_hex)
            parent_span: bytes | None = bytes.fromhex(parent_hex)
            sampled, remote = bool(flags & TraceFlags.SAMPLED), True
        else:
            parent = self._parent(metadata)[0]
            number = parent.trace_id if parent is not None else _getrandbits(128)
            trace_id = (number or self._ids.generate_trace_id()).to_bytes(16, "big")
            parent_span = parent.span_id.to_bytes(8, "big") if parent is not None else None
            sampled = parent is None or parent.trace_flags.sampled
            remote = parent is not None and parent.is_remote
        span_id = (_getrandbits(64) or self._ids.generate_span_id()).to_bytes(8, "big")
        if self._processors and sampled:
            if summary is not None and not obs.error_code and not (parent and parent.trace_state):
                data = self._decision_bytes(
                    obs.rpc, obs.start_time, obs.latency_s, trace_id, span_id, parent_span,
                    remote, decision_id, revision, summary,
                )  # fmt: skip
            else:
                # A failed call, or a vendor's tracestate (rare): the span encoded in full.
                if parent is None and parent_span is not None:
                    parent = w3c_parent(metadata)
                data = self._span(
                    obs,
                    int.from_bytes(trace_id, "big"),
                    int.from_bytes(span_id, "big"),
                    parent.trace_state if parent is not None else None,
                    parent,
                    _attributes(obs, decision_id, revision, summary),
                )
            self._pending.append(data)
        return trace_id.hex(), span_id.hex()

    @property
    def lean(self) -> bool:
        """Whether `untraced_decision` may be called: the default sampler and id generator."""
        return self._lean

    def untraced_decision(
        self,
        rpc: str,
        start_time: float,
        latency_s: float,
        decision_id: str,
        revision: str,
        summary: Summary,
    ) -> tuple[str, str]:
        """`record` of a decided call whose caller sent no trace context, when `lean`: the
        sampler's answer is known (a root span is sampled), so ids are drawn and the span
        encoded with nothing else to decide. Takes the call's values, not an observation:
        the writer's row lane has them unpacked already."""
        trace_id = (_getrandbits(128) or self._ids.generate_trace_id()).to_bytes(16, "big")
        span_id = (_getrandbits(64) or self._ids.generate_span_id()).to_bytes(8, "big")
        if self._processors:
            data = self._decision_bytes(
                rpc, start_time, latency_s, trace_id, span_id, None, False, decision_id,
                revision, summary,
            )  # fmt: skip
            self._pending.append(data)
        return trace_id.hex(), span_id.hex()

    def flush(self) -> None:
        """Hand the spans recorded since the last flush to the processors (once per batch)."""
        pending = self._pending
        if pending:
            self._pending = []
            for processor in self._processors:
                processor.add(self._resource, self._scope, pending)

    def _span(
        self,
        obs: Observation,
        trace_id: int,
        span_id: int,
        trace_state: Any,
        parent: SpanContext | None,
        attributes: Mapping[str, Any],
    ) -> bytes:
        start_ns = round(obs.start_time * 1e6) * 1000
        if obs.error_code:
            status: tuple[int, str | None] = (
                StatusCode.ERROR.value,
                f"{obs.error_code}: {obs.error_message}"[:200],
            )
        else:
            status = (StatusCode.UNSET.value, None)
        return span_bytes(
            trace_id,
            span_id,
            trace_state,
            parent,
            SPAN_NAME,
            SpanKind.SERVER,
            start_ns,
            start_ns + round(obs.latency_s * 1e9),
            attributes,
            0,
            *status,
        )

    def _decision_bytes(
        self,
        rpc: str,
        start_time: float,
        latency_s: float,
        trace_id: bytes,
        span_id: bytes,
        parent_span_id: bytes | None,
        remote: bool,
        decision_id: str,
        revision: str,
        summary: Summary,
    ) -> bytes:
        """A decision's span from the bytes format of its rpc, bundle, counts and kind of
        parent (none, local, remote; no tracestate)."""
        parent = parent_span_id is not None
        key = (rpc, revision, summary.allow, summary.deny, parent, remote)
        text = self._decision_formats.get(key)
        if text is None:
            if len(self._decision_formats) >= _MAX_DECISION_FORMATS:
                self._decision_formats.clear()
            text = self._decision_formats[key] = _decision_format(
                rpc, revision, summary, parent, remote
            )
        start_ns = round(start_time * 1e6) * 1000
        decision = decision_id.encode()
        prefix = _decision_prefixes.get(len(decision))
        if prefix is None:
            prefix = _decision_prefix(len(decision))
        if parent_span_id is None:
            return text % (
                trace_id,
                span_id,
                _pack_times(start_ns, 0x41, start_ns + round(latency_s * 1e9)),
                prefix,
                decision,
            )
        return text % (
            trace_id,
            span_id,
            parent_span_id,
            _pack_times(start_ns, 0x41, start_ns + round(latency_s * 1e9)),
            prefix,
            decision,
        )


# Span formats per (rpc, revision, allow, deny, parent, remote parent); few distinct ones exist.
_MAX_DECISION_FORMATS = 1024
_pack_q = struct.Struct("<Q").pack
# start_time_unix_nano (field 7, its tag written by the format) and end_time_unix_nano (field
# 8, tag 0x41), both fixed64, in one pack.
_pack_times = struct.Struct("<QBQ").pack
_DECISION_ID_KEY = ld(0x0A, b"pdp.decision_id")


def _decision_parts(
    rpc: str, revision: str, summary: Summary, remote: bool
) -> tuple[bytes, bytes, bytes]:
    """The bytes of a decision's span around its per-call fields, cut out of a whole span
    encoded by `span_bytes` (so the two encodings cannot drift apart): (name and kind, the
    attributes before `pdp.decision_id`, everything after it)."""
    marker = "\x00" * 8
    parent = (
        SpanContext(1, 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        if remote
        else None
    )
    attributes = _call_attributes(rpc, "", marker, revision, summary)
    whole = span_bytes(1, 1, None, parent, SPAN_NAME, SpanKind.SERVER, 0, 0, attributes, 0, 0)
    name_at = whole.index(ld(0x2A, SPAN_NAME.encode()))
    start_at = whole.index(b"\x39" + _pack_q(0), name_at)
    attrs_at = start_at + 18  # start and end times: 9 bytes each
    decision = ld(0x4A, _DECISION_ID_KEY + ld(0x12, ld(0x0A, marker.encode())))
    decision_at = whole.index(decision, attrs_at)
    return (
        whole[name_at:start_at],
        whole[attrs_at:decision_at],
        whole[decision_at + len(decision) :],
    )


def _decision_format(
    rpc: str, revision: str, summary: Summary, has_parent: bool, remote: bool
) -> bytes:
    """A decision's span as a bytes `%` format: trace id, span id, (parent span id,) start,
    end, the decision-id attribute's prefix and the decision id go in, in that order."""
    head, middle, tail = (
        part.replace(b"%", b"%%") for part in _decision_parts(rpc, revision, summary, remote)
    )
    ids = b"\x0a\x10%b\x12\x08%b"  # trace_id = 1, span_id = 2
    if has_parent:
        ids += b"\x22\x08%b"  # parent_span_id = 4
    # start_time_unix_nano = 7 and end_time_unix_nano = 8 (fixed64): one `%b` (_pack_times)
    return ids + head + b"\x39%b" + middle + b"%b%b" + tail


def _decision_prefix(length: int) -> bytes:
    """The `pdp.decision_id` attribute (a `KeyValue` in `Span.attributes`) up to the id's own
    bytes, for an id of `length` bytes."""
    marker = b"\x00" * length
    whole = ld(0x4A, _DECISION_ID_KEY + ld(0x12, ld(0x0A, marker)))
    prefix = whole[:-length] if length else whole
    if len(_decision_prefixes) < 64:
        _decision_prefixes[length] = prefix
    return prefix


_decision_prefixes: dict[int, bytes] = {}
_getrandbits = random.getrandbits

"""One span per Check, created after the fact with the call's real start and end times.

The observer runs after the answer is sent, on the writer thread, so tracing costs the request
path nothing: the span is started at `start_time` and ended at `start_time + latency`, under
the W3C trace context the caller sent in its gRPC metadata (`traceparent`, `tracestate`),
extracted with the configured propagator (`OTEL_PROPAGATORS`, W3C trace context by default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanProcessor, sampling
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from pdp.telemetry.decision_log import Summary
from pdp.telemetry.observation import Observation
from pdp.telemetry.otlp_spans import EncodedSpan, span_bytes

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
    names = _rpc_names.get(obs.rpc)
    if names is None:
        service, _, method = obs.rpc.lstrip("/").partition("/")
        names = _rpc_names[obs.rpc] = (service, method)
    # Few attributes on purpose: the SDK validates each one, and the span's cost is paid on
    # the writer thread for every call. The rest of the story is in the decision-log record,
    # found by the trace id.
    attrs: dict[str, str | int] = {
        "rpc.system": "grpc",
        "rpc.service": names[0],
        "rpc.method": names[1],
    }
    if obs.error_code:
        attrs["rpc.grpc.status"] = obs.error_code
    if summary is not None:
        attrs["pdp.decision_id"] = decision_id
        attrs["pdp.bundle.revision"] = revision
        attrs["pdp.decisions.allow"] = summary.allow
        attrs["pdp.decisions.deny"] = summary.deny
    return attrs


class DirectSpans:
    """The Check span written straight to OTLP bytes, without an SDK `Span` object.

    Creating, validating and ending an SDK span, then encoding it, was the largest cost per
    call on the writer thread (~55 µs of ~110 µs), all of it holding the GIL the serving
    threads need. This makes the same span with the tracer's own sampler (so
    `OTEL_TRACES_SAMPLER` applies as usual), id generator, resource and scope, encodes it once
    and hands it to the provider's batch span processors, whose exporter sends it. Used only
    when every span exporter is a `FastOTLPSpanExporter` (which accepts encoded spans); any
    other exporter gets real SDK spans through `record_span`.
    """

    def __init__(self, tracer: Tracer, processors: Sequence[SpanProcessor], scope: str) -> None:
        sdk_tracer: Any = tracer
        self._sampler = sdk_tracer.sampler
        self._ids = sdk_tracer.id_generator
        self._resource = sdk_tracer.resource
        self._scope = InstrumentationScope(scope)
        self._processors = tuple(processors)
        # The default sampler (parent-based, always on: also what OTEL_TRACES_SAMPLER=
        # parentbased_always_on builds) is decided inline from the parent's flag, as it
        # would decide, without its SamplingResult; any other sampler is asked.
        self._default_sampler = (
            self._sampler.get_description() == sampling.DEFAULT_ON.get_description()
        )

    def record(
        self,
        obs: Observation,
        *,
        decision_id: str = "",
        revision: str = "",
        summary: Summary | None = None,
    ) -> tuple[str, str]:
        """As `record_span`: (trace id, span id) as hex."""
        parent_context = extract_context(obs.metadata)
        parent: SpanContext | None = trace.get_current_span(parent_context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        else:
            parent = None
            trace_id = self._ids.generate_trace_id()
            random_trace_id = self._ids.is_trace_id_random()
        attributes: Mapping[str, Any] = _attributes(obs, decision_id, revision, summary)
        if self._default_sampler:
            sampled = parent is None or parent.trace_flags.sampled
            trace_state = parent.trace_state if parent is not None else None
        else:
            result = self._sampler.should_sample(
                parent_context, trace_id, SPAN_NAME, SpanKind.SERVER, attributes, ()
            )
            sampled = result.decision.is_sampled()
            trace_state = result.trace_state
            attributes = result.attributes or {}
        span_id = self._ids.generate_span_id()
        if sampled:
            flags = TraceFlags.SAMPLED | (TraceFlags.RANDOM_TRACE_ID if random_trace_id else 0)
            context = SpanContext(
                trace_id,
                span_id,
                is_remote=False,
                trace_flags=TraceFlags(flags),
                trace_state=trace_state,
            )
            start_ns = round(obs.start_time * 1e6) * 1000
            if obs.error_code:
                status: tuple[int, str | None] = (
                    StatusCode.ERROR.value,
                    f"{obs.error_code}: {obs.error_message}"[:200],
                )
            else:
                status = (StatusCode.UNSET.value, None)
            data = span_bytes(
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
            span = EncodedSpan(context, self._resource, self._scope, data)
            for processor in self._processors:
                processor.on_end(span)  # type: ignore[arg-type]
        return (format(trace_id, "032x"), format(span_id, "016x"))  # trace.format_*_id

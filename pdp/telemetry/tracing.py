"""One span per Check, created after the fact with the call's real start and end times.

The observer runs after the answer is sent, on the writer (thread or process), so tracing
costs the request path nothing: the span is started at `start_time` and ended at
`start_time + latency`, under the trace context the caller sent in its gRPC metadata
(`traceparent`, `tracestate`, `baggage`), extracted by the configured propagator
(`OTEL_PROPAGATORS`, W3C trace context and baggage by default).

With the SDK's tracer the span is handed to its processors already finished (`ReadableSpan`),
as `start_span` then `end` would hand it: the SDK's live `Span` (a lock, attribute limits
applied again, two processor calls) cost the writer about 20 µs per call, a tenth of its work,
for a span that is complete when it is made. The attribute limits an operator sets
(`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT` and their
`OTEL_ATTRIBUTE_*` defaults) are applied here as the live span applies them. `tests/telemetry/test_tracing.py` holds the two
ways to the same exported bytes, so an SDK upgrade that changes what `start_span` does fails
there.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from pdp.ratelog import RateLimitedLog, printable
from pdp.telemetry.decision_log import Summary
from pdp.telemetry.observation import Observation

SPAN_NAME = "pdp.Check"

# Only these metadata keys are handed to the propagator: the rest (`authorization` above all)
# has no business in trace context and is never copied out of the observation. The server's
# pdp.server.wire keeps the same set for what it sends a writer process.
PROPAGATION_KEYS = frozenset({"traceparent", "tracestate", "baggage"})

# The modules whose loggers complain about a malformed `traceparent`, `tracestate` or
# `baggage`: any caller chooses those headers, and the SDK logs a warning per call quoting
# them whole (an 8 KB `tracestate` was an 8 KB line per call, with whatever bytes it held).
PROPAGATION_LOGGERS = (
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.trace.span",  # TraceState, which parses `tracestate`
    "opentelemetry.baggage.propagation",
)
# At most one line per logger per this many seconds, the rest counted.
PROPAGATION_LOG_EVERY_S = 60.0


class _CallerHeaderLog(logging.Filter):
    """Lets one record per logger per interval through, made one printable line of at most
    200 characters (`pdp.ratelog`), with the count of those suppressed before it."""

    def __init__(self) -> None:
        super().__init__()
        self._limit = RateLimitedLog(logging.getLogger(__name__), PROPAGATION_LOG_EVERY_S)

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self._limit.admit(record.name)
        if suppressed is None:
            return False
        text = printable(record.getMessage())
        record.msg = f"trace context header: {text}{self._limit.suppressed_note(suppressed)}"
        record.args = None
        return True


_PROPAGATION_FILTER = _CallerHeaderLog()
for _name in PROPAGATION_LOGGERS:
    logging.getLogger(_name).addFilter(_PROPAGATION_FILTER)


def extract_context(metadata: Sequence[tuple[str, str | bytes]]) -> Context:
    carrier = {
        key.lower(): value
        for key, value in metadata
        if key.lower() in PROPAGATION_KEYS and isinstance(value, str)
    }
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

    `summary` is None when the call failed. With tracing off, the caller's trace id (if it
    sent one) is still returned, so decision records can be joined with the caller's trace.
    """
    parent = extract_context(obs.metadata)
    if tracer is None:
        ctx = trace.get_current_span(parent).get_span_context()
        return (trace.format_trace_id(ctx.trace_id) if ctx.is_valid else "", "")
    # Via whole microseconds: a float of unix seconds times 1e9 exceeds a double's exact
    # integers (2**53) and would land a few hundred nanoseconds off.
    start_ns = round(obs.start_time * 1e6) * 1000
    end_ns = start_ns + round(obs.latency_s * 1e9)
    attributes = _call_attributes(obs.rpc, obs.error_code, decision_id, revision, summary)
    status = (
        Status(StatusCode.ERROR, f"{obs.error_code}: {obs.error_message}"[:200])
        if obs.error_code
        else Status(StatusCode.UNSET)
    )
    if isinstance(tracer, sdk_trace.Tracer):
        ctx = _finished_span(tracer, parent, start_ns, end_ns, attributes, status)
    else:  # another API implementation (or the SDK disabled: a no-op tracer)
        span = tracer.start_span(
            SPAN_NAME,
            context=parent,
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes=attributes,
        )
        if obs.error_code:
            span.set_status(status)
        span.end(end_time=end_ns)
        ctx = span.get_span_context()
    if not ctx.is_valid:
        return ("", "")
    return (trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id))


def _finished_span(
    tracer: sdk_trace.Tracer,
    parent: Context,
    start_ns: int,
    end_ns: int,
    attributes: dict[str, str | int],
    status: Status,
) -> SpanContext:
    """The span `tracer.start_span(...)` and `end(...)` would make, given to the tracer's
    processors when sampled; its context either way (the record names its trace)."""
    parent_ctx: SpanContext | None = trace.get_current_span(parent).get_span_context()
    ids = tracer.id_generator
    if parent_ctx is None or not parent_ctx.is_valid:
        parent_ctx = None
        trace_id, random_id = ids.generate_trace_id(), ids.is_trace_id_random()
    else:
        trace_id, random_id = parent_ctx.trace_id, parent_ctx.trace_flags.random_trace_id
    sampled = tracer.sampler.should_sample(parent, trace_id, SPAN_NAME, SpanKind.SERVER, attributes)
    flags = TraceFlags.SAMPLED if sampled.decision.is_sampled() else TraceFlags.DEFAULT
    if random_id:
        flags |= TraceFlags.RANDOM_TRACE_ID
    ctx = SpanContext(
        trace_id,
        ids.generate_span_id(),
        is_remote=False,
        trace_flags=TraceFlags(flags),
        trace_state=sampled.trace_state,
    )
    if sampled.decision.is_recording():
        info = tracer.instrumentation_info
        span = sdk_trace.ReadableSpan(
            SPAN_NAME,
            context=ctx,
            parent=parent_ctx,
            resource=tracer.resource,
            attributes=_bounded(sampled.attributes),
            kind=SpanKind.SERVER,
            status=status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=InstrumentationScope(info.name, info.version, info.schema_url),
        )
        tracer.span_processor.on_end(span)
    return ctx


@functools.cache
def _span_limits() -> sdk_trace.SpanLimits:
    # What a `TracerProvider` built without `span_limits` applies (pdp.telemetry.otel builds
    # it so): the OTEL_SPAN_ATTRIBUTE_* and OTEL_ATTRIBUTE_* variables, read once.
    return sdk_trace.SpanLimits()


def _bounded(attributes: Mapping[str, object] | None) -> Mapping[str, object] | None:
    """The attributes as the SDK's live span keeps them under the operator's limits: only
    when a limit can bite are they copied through `BoundedAttributes` (which a span's
    str and int values pass unchanged otherwise)."""
    limits = _span_limits()
    if not attributes or (
        limits.max_span_attribute_length is None and len(attributes) <= limits.max_span_attributes
    ):
        return attributes
    return BoundedAttributes(
        limits.max_span_attributes,
        attributes,  # type: ignore[arg-type]
        immutable=False,
        max_value_len=limits.max_span_attribute_length,
    )


def _call_attributes(
    rpc: str, error_code: str, decision_id: str, revision: str, summary: Summary | None
) -> dict[str, str | int]:
    # Few attributes on purpose: the rest of the story is in the decision-log record, found
    # by the trace id.
    service, _, method = rpc.lstrip("/").partition("/")
    attrs: dict[str, str | int] = {
        "rpc.system": "grpc",
        "rpc.service": service,
        "rpc.method": method,
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

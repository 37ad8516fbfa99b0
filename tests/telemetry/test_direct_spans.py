"""Spans written without SDK span objects (DirectSpans) are the spans the SDK would export."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from pdp.telemetry.decision_log import summarize
from pdp.telemetry.otel import make_resource, setup_otel
from pdp.telemetry.otlp_spans import SpanChunk, encode_request
from pdp.telemetry.tracing import DirectSpans, record_span

from .conftest import TRACE_ID, ObsFactory


class Collect:
    """Stands in for an EncodedSpanProcessor: keeps what `DirectSpans.flush` hands over."""

    def __init__(self) -> None:
        self.spans: list[bytes] = []
        self.adds: list[tuple[Any, Any, int]] = []

    def add(self, resource: Any, scope: Any, spans: Any) -> None:
        self.adds.append((resource, scope, len(spans)))
        self.spans.extend(spans)


def _setup(**provider_args: Any) -> tuple[Any, InMemorySpanExporter, Collect, DirectSpans]:
    """A tracer whose SDK spans land in memory, and DirectSpans on the same tracer."""
    provider = TracerProvider(resource=make_resource(), **provider_args)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("pdp")
    collect = Collect()
    return tracer, memory, collect, DirectSpans(tracer, [collect], "pdp")


def _pair(obs: Any, **provider_args: Any) -> tuple[Span | None, Span | None, tuple[str, str]]:
    """The span DirectSpans writes for `obs` and the one the SDK makes (same span id)."""
    tracer, memory, collect, direct = _setup(**provider_args)
    response = obs.response
    kwargs: dict[str, Any] = {"decision_id": "", "revision": "", "summary": None}
    if response is not None:
        kwargs = {
            "decision_id": response.decision_id,
            "revision": response.bundle.revision,
            "summary": summarize(response),
        }
    ids = direct.record(obs, **kwargs)
    direct.flush()
    record_span(tracer, obs, **kwargs)
    got = Span.FromString(collect.spans[0]) if collect.spans else None
    sdk = memory.get_finished_spans()
    want = _encode_span(sdk[0]) if sdk else None
    if got is not None and want is not None:
        want.span_id = got.span_id
    return got, want, ids


def test_direct_span_is_the_sdk_span(make_obs: ObsFactory) -> None:
    got, want, (trace_id, span_id) = _pair(make_obs())
    assert got is not None and got == want
    assert got.trace_id.hex() == TRACE_ID == trace_id  # joins the caller's trace
    assert got.span_id.hex() == span_id


def test_direct_span_of_a_failed_call(make_obs: ObsFactory) -> None:
    obs = make_obs(error_code="INVALID_ARGUMENT", error_message="bad request")
    object.__setattr__(obs, "response", None)
    got, want, _ = _pair(obs)
    assert got is not None and got == want
    assert got.status.code == 2 and got.status.message.startswith("INVALID_ARGUMENT")


def test_sampler_is_honoured(make_obs: ObsFactory) -> None:
    # Not sampled: nothing exported, but the record still gets the call's trace id.
    got, want, (trace_id, _span_id) = _pair(make_obs(metadata=()), sampler=ALWAYS_OFF)
    assert got is None and want is None
    assert len(trace_id) == 32


def test_a_batch_of_spans_is_handed_over_at_once_and_grouped_as_the_sdk_groups(
    make_obs: ObsFactory,
) -> None:
    tracer, memory, collect, direct = _setup()
    for _ in range(3):
        direct.record(make_obs())
    assert collect.adds == []  # nothing until the batch is flushed
    direct.flush()
    direct.flush()  # nothing new: no empty hand-over
    assert [n for _, _, n in collect.adds] == [3]
    resource, scope, _ = collect.adds[0]
    record_span(tracer, make_obs())  # an SDK span of the same resource and scope
    chunk = SpanChunk(resource, scope, collect.spans)
    request = ExportTraceServiceRequest.FromString(
        encode_request([chunk, *memory.get_finished_spans()])
    )
    (rs,) = request.resource_spans
    (ss,) = rs.scope_spans
    assert ss.scope.name == "pdp" and len(ss.spans) == 4
    assert [s.SerializeToString() for s in ss.spans[:3]] == collect.spans


def test_default_sampler_follows_an_unsampled_parent(make_obs: ObsFactory) -> None:
    # The default sampler is decided inline: a caller that did not sample gets no span.
    unsampled = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-00"),)
    got, want, (trace_id, _span_id) = _pair(make_obs(metadata=unsampled))
    assert got is None and want is None
    assert trace_id == TRACE_ID


def test_untraced_call_starts_its_own_trace(make_obs: ObsFactory) -> None:
    # No propagation keys: a new trace, no parent, otherwise the SDK's span.
    got, want, (trace_id, span_id) = _pair(make_obs(metadata=()))
    assert got is not None and want is not None
    assert got.parent_span_id == b"" and got.trace_id.hex() == trace_id != TRACE_ID
    want.trace_id = got.trace_id  # each made its own random trace id
    assert got == want and got.span_id.hex() == span_id


def test_repeated_decisions_share_encoded_parts_yet_differ_per_call(make_obs: ObsFactory) -> None:
    # Calls with the same rpc, bundle and counts reuse the encoded attributes; each span still
    # carries its own decision id, times and ids, exactly as the SDK encodes them.
    tracer, memory, collect, direct = _setup()
    for i, traced in enumerate([True, False, True, False]):
        obs = make_obs(decision_id=f"dec-{i}", **({} if traced else {"metadata": ()}))
        object.__setattr__(obs, "start_time", obs.start_time + i)
        response = obs.response
        assert response is not None
        kwargs: dict[str, Any] = {
            "decision_id": response.decision_id,
            "revision": response.bundle.revision,
            "summary": summarize(response),
        }
        direct.record(obs, **kwargs)
        record_span(tracer, obs, **kwargs)
    direct.flush()
    sdk = memory.get_finished_spans()
    assert len(collect.spans) == len(sdk) == 4
    seen = set()
    for mine, theirs in zip(collect.spans, sdk):
        got, want = Span.FromString(mine), _encode_span(theirs)
        want.span_id = got.span_id
        if not got.parent_span_id:
            want.trace_id = got.trace_id
        assert got == want
        attrs = {kv.key: kv.value.string_value for kv in got.attributes}
        seen.add((attrs["pdp.decision_id"], got.start_time_unix_nano))
    assert len(seen) == 4


def test_a_callers_tracestate_is_kept_as_the_sdk_keeps_it(make_obs: ObsFactory) -> None:
    metadata = (
        ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),
        ("tracestate", "vendor=abc,other=x"),
    )
    got, want, (trace_id, _span_id) = _pair(make_obs(metadata=metadata))
    assert got is not None and got == want
    assert got.trace_state == "vendor=abc,other=x" and trace_id == TRACE_ID
    assert got.parent_span_id.hex() == "00f067aa0ba902b7"


def test_a_decision_span_format_keeps_percent_signs(make_obs: ObsFactory) -> None:
    # The shared span parts become a bytes `%` format: a revision holding `%` is escaped there,
    # and a decision id holding it goes in as it is.
    tracer, memory, collect, direct = _setup()
    obs = make_obs()
    assert obs.response is not None
    kwargs: dict[str, Any] = {
        "decision_id": "dec-%b-%s",
        "revision": "rev-100%-%b",
        "summary": summarize(obs.response),
    }
    direct.record(obs, **kwargs)
    direct.flush()
    record_span(tracer, obs, **kwargs)
    got, want = Span.FromString(collect.spans[0]), _encode_span(memory.get_finished_spans()[0])
    want.span_id = got.span_id
    assert got == want
    attrs = {kv.key: kv.value.string_value for kv in got.attributes}
    assert attrs["pdp.bundle.revision"] == "rev-100%-%b"
    assert attrs["pdp.decision_id"] == "dec-%b-%s"


def test_without_a_span_exporter_records_get_ids_and_no_span_is_built(
    make_obs: ObsFactory,
) -> None:
    # OTEL_TRACES_EXPORTER=none with tracing on: the cheap path still numbers each call (the
    # record's trace_id and span_id, the caller's trace kept) but builds no span bytes.
    otel = setup_otel(span_exporters=[], metrics=False)
    direct = otel.direct_spans
    assert direct is not None
    traced = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),)
    for metadata in ((), traced):
        obs = make_obs(metadata=metadata)
        response = obs.response
        trace_id, span_id = direct.record(
            obs, response.decision_id, response.bundle.revision, summarize(response)
        )
        assert len(trace_id) == 32 and len(span_id) == 16 and int(span_id, 16)
        assert (trace_id == TRACE_ID) == bool(metadata)
    assert direct._pending == []
    otel.shutdown()

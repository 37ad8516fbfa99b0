"""The Check span written straight to the SDK's processors is the span `start_span` makes.

`pdp.telemetry.tracing` builds the finished span itself when the tracer is the SDK's (it saves
the writer the live `Span`'s work); any other tracer goes through `start_span` and `end`. Here
both ways run on the same observation, with the same ids, sampler and resource, and what they
export must encode to the same OTLP bytes: an SDK upgrade that changes what `start_span` puts
in a span fails here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from pdp.telemetry import tracing
from pdp.telemetry.decision_log import Summary
from pdp.telemetry.tracing import record_span

from .conftest import PARENT_SPAN_ID, TRACE_ID, ObsFactory


class _CountingIds(IdGenerator):
    """The same ids in the same order for both providers."""

    def __init__(self, random: bool) -> None:
        self._next = itertools.count(1)
        self._random = random

    def generate_span_id(self) -> int:
        return next(self._next)

    def generate_trace_id(self) -> int:
        # Spread over the 64 bits TraceIdRatioBased reads, so a ratio keeps some and not others.
        return (next(self._next) * 0x9E3779B97F4A7C15) % 2**128 or 1

    def is_trace_id_random(self) -> bool:
        return self._random


class _ApiOnly(trace.Tracer):
    """The SDK's tracer seen only through the API: `record_span` takes the `start_span` way."""

    def __init__(self, inner: trace.Tracer) -> None:
        self._inner = inner

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._inner.start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.start_as_current_span(*args, **kwargs)


class _Seen(SpanProcessor):
    """Every span a processor is handed, sampled or not (an exporter sees sampled ones only)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


Provider = tuple[TracerProvider, _Seen]


@pytest.fixture
def providers() -> Iterator[Callable[[Sampler, bool], tuple[Provider, Provider]]]:
    made: list[TracerProvider] = []

    def make(sampler: Sampler, random: bool) -> tuple[Provider, Provider]:
        pair = []
        for _ in range(2):
            seen, exporter = _Seen(), InMemorySpanExporter()
            provider = TracerProvider(
                sampler=sampler,
                resource=Resource({"service.name": "pdp-test"}),
                id_generator=_CountingIds(random),
            )
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            provider.add_span_processor(seen)
            made.append(provider)
            pair.append((provider, seen))
        return pair[0], pair[1]

    yield make
    for provider in made:
        provider.shutdown()


UNSAMPLED_PARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-00"

CALLS: dict[str, dict[str, Any]] = {
    "traced caller": {},
    "untraced caller": {"metadata": ()},
    "caller that did not sample": {"metadata": (("traceparent", UNSAMPLED_PARENT),)},
    "with tracestate": {
        "metadata": (
            ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"),
            ("tracestate", "vendor=abc,other=1"),
        )
    },
    "failed call": {"error_code": "INVALID_ARGUMENT", "error_message": "principal.id: required"},
    "failed untraced call": {"metadata": (), "error_code": "DEADLINE_EXCEEDED"},
}

SAMPLERS: dict[str, Sampler] = {
    "parent-based always on (the default)": ParentBased(ALWAYS_ON),
    "always on": ALWAYS_ON,
    "always off": ALWAYS_OFF,
    "ratio 0.5": TraceIdRatioBased(0.5),
}


@pytest.mark.parametrize("random_ids", [True, False], ids=["random ids", "plain ids"])
@pytest.mark.parametrize("sampler", list(SAMPLERS), ids=list(SAMPLERS))
@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
def test_the_finished_span_is_the_span_start_span_makes(
    make_obs: ObsFactory,
    providers: Callable[[Sampler, bool], tuple[Provider, Provider]],
    call: str,
    sampler: str,
    random_ids: bool,
) -> None:
    (direct, direct_out), (api, api_out) = providers(SAMPLERS[sampler], random_ids)
    fields = {"start_time": 1_700_000_000.25, "latency_s": 0.003, **CALLS[call]}
    ids = []
    for n in range(8):  # several calls, so a ratio sampler keeps some and drops others
        obs = make_obs(decision_id=f"dec-{n}", **fields)
        got = record_span(direct.get_tracer("pdp"), obs, decision_id=f"dec-{n}", revision="r1")
        want = record_span(
            _ApiOnly(api.get_tracer("pdp")), obs, decision_id=f"dec-{n}", revision="r1"
        )
        assert got == want
        ids.append(got)
    assert all(trace_id for trace_id, _ in ids)
    exported, expected = direct_out.spans, api_out.spans
    assert len(exported) == len(expected)
    assert encode_spans(exported).SerializeToString() == encode_spans(expected).SerializeToString()
    # What the OTLP encoding leaves out: trace flags and state, as an in-process exporter sees.
    assert [(s.context, s.parent) for s in exported] == [(s.context, s.parent) for s in expected]
    if sampler == "always off" or (call == "caller that did not sample" and "parent" in sampler):
        assert exported == []
    elif sampler == "ratio 0.5":
        if not CALLS[call].get("metadata", True):  # our trace ids: some kept, some not
            assert 0 < len(exported) < 8
    else:
        assert len(exported) == 8


# The variables an operator sets, and the attribute count and value length they allow.
LIMITS: dict[str, tuple[dict[str, str], int | None, int | None]] = {
    "value length": ({"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5"}, None, 5),
    "attribute count": ({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3"}, 3, None),
    "the general ones": (
        {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4", "OTEL_ATTRIBUTE_COUNT_LIMIT": "2"},
        2,
        4,
    ),
}


@pytest.mark.parametrize("limits", list(LIMITS), ids=list(LIMITS))
def test_the_operators_attribute_limits_bound_the_finished_span_too(
    make_obs: ObsFactory,
    providers: Callable[[Sampler, bool], tuple[Provider, Provider]],
    monkeypatch: pytest.MonkeyPatch,
    limits: str,
) -> None:
    env, max_count, max_length = LIMITS[limits]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tracing._span_limits.cache_clear()  # read once per process: read this test's
    try:
        (direct, direct_out), (api, api_out) = providers(ParentBased(ALWAYS_ON), True)
        obs = make_obs(start_time=1_700_000_000.25, latency_s=0.003)
        summary = Summary(decisions=(("allow", "owner", 2),), checks=2, allow=2, deny=0)
        for tracer in (direct.get_tracer("pdp"), _ApiOnly(api.get_tracer("pdp"))):
            record_span(tracer, obs, decision_id="dec-long-id", revision="rev-1", summary=summary)
    finally:
        monkeypatch.undo()
        tracing._span_limits.cache_clear()
    (got,), (want,) = direct_out.spans, api_out.spans
    assert encode_spans([got]).SerializeToString() == encode_spans([want]).SerializeToString()
    # The limits did bite (the span has 7 attributes, the decision id 11 characters).
    attributes = dict(got.attributes or {})
    if max_count is not None:
        assert len(attributes) == max_count and got.dropped_attributes == 7 - max_count
    if max_length is not None:
        assert all(len(v) <= max_length for v in attributes.values() if isinstance(v, str))
        assert (
            attributes.get("pdp.decision_id", "dec-long-id"[:max_length])
            == "dec-long-id"[:max_length]
        )

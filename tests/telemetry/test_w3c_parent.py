"""The writer's own traceparent parsing agrees with the OpenTelemetry W3C propagator, fuzzed."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace

from pdp.telemetry.tracing import _w3c_only, extract_context, w3c_parent

HEX = "0123456789abcdef"


def sdk_parent(metadata: Any) -> tuple[Any, ...] | None:
    ctx = trace.get_current_span(extract_context(metadata)).get_span_context()
    return key(ctx) if ctx.is_valid else None


def key(ctx: Any) -> tuple[Any, ...] | None:
    if ctx is None:
        return None
    return (ctx.trace_id, ctx.span_id, int(ctx.trace_flags), ctx.is_remote,
            tuple(ctx.trace_state.items()))  # fmt: skip


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(HEX, min_size=n, max_size=n),
        st.just("0" * n),
        st.text(HEX + "ABCDEFxg-", min_size=n - 1, max_size=n + 1),
    )


traceparents = st.one_of(
    st.builds(
        lambda pad, v, t, s, f, rest, tail: f"{pad}{v}-{t}-{s}-{f}{rest}{tail}",
        st.sampled_from(["", " ", "\t", "  "]),
        st.sampled_from(["00", "01", "cc", "ff", "0", "0g", "FF"]),
        hexes(32),
        hexes(16),
        st.sampled_from(["00", "01", "03", "ff", "1", "zz"]),
        st.sampled_from(["", "-", "-extra", "-00", "x"]),
        st.sampled_from(["", " ", "\t", "\n"]),
    ),
    st.text(max_size=80),
)
tracestates = st.one_of(
    st.none(),
    st.sampled_from(["vendor=abc", "a=1,b=2", "bad state", "k=v" * 200, "", "x@y=z"]),
    st.text(max_size=40),
)


@settings(max_examples=3000, deadline=None)
@given(
    traceparents,
    tracestates,
    st.booleans(),
    st.sampled_from(["traceparent", "Traceparent", "TRACEPARENT"]),
    st.booleans(),
)
def test_agrees_with_the_propagator(
    traceparent: str, tracestate: str | None, twice: bool, name: str, baggage: bool
) -> None:
    assert _w3c_only()  # the default propagators: tracecontext, baggage
    metadata: list[tuple[str, str | bytes]] = [("user-agent", "grpc-python")]
    if twice:
        metadata.append(("traceparent", f"00-{'1' * 32}-{'2' * 16}-01"))
    metadata.append((name, traceparent))
    if tracestate is not None:
        metadata.append(("tracestate", tracestate))
    if baggage:
        metadata.append(("baggage", "user=alice"))
    metadata.append(("traceparent-bin", b"\x00"))
    assert key(w3c_parent(metadata)) == sdk_parent(metadata)


def test_other_propagators_are_left_to_opentelemetry(monkeypatch: Any) -> None:
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator

    class Custom(CompositePropagator):
        pass

    original = propagate.get_global_textmap()
    try:
        propagate.set_global_textmap(Custom([]))
        assert not _w3c_only()
    finally:
        propagate.set_global_textmap(original)
    assert _w3c_only()

"""Private OpenTelemetry names live in pdp/telemetry/otel_private.py only, for a pinned SDK
range; an upgrade that moves one fails here, naming it."""

from __future__ import annotations

import re
from importlib.metadata import version

from opentelemetry import propagate
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind
from packaging.specifiers import SpecifierSet

from pdp.telemetry import otel_private as op

from ._support import ROOT

PRIVATE = re.compile(
    r"opentelemetry(?:\.\w+)*\._\w+"  # a private module or name of opentelemetry
    r"|\._(?:propagators|receive_metrics|instrument_class_temporality|instrumentation_scope)\b"
    r"|\._TRACEPARENT_\w+|_TRACECONTEXT_MAXIMUM\w*"
)


def test_no_private_opentelemetry_name_outside_the_one_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("pdp", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "otel_private.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, "private OpenTelemetry names outside otel_private.py:\n" + "\n".join(
        offenders
    )


def test_installed_sdk_is_in_the_checked_range() -> None:
    for dist in (
        "opentelemetry-sdk",
        "opentelemetry-api",
        "opentelemetry-exporter-otlp-proto-grpc",
    ):
        installed = version(dist)
        assert installed in SpecifierSet(op.TESTED_SDK), (
            f"{dist} {installed} is outside {op.TESTED_SDK}, the range the private names in "
            "pdp/telemetry/otel_private.py were checked against: check each of them (this file's "
            "tests), then widen TESTED_SDK and the pin in pyproject.toml"
        )


def test_span_encoders_build_the_otlp_messages() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("pdp.test")
    with tracer.start_as_current_span("Check", kind=SpanKind.SERVER) as span:
        span.set_attribute("pdp.decision_id", "d1")
    message = op.encode_span(span)
    assert message.name == "Check" and len(message.trace_id) == 16
    assert op.SPAN_KIND_MAP[SpanKind.SERVER] == message.kind
    assert op.encode_resource(provider.resource).attributes
    assert op.encode_instrumentation_scope(span.instrumentation_scope).name == "pdp.test"
    assert isinstance(op.tracer_scope(tracer), InstrumentationScope)


def test_traceparent_pattern_and_limits() -> None:
    pattern = re.compile(op.TRACEPARENT_HEADER_FORMAT)
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    match = pattern.search(good)
    assert match and match.group(2) == "0af7651916cd43dd8448eb211c80319c"
    assert pattern.search("00-xyz-b7ad6b7169203331-01") is None
    assert len(good) <= op.TRACEPARENT_MAXIMUM_LENGTH
    assert op.TRACESTATE_MAXIMUM_LENGTH >= 512


def test_metric_reader_hooks() -> None:
    reader = InMemoryMetricReader()
    assert op.reader_histogram_temporality(reader) is AggregationTemporality.CUMULATIVE
    assert op.reader_histogram_temporality(object()) is None
    hook = op.receive_metrics_hook(reader)
    seen = []
    op.set_receive_metrics_hook(reader, lambda data, **kw: seen.append(data) or hook(data, **kw))
    assert op.receive_metrics_hook(reader) is not hook


def test_propagators_and_logs_api() -> None:
    inner = op.composite_propagators(propagate.get_global_textmap())
    assert inner is None or isinstance(inner, list | tuple)
    provider = op.LoggerProvider()
    assert provider.get_logger("pdp.test") is not None
    assert op.SeverityNumber.INFO.value == 9
    exporter = op.otlp_log_exporter()
    assert isinstance(exporter, op.LogRecordExporter)
    exporter.shutdown()
    provider.shutdown()

"""Private OpenTelemetry names (the logs signal only) live in pdp/telemetry/otel_private.py,
for a pinned SDK range; an upgrade that moves one fails here, naming it."""

from __future__ import annotations

import re
from importlib.metadata import version

from packaging.specifiers import SpecifierSet

from pdp.telemetry import otel_private as op

from ._support import ROOT

# A private module or name of opentelemetry (`opentelemetry._logs`, `..._internal`, `._x`),
# or a private attribute read off one of its objects.
PRIVATE = re.compile(
    r"opentelemetry(?:\.\w+)*\._\w+"
    r"|\._(?:propagators|receive_metrics|instrument_class_temporality|instrumentation_scope)\b"
    r"|\._TRACEPARENT_\w+|_TRACECONTEXT_MAXIMUM\w*|\b_internal\b"
)


def test_no_private_opentelemetry_name_outside_the_one_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("pdp", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "otel_private.py" and "_gen" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, "private OpenTelemetry names outside otel_private.py:\n" + "\n".join(
        offenders
    )


def test_the_one_module_uses_nothing_private_but_the_logs_signal() -> None:
    text = (ROOT / "pdp" / "telemetry" / "otel_private.py").read_text()
    names = set(re.findall(r"opentelemetry(?:\.\w+)*\._\w+", text))
    assert names <= {
        "opentelemetry._logs",
        "opentelemetry.sdk._logs",
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
    }, names


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


def test_logs_api() -> None:
    provider = op.LoggerProvider()
    assert provider.get_logger("pdp.test") is not None
    assert op.SeverityNumber.INFO.value == 9
    exporter = op.otlp_log_exporter()
    assert isinstance(exporter, op.LogRecordExporter)
    exporter.shutdown()
    provider.shutdown()

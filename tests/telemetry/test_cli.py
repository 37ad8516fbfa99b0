from __future__ import annotations

import argparse
import os

import pytest

from pdp.telemetry import MaskPathError
from pdp.telemetry.cli import (
    TelemetryArgumentError,
    add_telemetry_arguments,
    observer_from_args,
    options_from_args,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_telemetry_arguments(parser)
    parser.add_argument("--reuse-port", action="store_true")
    return parser.parse_args(argv)


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("OTEL_"):
            monkeypatch.delenv(var)


def test_flags_to_options() -> None:
    opts = options_from_args(
        parse(
            "--decision-log", "/var/log/pdp/decisions.jsonl",
            "--decision-log", "stdout",
            "--mask", "principal.attr.email",
            "--mask", "resources[*].attr.ssn",
            "--log-queue-size", "50",
            "--decision-log-max-bytes", "1000",
            "--decision-log-backups", "3",
            "--prometheus", "127.0.0.1:9464",
        )
    )  # fmt: skip
    assert opts.decision_log == ("/var/log/pdp/decisions.jsonl", "stdout")
    assert opts.mask == ("principal.attr.email", "resources[*].attr.ssn")
    assert (opts.queue_size, opts.max_bytes, opts.backups) == (50, 1000, 3)
    assert opts.prometheus == "127.0.0.1:9464"
    assert opts.otel is False  # auto, and no OTEL_* variable is set


def test_otel_auto_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert options_from_args(parse()).otel is True
    assert options_from_args(parse("--otel", "off")).otel is False


def test_nothing_asked_means_no_observer() -> None:
    assert observer_from_args(parse()) is None


def test_workers_get_a_file_each_and_no_prometheus() -> None:
    opts = options_from_args(parse("--reuse-port", "--decision-log", "/logs/decisions.jsonl"))
    assert opts.decision_log == (f"/logs/decisions.{os.getpid()}.jsonl",)
    with pytest.raises(TelemetryArgumentError, match="--prometheus"):
        options_from_args(parse("--reuse-port", "--prometheus", "127.0.0.1:9464"))


def test_bad_mask_path_fails_before_anything_starts(tmp_path: object) -> None:
    with pytest.raises(MaskPathError):
        observer_from_args(parse("--decision-log", "stdout", "--mask", "principal.roles"))


def test_the_longest_record_delay_is_a_flag_no_shorter_than_the_feeders_shortest_look() -> None:
    assert options_from_args(parse()).max_delay_s == 0.5
    assert options_from_args(parse("--decision-log-max-delay", "0.05")).max_delay_s == 0.05
    for bad in ("0", "-1", "nan", "0.001", "inf", "61"):
        with pytest.raises(TelemetryArgumentError, match="--decision-log-max-delay"):
            options_from_args(parse("--decision-log-max-delay", bad))

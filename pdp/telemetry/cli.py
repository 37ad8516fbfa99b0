"""The telemetry flags of `pdp serve`, and the observer they describe.

Kept here so that `pdp/cli/serve.py` gains two calls, not a section of telemetry knowledge:
`add_telemetry_arguments(parser)` and `observer_from_args(args, holder)`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

# Only the light options module at import: every `pdp` command registers its flags, and the
# OpenTelemetry SDK takes a tenth of a second to import.
from pdp.telemetry.config import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DELAY_S,
    DEFAULT_QUEUE_SIZE,
    TelemetryOptions,
)

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder
    from pdp.telemetry.observer import TelemetryObserver

_SPECIAL_SINKS = ("stdout", "otlp")
MIN_DELAY_S = 0.01  # the feeder's shortest sleep (pdp.telemetry.offload.MIN_POLL_INTERVAL_S)
MAX_DELAY_S = 60.0  # a record held longer than a minute is as good as lost to a log shipper


class TelemetryArgumentError(ValueError):
    """A telemetry flag (or combination) that cannot be honoured."""


def add_telemetry_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "telemetry", "decision log, traces and metrics (see docs/DECISION_LOG.md)"
    )
    g.add_argument(
        "--decision-log",
        action="append",
        metavar="FILE|stdout|otlp",
        help="write one record per decision there, repeatable (default: no decision log)",
    )
    g.add_argument(
        "--mask",
        action="append",
        metavar="PATH",
        help="mask a request field in the log, e.g. principal.attr.email, repeatable",
    )
    g.add_argument(
        "--log-queue-size",
        type=int,
        default=DEFAULT_QUEUE_SIZE,
        metavar="N",
        help="decisions queued for the log writer before records are dropped, whichever of "
        f"it and --log-queue-bytes is reached first ({DEFAULT_QUEUE_SIZE})",
    )
    g.add_argument(
        "--log-queue-bytes",
        type=int,
        metavar="N",
        help="bytes of requests, replies and trace headers queued for the log writer before "
        "records are dropped; each record counts at least 4 KiB (default: 64 MiB, or "
        "--log-queue-size x 4 KiB if more)",
    )
    g.add_argument(
        "--telemetry-writer",
        choices=("auto", "process", "thread"),
        default="auto",
        help="where records, spans and metrics are built and written: a separate process on "
        "the other cores, or a thread of the server; auto = process when the server may use "
        "more than one core",
    )
    g.add_argument(
        "--decision-log-max-delay",
        type=float,
        default=DEFAULT_MAX_DELAY_S,
        metavar="SECONDS",
        help="with the writer process: longest a record waits in the server before the writer "
        f"gets it ({DEFAULT_MAX_DELAY_S:g}); lower follows calls more closely, at some CPU per "
        "look at the queue",
    )
    g.add_argument(
        "--decision-log-max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"rotate the decision-log file past N bytes ({DEFAULT_MAX_BYTES})",
    )
    g.add_argument(
        "--decision-log-backups",
        type=int,
        default=DEFAULT_BACKUPS,
        metavar="N",
        help=f"rotated decision-log files kept ({DEFAULT_BACKUPS})",
    )
    g.add_argument(
        "--otel",
        choices=("auto", "on", "off"),
        default="auto",
        help="traces and metrics through the OTEL_* configured exporters; auto: on when an "
        "OTEL_EXPORTER_OTLP_*ENDPOINT or OTEL_{TRACES,METRICS}_EXPORTER is set (auto)",
    )
    g.add_argument(
        "--prometheus",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (off)",
    )


# Setting any of these says "this process is meant to export telemetry".
_OTEL_SIGNAL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
)


def otel_configured() -> bool:
    """Whether the environment asks for OpenTelemetry export.

    Without this, a plain `pdp serve` would export to the OTLP default (localhost:4317) and
    log a failure per batch on every machine that runs no collector.
    """
    return any(os.environ.get(v) for v in _OTEL_SIGNAL_VARS)


def options_from_args(args: argparse.Namespace) -> TelemetryOptions:
    worker = bool(getattr(args, "reuse_port", False))  # one of `--workers N` processes
    if worker and args.prometheus:
        raise TelemetryArgumentError(
            "--prometheus cannot be combined with --workers > 1 (each worker has its own "
            "metrics); export metrics over OTLP instead"
        )
    if args.log_queue_size < 1:
        raise TelemetryArgumentError("--log-queue-size must be at least 1")
    if not MIN_DELAY_S <= args.decision_log_max_delay <= MAX_DELAY_S:  # NaN too
        raise TelemetryArgumentError(
            f"--decision-log-max-delay must be {MIN_DELAY_S:g} to {MAX_DELAY_S:g} seconds"
        )
    sinks = []
    for spec in args.decision_log or ():
        if worker and spec not in _SPECIAL_SINKS:
            # Sibling workers must not append to and rotate one file: each gets its own.
            path = Path(spec)
            spec = str(path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}"))
        sinks.append(spec)
    return TelemetryOptions(
        decision_log=tuple(sinks),
        mask=tuple(args.mask or ()),
        queue_size=args.log_queue_size,
        queue_bytes=args.log_queue_bytes,
        max_bytes=args.decision_log_max_bytes,
        backups=args.decision_log_backups,
        otel=args.otel == "on" or (args.otel == "auto" and otel_configured()),
        prometheus=args.prometheus,
        max_delay_s=args.decision_log_max_delay,
    )


def observer_from_args(
    args: argparse.Namespace, holder: EngineHolder | None = None
) -> TelemetryObserver | None:
    """The observer for these flags (None when all telemetry is off).

    Raises `TelemetryArgumentError` for a bad flag, `MaskPathError` or `TelemetryConfigError`
    (all `ValueError`s) for a bad mask path or OTEL_* setting, `OSError` when a file or port
    cannot be opened.
    """
    options = options_from_args(args)
    if not options.enabled:
        return None
    from pdp.telemetry.setup import build_observer

    return build_observer(options, holder)


__all__ = [
    "TelemetryArgumentError",
    "add_telemetry_arguments",
    "observer_from_args",
    "options_from_args",
]

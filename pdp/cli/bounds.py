"""The range of every numeric `pdp serve` setting, in one table, and the parser that holds it.

A number a flag, a `PDP_*` variable or a `--config` key gives is read by `Bound.parse` (the
flag's argparse `type`, set by `apply`): a value outside its range, a fraction where a count is
meant, `nan`, `inf` or an overflowing one is refused before anything starts, by argparse, with
one line naming the flag (and, through pdp.cli.config, the variable or file) and the range.
Unbounded, such values reached grpc and the thread pool as tracebacks
(`--max-connections 99999999999999999999`: OverflowError; `--threads 0`: ValueError), or ran
silently: `--grace nan` drained for "nan seconds", `PDP_LOG_QUEUE_SIZE=99999999999999999999`
let the decision-log queue grow without bound, a negative `--decision-cache` turned the cache
off. Nothing is clamped: a value out of range is an error, never another value.

The ranges are what a Cerbos, OPA or Envoy operator would take for sane; 0 is allowed below a
range only where it already meant "off" (`off`). Every numeric flag of `pdp serve` must have a
row here (tests/cli/test_bounds.py checks it).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

KIB, MIB, GIB = 1024, 1024 * 1024, 1024 * 1024 * 1024
DAY_S = 86_400.0
# More processes than this is a typo (`--workers 80000`), not a deployment: each compiles the
# policies and holds its own caches, and the supervisor would fork until the machine gave out.
MAX_WORKERS = 256
# Longest shown of a refused value: a 4,000-digit number is not repeated back in full.
_SHOWN = 40


@dataclass(frozen=True, slots=True)
class Bound:
    """A setting's range: `low` to `high` inclusive; `off` names what 0 means where 0 is
    allowed below `low`; `words`: non-numeric values taken as they are (`auto`)."""

    low: float
    high: float
    whole: bool = True  # a count (int), not seconds (float)
    off: str = ""
    unit: str = ""
    words: tuple[str, ...] = ()

    def describe(self) -> str:
        """The range in words: `0 (no limit) or a whole number from 1 to 1000000`, `0.01 to
        60 seconds`, `a whole number from 1 to 256, or `auto``."""
        text = f"{_number(self.low)} to {_number(self.high)}"
        if self.unit:
            text = f"{text} {self.unit}"
        elif self.whole:
            text = f"a whole number from {text}"
        if self.off:
            text = f"0 ({self.off}) or {text}"
        return "".join([text, *(f", or `{word}`" for word in self.words)])

    def parse(self, text: str) -> int | float | str:
        """`text` as the setting's number (or one of its words); ArgumentTypeError naming the
        range when it is not one, or out of it."""
        raw = str(text).strip()
        if raw.lower() in self.words:
            return raw.lower()
        value: int | float
        try:
            value = int(raw) if self.whole else float(raw)
        except ValueError:  # `1.5` for a count, `ten`, an int of more than 4,300 digits
            value = math.nan
        # (NaN and infinity fail every comparison but `!=`; an int is compared as it is:
        # converted to a float, one of 400 digits would overflow.)
        if not (self.low <= value <= self.high or (value == 0 and self.off)):
            shown = raw if len(raw) <= _SHOWN else f"{raw[:_SHOWN]}..."
            raise argparse.ArgumentTypeError(f"takes {self.describe()}, not `{shown}`")
        return value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _seconds(low: float, high: float, off: str = "") -> Bound:
    return Bound(low, high, whole=False, off=off, unit="seconds")


# dest -> range. Reasons for the less obvious ones: `max_attr_depth` stays far below Python's
# recursion limit (conversion and masking recurse per level); `max_message_bytes` and the
# request limits stay within the int32 fields that ServerInfo reports them in; `trusted_hops`
# is the gateway mapping's own range (`trustedHops`); `poll_interval` starts at the
# reloader's shortest poll and `decision_log_max_delay` at the feeder's shortest sleep, which
# they would otherwise silently raise it to.
BOUNDS: dict[str, Bound] = {
    # policy source
    "poll_interval": _seconds(0.05, DAY_S),
    "poll_jitter": _seconds(0, 3600),
    "bundle_fetch_deadline": _seconds(0.1, 3600),
    # limits
    "max_checks": Bound(1, 1_000_000),
    "max_resources": Bound(1, 1_000_000),
    "max_attr_depth": Bound(1, 64),
    "max_attr_values": Bound(1, 10_000_000),
    "max_string_length": Bound(1, 64 * MIB, unit="characters"),
    "max_id_length": Bound(1, 64 * KIB, unit="characters"),
    "max_message_bytes": Bound(KIB, 64 * MIB, unit="bytes"),
    "max_connections": Bound(1, 1_000_000, off="no limit"),
    "max_concurrent_rpcs": Bound(1, 100_000, off="no limit"),
    "grpc_idle_timeout": _seconds(0.1, 7 * DAY_S, off="never"),
    "grpc_keepalive_time": _seconds(0.1, 7 * DAY_S, off="never"),
    "grpc_keepalive_timeout": _seconds(0.1, DAY_S),
    # gateway
    "jwt_leeway": _seconds(0, 3600),
    "trusted_hops": Bound(0, 16),
    # process
    "workers": Bound(1, MAX_WORKERS, words=("auto",)),
    "threads": Bound(1, 1024),
    "grace": _seconds(0, 3600),
    "decision_cache": Bound(1, 10_000_000, off="off"),
    # telemetry
    "log_queue_size": Bound(1, 1_000_000),
    "log_queue_bytes": Bound(MIB, 64 * GIB, unit="bytes"),
    "decision_log_max_delay": _seconds(0.01, 60),
    "decision_log_max_bytes": Bound(KIB, 1024 * GIB, unit="bytes"),
    "decision_log_backups": Bound(0, 1000),
    # HTTP
    "http_timeout": _seconds(0.1, 3600),
}


# The hidden flags the supervisor of `pdp serve --workers N` gives its workers (never shown in
# --help, --config or PDP_*): typed by hand they are refused in one line like any other, not a
# traceback from sched_setaffinity or socket(fileno=). A CPU index below Linux's largest
# NR_CPUS; a descriptor below its largest `fs.nr_open`.
MAX_CPU_INDEX = 8191
MAX_FD = 1_048_575
HIDDEN_BOUNDS: dict[str, Bound] = {
    "cpu": Bound(0, MAX_CPU_INDEX),
    "limits_fd": Bound(0, MAX_FD),
    "siblings": Bound(1, MAX_WORKERS),
}


def fd_pair(text: str) -> str:
    """`--ready-fds REPORT,CTL`: two descriptors (pdp.cli.ready), checked as `limits_fd` is."""
    parts = str(text).split(",")
    if len(parts) != 2:
        shown = text if len(text) <= _SHOWN else f"{text[:_SHOWN]}..."
        raise argparse.ArgumentTypeError(f"takes two descriptors, REPORT,CTL, not `{shown}`")
    for part in parts:
        HIDDEN_BOUNDS["limits_fd"].parse(part)
    return ",".join(p.strip() for p in parts)


def _typed(bound: Bound, name: str):  # -> a callable argparse takes as `type`
    def parse(text: str) -> int | float | str:
        return bound.parse(text)

    parse.__name__ = name  # what argparse would call the type in its own messages
    return parse


def apply(parser: argparse.ArgumentParser) -> None:
    """Give every flag of `parser` with a row in BOUNDS its range: as its type (parsing and
    refusing) and at the end of its help."""
    for action in parser._actions:
        if action.option_strings and action.help is argparse.SUPPRESS:
            if action.dest == "ready_fds":
                action.type = fd_pair
            elif action.dest in HIDDEN_BOUNDS:
                action.type = _typed(HIDDEN_BOUNDS[action.dest], action.dest)
            continue
        bound = BOUNDS.get(action.dest)
        if bound is None or not action.option_strings:
            continue
        action.type = _typed(bound, action.dest)
        if action.help and action.help is not argparse.SUPPRESS:
            action.help = f"{action.help} [{bound.describe()}]"


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make `parser` report a bad argument in one line (`pdp serve: error: argument
    --grace: takes ...`) without its usage, ~30 lines that bury the error in a pod's log."""
    prog = parser.prog

    def error(message: str):  # type: ignore[no-untyped-def]
        parser.exit(2, f"{prog}: error: {message}\n")

    parser.error = error  # type: ignore[method-assign]

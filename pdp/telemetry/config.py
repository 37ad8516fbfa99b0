"""Telemetry options and their defaults: no OpenTelemetry import, so the CLI stays quick to load."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pdp.telemetry.sinks import Sink

# Default bound of the queue between the request threads and the writer: at ~1 KiB per queued
# observation this caps telemetry's backlog near 10 MiB, a few seconds of peak traffic. The
# bound is approximate by at most the number of request threads (they check, then append).
DEFAULT_QUEUE_SIZE = 10_000
# Default size at which the decision-log file is rotated: bounds one file so it can be shipped,
# opened and grepped; with the default backups it bounds disk use to about 600 MiB.
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# Default number of rotated files kept (`decisions.jsonl.1` ... `.5`); older ones are deleted.
DEFAULT_BACKUPS = 5
# Default longest wait of a record in the server before the writer process gets it (the
# offload feeder's longest sleep, pdp.telemetry.offload): each look at the queue costs the
# serving threads, so an idle server looks twice a second.
DEFAULT_MAX_DELAY_S = 0.5


@dataclass(frozen=True)
class TelemetryOptions:
    decision_log: tuple[str, ...] = ()  # each `stdout`, `otlp` or a file path
    mask: tuple[str, ...] = ()  # operator mask paths
    queue_size: int = DEFAULT_QUEUE_SIZE
    # The queue's byte budget (pdp.telemetry.intake); None: 64 MiB, or queue_size x 4 KiB if more.
    queue_bytes: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES  # file rotation size
    backups: int = DEFAULT_BACKUPS
    otel: bool = True  # traces and metrics through the OTEL_* configured exporters
    prometheus: str | None = None  # HOST:PORT of an opt-in scrape endpoint
    max_delay_s: float = DEFAULT_MAX_DELAY_S  # the writer process's feeder sleeps at most this
    extra_sinks: tuple[Sink, ...] = ()  # for tests and embedders

    @property
    def enabled(self) -> bool:
        return bool(self.decision_log or self.otel or self.prometheus or self.extra_sinks)

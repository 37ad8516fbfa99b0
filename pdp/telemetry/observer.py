"""The telemetry observer the server calls after every Check: a bounded queue and its writer.

`on_check` only appends the observation to a bounded deque (an atomic operation under the
GIL: no lock, no wake-up) or, when the queue is full, counts a drop. Everything else happens
on one writer thread (or, in the writer process, on its main thread through `write_now`): the
span (with the call's own start and end times), the metrics, the masked decision-log record
and the sink writes. A decision therefore never waits for telemetry, and telemetry that cannot
keep up loses records it counts (`pdp.decision_log.dropped` and a periodic warning) rather
than slowing decisions. `close()` stops intake and flushes everything queued before shutting
the sinks and the exporters.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pdp.telemetry.config import DEFAULT_QUEUE_SIZE
from pdp.telemetry.decision_log import Summary, build_record, summarize
from pdp.telemetry.intake import Intake
from pdp.telemetry.masking import Masker
from pdp.telemetry.metrics import Metrics
from pdp.telemetry.observation import Observation
from pdp.telemetry.sinks import Record, Sink
from pdp.telemetry.tracing import record_span

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from pdp.engine.holder import EngineHolder
    from pdp.model.decision import BundleInfo
    from pdp.telemetry.otel import Otel

log = logging.getLogger("pdp.telemetry")

# Records handed to a sink at once: amortises file writes and OTLP exports without holding
# many records out of the queue's accounting for long.
MAX_BATCH = 512
# How long the idle writer sleeps between looks at the queue: the delay before a record
# reaches its sink. Polling spares `on_check` a wake-up signal (a lock) per call; a short
# sleep keeps each burst of writing (under the serving threads' GIL) short.
POLL_INTERVAL_S = 0.01
# At most one "records dropped" warning per interval, so an overload does not also flood the log.
DROP_WARNING_INTERVAL_S = 10.0
# `close()` waits this long for the writer to drain before giving up on the rest.
CLOSE_TIMEOUT_S = 30.0


class TelemetryObserver(Intake):
    """Implements the server's observer protocol (`on_check`, `close`)."""

    def __init__(
        self,
        *,
        sinks: Sequence[Sink] = (),
        masker: Masker | None = None,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int | None = None,
        otel: Otel | None = None,
        writer_thread: bool = True,
    ) -> None:
        """`otel`: the providers behind `tracer` and `metrics`, shut down (flushed) last on
        close. `writer_thread=False`: no thread drains the queue; the owner hands batches to
        `write_now` (the writer process does, as it reads them from its pipe)."""
        super().__init__(queue_size, queue_bytes)
        self._sinks = tuple(sinks)
        self._masker = masker or Masker()
        self._tracer = tracer
        self._metrics = metrics
        self.otel = otel
        self._close_lock = threading.Lock()
        self._reported = 0  # drops already added to the metric (writer only)
        self._unwarned = 0
        self._last_warning = -math.inf  # the first drop warns at once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if writer_thread:
            self._thread = threading.Thread(target=self._run, name="pdp-decision-log", daemon=True)
            self._thread.start()

    # -- bundle events (called by whoever loads bundles) ---------------------------------------

    def watch_holder(self, holder: EngineHolder) -> None:
        if self._metrics is not None:
            self._metrics.watch(holder)

    def record_bundle_activated(self, bundle: BundleInfo | None) -> None:
        """A bundle became active in the server (told by an `OffloadObserver`'s server)."""
        if self._metrics is not None:
            self._metrics.bundle_is(bundle)

    def record_bundle_failure(self, error: str = "") -> None:
        if self._metrics is not None:
            self._metrics.bundle_failed(error)

    # -- the writer ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()  # read before draining: nothing queued is left behind
            self._drain()
            self._report_drops()
            if stopping:
                return
            self._stop.wait(POLL_INTERVAL_S)

    def _drain(self) -> None:
        queue, take = self._queue, self._popleft
        while queue:
            self._write_batch([take() for _ in range(min(len(queue), MAX_BATCH))])

    def write_now(self, batch: Sequence[Observation]) -> None:
        """Spans, metrics and records of `batch`, on the caller's thread; then report drops."""
        self._write_batch(batch)
        self._report_drops()

    def _write_batch(self, batch: Sequence[Observation]) -> None:
        records: list[Record] = []
        calls: list[tuple[Summary | None, float, str]] = []
        for obs in batch:
            summary = self._process(obs, records)
            calls.append((summary, obs.latency_s, obs.error_code))
        if self._metrics is not None:
            try:
                self._metrics.record_calls(calls)
            except Exception:
                log.exception("decision metrics could not be recorded")
        if records:
            for sink in self._sinks:
                try:
                    sink.write(records)
                    sink.flush()
                except Exception:
                    log.exception("decision-log sink %s failed to write", type(sink).__name__)
                    if self._metrics is not None:
                        self._metrics.record_dropped(len(records), "sink_error")

    def _process(self, obs: Observation, records: list[Record]) -> Summary | None:
        """Span and record (appended to `records`) of one call; its summary for the metrics."""
        try:
            response = obs.response
            summary = summarize(response) if response is not None else None
            trace_id, span_id = record_span(
                self._tracer,
                obs,
                decision_id=response.decision_id if response is not None else "",
                revision=response.bundle.revision if response is not None else "",
                summary=summary,
            )
            if self._sinks:
                records.append(build_record(obs, self._masker, trace_id=trace_id, span_id=span_id))
            return summary
        except Exception:
            # A bug in building a record must cost that record, never the writer.
            log.exception("decision-log record could not be built")
            if self._metrics is not None:
                self._metrics.record_dropped(1, "build_error")
            return None

    def _report_drops(self, *, final: bool = False) -> None:
        dropped = self._dropped
        delta = dropped - self._reported
        if delta:
            self._reported = dropped
            self._unwarned += delta
            if self._metrics is not None:
                self._metrics.record_dropped(delta, "queue_full")
        now = time.monotonic()
        if self._unwarned and (final or now - self._last_warning >= DROP_WARNING_INTERVAL_S):
            log.warning(
                "decision log dropped %d records: queue full (%d records or %d bytes, "
                "--log-queue-size and --log-queue-bytes); total dropped %d",
                self._unwarned,
                self._max,
                self._max_bytes,
                dropped,
            )
            self._unwarned = 0
            self._last_warning = now

    # -- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop intake, write everything queued, close the sinks and the exporters."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
        if self._thread is None or not self._thread.is_alive():
            # A request thread may have appended between its `_closed` check and the writer's
            # last look at the queue.
            self._drain()
        else:
            log.warning("decision-log writer did not finish within %.0fs", CLOSE_TIMEOUT_S)
        self._report_drops(final=True)
        for step in (*(sink.close for sink in self._sinks), self._shutdown_otel):
            try:
                step()
            except Exception:
                log.exception("telemetry shutdown step failed")

    def _shutdown_otel(self) -> Any:
        if self.otel is not None:
            self.otel.shutdown()

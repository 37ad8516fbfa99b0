"""The telemetry observer the server calls after every Check: a bounded queue and its writer.

`on_check` only appends the observation to a bounded deque (an atomic operation under the
GIL: no lock, no wake-up, no allocation beyond the deque's own) or, when the queue is full,
counts a drop. Everything else happens on one writer thread: the span (with the call's own
start and end times), the metrics, the masked decision-log record and the sink writes. A
decision therefore never waits for telemetry, and telemetry that cannot keep up loses records
it counts (`pdp.decision_log.dropped` and a periodic warning) rather than slowing decisions.
`close()` stops intake and flushes everything queued before shutting the sinks.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pdp.telemetry.config import DEFAULT_QUEUE_SIZE
from pdp.telemetry.decision_log import RecordShape, Summary, build_record, summarize
from pdp.telemetry.intake import Intake
from pdp.telemetry.masking import Masker
from pdp.telemetry.metrics import Metrics
from pdp.telemetry.observation import Observation
from pdp.telemetry.sinks import RecordOrLine, Sink
from pdp.telemetry.thread_names import name_this_thread
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
# Cached decisions whose shared record parts are kept (one per distinct cached request).
MAX_SHAPES = 1024
# How long the idle writer sleeps between looks at the queue; the delay before a record
# reaches its sink. Polling spares `on_check` a wake-up signal (a lock) per call. Unlike the
# writer process's feeder (`offload.poll_interval`), this thread writes under the serving
# threads' GIL, and the longer it sleeps the longer the burst of writing that follows:
# `bench/server.py --telemetry --workers 1 --writer thread` cost 22.1% and 33.2% (cache on,
# off) paced like the feeder (up to 0.5 s, `8bbb11b`), 18.6% and 28.1% at 50 ms, and 13.9%
# and 25.7% at 10 ms (README).
POLL_INTERVAL_S = 0.01
# The writer thread's name in the operating system.
WRITER_THREAD = "pdp-log-writer"
# At most one "records dropped" warning per interval, so an overload does not also flood the log.
DROP_WARNING_INTERVAL_S = 10.0
# `close()` waits this long for the writer to drain before giving up on the rest.
CLOSE_TIMEOUT_S = 30.0


class _Activated:
    """What `Metrics.bundle_activated` reads of an engine: its bundle."""

    __slots__ = ("bundle",)

    def __init__(self, bundle: BundleInfo | None) -> None:
        self.bundle = bundle


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
        otel: Otel | None = None,
        on_close: Iterable[Callable[[], Any]] = (),
        writer_thread: bool = True,
    ) -> None:
        """`writer_thread=False`: no thread drains the queue; the owner hands batches to
        `write_now` (the writer process does, as it reads them from its pipe)."""
        super().__init__(queue_size)
        self._sinks = tuple(sinks)
        self._masker = masker or Masker()
        self._tracer = tracer
        # The cheap span path when the exporters allow it (see DirectSpans); else SDK spans.
        self._spans = otel.direct_spans if otel is not None else None
        self._metrics = metrics
        # The providers behind `tracer`/`metrics`, shut down (flushed) last on close.
        self.otel = otel
        self._on_close = (*on_close, otel.shutdown) if otel is not None else tuple(on_close)
        # Cache hits share their record's decision parts (see RecordShape); writer thread only.
        self._shapes: dict[int, RecordShape] = {}
        self._shares = not self._masker.masks_request_id
        # Shared-shape records go to the sinks as JSON lines when every sink takes them.
        self._lines = all(getattr(sink, "takes_lines", False) for sink in self._sinks)
        self._close_lock = threading.Lock()
        self._reported = 0  # drops already added to the metric (writer thread only)
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
            self._metrics.bundle_activated(_Activated(bundle))  # type: ignore[arg-type]

    def record_bundle_failure(self, error: str = "") -> None:
        if self._metrics is not None:
            self._metrics.bundle_failed(error)

    # -- state ---------------------------------------------------------------------------------

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        name_this_thread(WRITER_THREAD)
        while True:
            stopping = self._stop.is_set()  # read before draining: nothing queued is left behind
            self._drain()
            self._report_drops()
            if stopping:
                return
            self._stop.wait(POLL_INTERVAL_S)

    def _drain(self) -> None:
        wrote = False
        while self._queue:
            batch = []
            while self._queue and len(batch) < MAX_BATCH:
                batch.append(self._queue.popleft())
            wrote = self._write_batch(batch) or wrote
        if wrote:
            self._flush()

    def write_now(self, batch: Sequence[Observation]) -> None:
        """Spans, metrics and records of `batch`, on the caller's thread; then report drops."""
        if self._write_batch(batch):
            self._flush()
        self._report_drops()

    def _write_batch(self, batch: Sequence[Observation]) -> bool:
        """True when records were handed to the sinks."""
        records: list[RecordOrLine] = []
        calls: list[tuple[Summary | None, float, str]] = []
        spans = self._spans
        # Hit rows take the lane below: the same span, record line and metrics as `_process`
        # makes of them, in fewer steps per call (read by unpacking; ids and span from one
        # call, the line from another).
        rows = spans is not None and spans.lean and self._lines and self._shares and self._sinks
        shapes = self._shapes
        if rows:
            traced, untraced = spans.record, spans.untraced_decision  # type: ignore[union-attr]
        for obs in batch:
            if rows and getattr(obs, "hit_row", False):
                (entry, rpc, decision_id, request_id, evaluated_at, peer, identity, metadata,
                 start, latency) = obs  # type: ignore[misc]  # fmt: skip
                try:
                    shape = shapes.get(id(entry))
                    if shape is None or shape.entry is not entry:
                        shape = self._new_shape(entry)
                    summary: Summary | None = shape.summary
                    # With the caller's trace context, the span has a parent (if sampled).
                    if metadata:
                        trace_id, span_id = traced(obs, decision_id, shape.revision, summary)
                    else:
                        trace_id, span_id = untraced(
                            rpc, start, latency, decision_id, shape.revision, summary
                        )
                    line = shape.line_of(
                        decision_id, start, rpc, peer, identity, request_id, latency,
                        trace_id, span_id, evaluated_at,
                    )  # fmt: skip
                    records.append(line)
                except Exception:
                    summary = self._build_failed()
                calls.append((summary, latency, ""))
                continue
            summary = self._process(obs, records)
            calls.append((summary, obs.latency_s, obs.error_code))
        if self._spans is not None:
            try:
                self._spans.flush()
            except Exception:
                log.exception("spans could not be handed to the span processor")
        if self._metrics is not None:
            try:
                self._metrics.record_calls(calls)
            except Exception:
                log.exception("decision metrics could not be recorded")
        if records:
            self._write(records)
        return bool(records)

    def _flush(self) -> None:
        for sink in self._sinks:
            try:
                sink.flush()
            except Exception:
                log.exception("decision-log sink %s failed to flush", type(sink).__name__)

    def _new_shape(self, entry: Any) -> RecordShape:
        """The shared record parts of a cached decision, built on its first hit."""
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()  # cheaper than LRU bookkeeping; rebuilt on the next hit
        shape = self._shapes[id(entry)] = RecordShape(entry, self._masker)
        return shape

    def _process(self, obs: Observation, records: list[RecordOrLine]) -> Summary | None:
        """Span and record (appended to `records`) of one call; its summary for the metrics."""
        try:
            hit = getattr(obs, "cache_hit", None)
            shape = None
            summary: Summary | None = None
            if hit is not None and self._shares:
                entry = hit.entry
                shape = self._shapes.get(id(entry))
                if shape is None or shape.entry is not entry:
                    shape = self._new_shape(entry)
                summary, decision_id, revision = shape.summary, hit.decision_id, shape.revision
            elif (response := obs.response) is not None:
                summary = summarize(response)
                decision_id, revision = response.decision_id, response.bundle.revision
            else:
                decision_id = revision = ""
            if self._spans is not None:
                trace_id, span_id = self._spans.record(obs, decision_id, revision, summary)
            else:
                trace_id, span_id = record_span(
                    self._tracer, obs, decision_id=decision_id, revision=revision, summary=summary
                )
            if self._sinks:
                record: RecordOrLine
                if shape is None:
                    record = build_record(obs, self._masker, trace_id=trace_id, span_id=span_id)
                elif self._lines:
                    record = shape.line(obs, hit, trace_id, span_id)
                else:
                    record = shape.record(obs, hit, trace_id, span_id)
                records.append(record)
            return summary
        except Exception:
            return self._build_failed()

    def _build_failed(self) -> None:
        # A bug in building a record must cost that record, never the writer thread.
        log.exception("decision-log record could not be built")
        if self._metrics is not None:
            self._metrics.record_dropped(1, "build_error")

    def _write(self, records: list[RecordOrLine]) -> None:
        for sink in self._sinks:
            try:
                sink.write(records)
            except Exception:
                log.exception("decision-log sink %s failed to write", type(sink).__name__)
                if self._metrics is not None:
                    self._metrics.record_dropped(len(records), "sink_error")

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
                "decision log dropped %d records: queue full (size %d); total dropped %d",
                self._unwarned,
                self._max,
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
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("decision-log sink %s failed to close", type(sink).__name__)
        for shutdown in self._on_close:
            try:
                shutdown()
            except Exception:
                log.exception("telemetry shutdown step failed")

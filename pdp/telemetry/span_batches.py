"""The batch span processor for spans that arrive already encoded, a write batch at a time.

The SDK's `BatchSpanProcessor` takes one span per `on_end` call: a lock-free deque append, but
also its shutdown and fork checks (a `getpid` system call) per span, and one wrapper object
per span: a visible part of a loaded writer process's CPU in a py-spy profile. `DirectSpans`
encodes a whole write batch of spans and hands them here in one `add`; the export thread
builds each OTLP request from those bytes (see `encode_request`) and the exporter sends it as
it is.

Configured as the SDK configures its processor: `OTEL_BSP_SCHEDULE_DELAY` (ms between
exports), `OTEL_BSP_MAX_QUEUE_SIZE` (spans held; a batch beyond it waits briefly for room while the
collector answers, and is otherwise dropped, counted and warned about), `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (spans per request), `OTEL_BSP_EXPORT_TIMEOUT`.
SDK spans (`on_end`) are accepted too, so the processor can stand in for the SDK's on the
tracer provider: the provider's `force_flush` and `shutdown` reach it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from pdp.telemetry.otlp_spans import FastOTLPSpanExporter, SpanChunk, encode_span
from pdp.telemetry.thread_names import name_this_thread

log = logging.getLogger("pdp.telemetry")

# The SDK's defaults for the OTEL_BSP_* variables.
DEFAULT_SCHEDULE_DELAY_MS = 5000
DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
DEFAULT_EXPORT_TIMEOUT_MS = 30000
# How long a write batch that does not fit may wait for the export thread to make room.
ADD_WAIT_S = 0.5
# The export thread's name in the operating system.
EXPORT_THREAD = "pdp-span-export"
# At most one "spans dropped" warning per interval.
DROP_WARNING_INTERVAL_S = 10.0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        log.warning("%s=%r is not an integer: using %d", name, raw, default)
        return default
    if value < 0 or (value == 0 and name != "OTEL_BSP_SCHEDULE_DELAY"):
        log.warning("%s=%r is out of range: using %d", name, raw, default)
        return default
    return value


class EncodedSpanProcessor(SpanProcessor):
    def __init__(
        self,
        exporter: FastOTLPSpanExporter,
        *,
        schedule_delay_ms: int | None = None,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        export_timeout_ms: int | None = None,
    ) -> None:
        self._exporter = exporter
        self._delay_s = (
            schedule_delay_ms
            if schedule_delay_ms is not None
            else _env_int("OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MS)
        ) / 1000
        self._max_queue = max_queue_size or _env_int(
            "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE
        )
        batch = max_export_batch_size or _env_int(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_MAX_EXPORT_BATCH_SIZE
        )
        # As the SDK requires: a batch never larger than the queue.
        self._max_batch = min(batch, self._max_queue)
        self._timeout_ms = export_timeout_ms or _env_int(
            "OTEL_BSP_EXPORT_TIMEOUT", DEFAULT_EXPORT_TIMEOUT_MS
        )
        self._chunks: deque[SpanChunk] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the export thread waits on it
        self._space = threading.Condition(self._lock)  # `add` waits on it for room
        self._healthy = True  # the last export succeeded (or none was tried yet)
        self._export_lock = threading.Lock()  # the thread and force_flush take turns
        self._shutdown = False
        self.dropped = 0
        self._unwarned = 0
        self._last_warning = -DROP_WARNING_INTERVAL_S
        self._thread = threading.Thread(target=self._run, name="pdp-span-export", daemon=True)
        self._thread.start()

    # -- intake ----------------------------------------------------------------------------------

    def add(self, resource: Resource, scope: InstrumentationScope, spans: Sequence[bytes]) -> None:
        """Queue encoded `Span` messages of one resource and scope (sampled ones only).

        A whole write batch arrives at once, and several can follow each other faster than
        the export thread gets the GIL: while exports succeed, a batch that does not fit waits
        (at most `ADD_WAIT_S`) for the export thread to make room, rather than losing spans
        the collector could take. While the collector fails, the excess is dropped at once, so
        a dead collector never slows the decision log."""
        if not spans:
            return
        with self._lock:
            if self._shutdown:
                self._count_drops(len(spans))
                return
            needed = min(len(spans), self._max_queue)
            deadline = None
            while self._max_queue - self._queued < needed and self._healthy:
                self._wake.notify()  # a full batch is waiting: export it now
                now = time.monotonic()
                if deadline is None:
                    deadline = now + ADD_WAIT_S
                if now >= deadline or self._shutdown:
                    break
                self._space.wait(deadline - now)
            room = self._max_queue - self._queued
            if room < len(spans):
                self._count_drops(len(spans) - max(room, 0))
                spans = spans[: max(room, 0)]
                if not spans:
                    return
            self._chunks.append(SpanChunk(resource, scope, list(spans)))
            self._queued += len(spans)
            if self._queued >= self._max_batch:
                self._wake.notify()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            self.add(span.resource, span.instrumentation_scope, [encode_span(span)])  # type: ignore[arg-type]

    def _count_drops(self, n: int) -> None:
        # Called with the lock held.
        self.dropped += n
        self._unwarned += n
        now = time.monotonic()
        if now - self._last_warning >= DROP_WARNING_INTERVAL_S:
            log.warning(
                "span queue full (OTEL_BSP_MAX_QUEUE_SIZE=%d): dropped %d spans; total dropped %d",
                self._max_queue,
                self._unwarned,
                self.dropped,
            )
            self._unwarned = 0
            self._last_warning = now

    # -- export ----------------------------------------------------------------------------------

    def _take(self, limit: int) -> list[SpanChunk]:
        """Up to `limit` spans from the front of the queue, as chunks (lock held)."""
        out: list[SpanChunk] = []
        n = 0
        while self._chunks and n < limit:
            chunk = self._chunks[0]
            room = limit - n
            if len(chunk.spans) <= room:
                self._chunks.popleft()
                out.append(chunk)
                n += len(chunk.spans)
            else:
                out.append(SpanChunk(chunk.resource, chunk.scope, chunk.spans[:room]))
                del chunk.spans[:room]
                n += room
        self._queued -= n
        if n:
            self._space.notify_all()
        return out

    def _export_some(self) -> bool:
        """Export one batch; False when the queue was empty."""
        with self._export_lock:
            with self._lock:
                batch = self._take(self._max_batch)
            if not batch:
                return False
            try:
                result = self._exporter.export(batch)  # type: ignore[arg-type]
            except Exception:
                log.exception("span export failed")
                result = SpanExportResult.FAILURE
            self._healthy = result is SpanExportResult.SUCCESS
            return True

    def _run(self) -> None:
        name_this_thread(EXPORT_THREAD)
        while True:
            with self._lock:
                if not self._shutdown and self._queued < self._max_batch:
                    self._wake.wait(self._delay_s)
                stopping = self._shutdown
            while self._export_some():
                with self._lock:
                    if not stopping and self._queued < self._max_batch:
                        break
            if stopping:
                return

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        while self._export_some():
            if time.monotonic() > deadline:
                return False
        return True

    def shutdown(self) -> None:
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            self._wake.notify()
            self._space.notify_all()
        self._thread.join(self._timeout_ms / 1000)
        self._exporter.shutdown()

"""The native transport's streaming calls: health `Watch` and server reflection, served by the
very servicers the grpcio transport registers (`BoundedHealth`, `BoundedReflection`, through
`DecodingServer`), so the same bounds hold (open watchers, open reflection streams). Those
servicers are grpcio's: they are made (and grpc imported) when the first streaming call opens,
not at start, so a server that is never asked for one never imports grpc.

The C side (`_h2_stream.c`) hands each streaming call's events over as they arrive
(`_h2.stream_take`: opened, a message, half-closed, gone) and takes messages and trailers back
(`_h2.stream_send`, `_h2.stream_finish`). One pump thread here takes the events and never
decides anything: `Watch` answers through a callback (grpc_health's non-blocking mode, as on
grpcio: no thread per watcher), a reflection stream runs in a thread of its own, at most
`max_threads` of them. The decision thread is not involved.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..status import Aborted, Status, StatusCode
from .auth import INSECURE, Auth, of_connection

log = logging.getLogger("pdp.server")

# The C side's event kinds (_h2_stream.c).
EV_OPEN, EV_MSG, EV_HALF, EV_GONE, EV_CANCEL = 1, 2, 3, 4, 5
# Request bytes and messages a stream may have waiting for its handler: a client sending
# faster than its handler reads gets RESOURCE_EXHAUSTED rather than an unbounded queue.
MAX_PENDING_BYTES = 4 << 20
MAX_PENDING_MESSAGES = 1024
# grpcio's words for the calls still open when the server stops.
STOPPING = (StatusCode.UNAVAILABLE.value[0], "Cancelling all calls")
_WAIT_S = 0.25
_INTERNAL = StatusCode.INTERNAL.value[0]


class _Gone(Exception):
    """The stream ended under a handler reading its requests (reset, closed, a bound)."""


class _Call:
    """One open streaming call: its state, its request queue, and the ServicerContext that
    grpcio's servicers read (`add_callback`, `is_active`, `abort`, `peer`, ...)."""

    def __init__(
        self,
        pump: StreamPump,
        call_id: int,
        method: int,
        deadline: float | None,
        peer: str,
        metadata: tuple[tuple[str, str | bytes], ...],
        auth: list[bytes | Auth] | None = None,
    ) -> None:
        """`auth`: the TLS connection's auth context as `_h2` hands it (None: plaintext)."""
        self.pump = pump
        self.id = call_id
        self.method = method
        self.deadline = deadline
        self._peer = peer
        self._metadata = metadata
        self._auth = auth
        self.active = True
        self.started = False
        self.half = False
        self.messages: collections.deque[bytes] = collections.deque()
        self.pending = 0
        self._cond = threading.Condition()
        self._callbacks: list[Callable[[], None]] = []

    # -- the ServicerContext part grpcio's servicers use --------------------------------------

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._cond:
            if not self.active:
                return False
            self._callbacks.append(callback)
            return True

    def is_active(self) -> bool:
        return self.active

    def abort(self, code: Any, details: str) -> None:
        """`code`: grpc's StatusCode (grpcio's servicers) or pdp's (the same values)."""
        raise Aborted(Status(code, details))

    def abort_with_status(self, status: Any) -> None:
        raise Aborted(Status(status.code, status.details or ""))

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        # What --allow-identity reads, as for a unary call (server._Context).
        return dict(INSECURE if self._auth is None else of_connection(self._auth).context)

    def set_code(self, _code: Any) -> None:  # grpc_health's Check only; unused by streams
        pass

    def set_details(self, _details: Any) -> None:
        pass

    # -- the pump's side ------------------------------------------------------------------------

    def feed(self, message: bytes) -> bool:
        """A request message; False when it is one too many to hold."""
        with self._cond:
            self.messages.append(message)
            self.pending += len(message)
            self._cond.notify()
            return self.pending <= MAX_PENDING_BYTES and len(self.messages) <= MAX_PENDING_MESSAGES

    def close_requests(self) -> None:
        with self._cond:
            self.half = True
            self._cond.notify()

    def requests(self) -> Iterator[bytes]:
        """The request messages as they arrive, until the client half-closes; `_Gone` when
        the stream ends first."""
        while True:
            with self._cond:
                while self.active and not self.messages and not self.half:
                    self._cond.wait()
                if not self.active:
                    raise _Gone()
                if not self.messages:
                    return
                message = self.messages.popleft()
                self.pending -= len(message)
            yield message

    def send(self, data: bytes) -> None:
        if self.active:
            self.pump.h2.stream_send(self.id, data)

    def end(self, code: int, message: str, *, tell: bool = True) -> None:
        """The call is over: trailers (unless the stream is already gone), then its callbacks
        (grpc_health's: the watcher removed, its slot given back). Once."""
        with self._cond:
            if not self.active:
                return
            self.active = False
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        self.pump.forget(self.id)
        if tell:
            self.pump.h2.stream_finish(self.id, code, message)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("native transport: a stream's callback failed")


class StreamPump:
    """Takes the streaming calls' events from the C side and runs their handlers.

    `handlers()`: grpcio's method handlers (`grpc.RpcMethodHandler`), in the order of the
    paths given to `_h2.serve_streams`, made when the first streaming call opens: unary-stream
    ones answering through a callback (`experimental_non_blocking`, grpc_health's `Watch`) run
    on this thread; the others in a thread each, at most `max_threads` at once (more:
    RESOURCE_EXHAUSTED)."""

    def __init__(
        self,
        h2: Any,
        handlers: Callable[[], list[Any]],
        max_threads: int,
        metadata: Callable[[bytes], tuple[tuple[str, str | bytes], ...]],
        on_cancel: Callable[[int], None] = lambda _seq: None,
    ) -> None:
        """`on_cancel(seq)`: a unary call being decided is gone (its client reset it)."""
        self.h2 = h2
        self._make_handlers = handlers
        self._handlers: list[Any] = []
        self._threads = threading.BoundedSemaphore(max_threads)
        self._max_threads = max_threads
        self._metadata = metadata
        self._on_cancel = on_cancel
        self._calls: dict[int, _Call] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pdp-native-streams", daemon=True)
        self._thread.start()

    def open_calls(self) -> int:
        with self._lock:
            return len(self._calls)

    def forget(self, call_id: int) -> None:
        with self._lock:
            self._calls.pop(call_id, None)

    def stop(self) -> None:
        """Every open call ends as grpcio ends them at its stop (UNAVAILABLE), then the pump."""
        self._stop = True
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            calls = list(self._calls.values())
        for call in calls:
            call.end(*STOPPING)

    # -- the pump ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop:
            try:
                events = self.h2.stream_take(self._wait())
                for call_id, kind, a, b, c, d, e in events:
                    self._event(call_id, kind, a, b, c, d, e)
                self._expire()
            except Exception:  # a bug here must not stop every stream for good
                log.exception("native transport: the stream pump failed")

    def _wait(self) -> float:
        with self._lock:
            deadlines = [c.deadline for c in self._calls.values() if c.deadline is not None]
        if not deadlines:
            return _WAIT_S
        return max(0.0, min(_WAIT_S, min(deadlines) - time.monotonic()))

    def _expire(self) -> None:
        """Calls past their grpc-timeout end DEADLINE_EXCEEDED, as on grpcio."""
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._calls.values() if c.deadline is not None and now >= c.deadline]
        for call in late:
            call.end(StatusCode.DEADLINE_EXCEEDED.value[0], "Deadline Exceeded")

    def _event(self, call_id: int, kind: int, a: Any, b: Any, c: Any, d: Any, e: Any) -> None:
        if kind == EV_CANCEL:
            self._on_cancel(call_id)
            return
        if kind == EV_OPEN:
            if not self._handlers:
                try:
                    self._handlers = self._make_handlers()
                except Exception:
                    log.exception("native transport: the streaming services failed to start")
                    self.h2.stream_finish(call_id, _INTERNAL, "internal error")
                    return
            call = _Call(self, call_id, a, b, c, self._metadata(d), e)
            with self._lock:
                self._calls[call_id] = call
            if self._handlers[a].request_streaming:
                self._run_in_thread(call)
            return
        with self._lock:
            call = self._calls.get(call_id)
        if call is None:
            return
        if kind == EV_GONE:
            call.end(0, "", tell=False)
        elif kind == EV_MSG:
            handler = self._handlers[call.method]
            if not handler.request_streaming and (call.messages or call.started):
                call.end(_INTERNAL, "expected exactly one request message")
            elif not call.feed(a):
                call.end(
                    StatusCode.RESOURCE_EXHAUSTED.value[0],
                    "too many request messages waiting: the client sends faster than the "
                    "server reads them",
                )
        elif kind == EV_HALF:
            call.close_requests()
            if not self._handlers[call.method].request_streaming:
                if len(call.messages) != 1:
                    call.end(_INTERNAL, "expected exactly one request message")
                elif getattr(
                    self._handlers[call.method].unary_stream, "experimental_non_blocking", False
                ):
                    self._unary_non_blocking(call)
                else:
                    self._run_in_thread(call)

    def _unary_non_blocking(self, call: _Call) -> None:
        """grpc_health's Watch: it answers through `send`, for as long as the call is open."""
        handler = self._handlers[call.method]
        serialize = handler.response_serializer
        call.started = True

        def send(response: Any) -> None:
            if response is not None:  # None: grpc_health's end of a watcher
                call.send(serialize(response))

        try:
            handler.unary_stream(call.messages.popleft(), call, send)
        except Aborted as exc:
            call.end(exc.reply[0], exc.reply[1])
        except Exception:
            log.exception("native transport: a streaming call failed")
            call.end(_INTERNAL, "internal error")

    def _run_in_thread(self, call: _Call) -> None:
        if not self._threads.acquire(blocking=False):
            call.end(
                StatusCode.RESOURCE_EXHAUSTED.value[0],
                f"{self._max_threads} streaming calls are running on this server; close one first",
            )
            return
        call.started = True
        threading.Thread(
            target=self._run, args=(call,), name="pdp-native-stream", daemon=True
        ).start()

    def _run(self, call: _Call) -> None:
        handler = self._handlers[call.method]
        serialize = handler.response_serializer
        code, message = 0, ""
        responses: Any = None
        try:
            if handler.request_streaming:
                responses = handler.stream_stream(call.requests(), call)
            else:
                responses = handler.unary_stream(call.messages.popleft(), call)
            for response in responses:
                if not call.active:
                    break
                call.send(serialize(response))
        except _Gone:
            pass
        except Aborted as exc:
            code, message = exc.reply[0], exc.reply[1]
        except Exception:
            log.exception("native transport: a streaming call failed")
            code, message = _INTERNAL, "internal error"
        finally:
            # A generator left at a yield (the call ended under it) runs its own finally
            # now, not when collected: BoundedReflection gives its slot back there.
            with contextlib.suppress(Exception):
                getattr(responses, "close", lambda: None)()
            self._threads.release()
            call.end(code, message)

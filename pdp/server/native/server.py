"""The native transport's server (`pdp serve --transport native`, experimental): HTTP/2 and gRPC
framing in C (`_h2.c`, on libnghttp2), the decision in pdp's own `DecisionService`.

The C I/O thread never holds the GIL: it reads, parses and judges the framing of every call,
and queues complete requests. One decision thread here takes them in batches (`_h2.take`
releases the GIL while it waits), runs each through the very function grpcio calls per Check
(`DecisionService.check`: the decision cache, deadlines, the drain), and hands the replies
back (`_h2.answer`), which the I/O thread writes, gathered into one send() per connection.
Measured in bench/RESULTS.md ("A C front end, measured"): about a quarter of grpcio's server
CPU per call.

Served: pdp.v1.DecisionService/Check, Plan and ServerInfo (grpcio's own handlers, through a
path table) and grpc.health.v1.Health/Check, plaintext TCP; the streaming health Watch and
server reflection through `streams.StreamPump` (the grpcio transport's bounded servicers); each Check and Plan observed by
telemetry as on grpcio (the call's metadata comes from the C side). Every other path is
UNIMPLEMENTED; pdp.cli.serve_native refuses the options this does not honour.
One decision thread: batches are decided one after the other under the GIL anyway.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from ..cache import DecisionCache
from ..server import DRAIN_QUIET_S, STOP_MARGIN_S, Readiness, ServerConfig, _bind_error
from ..service import SERVICE_NAME, DecisionService
from ..status import DecodingServer, status_for
from ..streams import MAX_WATCHERS, BoundedHealth, BoundedReflection, max_reflection_streams
from .streams import Aborted as _Aborted
from .streams import StreamPump

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder
    from pdp.server.hooks import Observer

log = logging.getLogger("pdp.server")

HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"
# Streams one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS), as grpcio's default.
MAX_STREAMS = 100
# The paths served, in the order of the method numbers _h2 hands calls with, each with whether
# it is refused UNAVAILABLE once the drain begins (decisions are; health and ServerInfo answer).
SERVED: tuple[tuple[str, bool], ...] = (
    (f"/{SERVICE_NAME}/Check", True),
    (HEALTH_CHECK, False),
    (f"/{SERVICE_NAME}/Plan", True),
    (f"/{SERVICE_NAME}/ServerInfo", False),
)
# The streaming paths (_h2.serve_streams), served by the grpcio transport's own servicers.
STREAMED: tuple[str, ...] = (
    f"/{HEALTH_SERVICE}/Watch",
    f"/{reflection.SERVICE_NAME}/ServerReflectionInfo",
)
# Streaming calls open at once, all kinds together (the C side's bound, beyond each
# servicer's own: the watchers', the reflection streams').
_STREAM_MARGIN = 8
# Bytes one streaming call may have queued for a client that does not read them (its flow
# control window closed); past it the stream is reset (ENHANCE_YOUR_CALM).
STREAM_OUT_CAP = 4 << 20
# How long the decision thread waits for a batch before it looks whether to stop.
_TAKE_WAIT_S = 0.25

Reply = bytes | tuple[int, str, str | None]
# What grpcio's auth_context() says of a plaintext call.
_INSECURE = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


def load_extension() -> Any:
    """The C extension, or ImportError saying how to get it."""
    try:
        from . import _h2
    except ImportError as exc:
        raise ImportError(
            "the native transport is not built: it needs Debian's libnghttp2-dev and a C "
            "compiler when pdp is installed (`make` installs them; then `pip install -e .` "
            f"again) ({exc})"
        ) from exc
    return _h2


def _status_reply(status: Any) -> tuple[int, str, str | None]:
    """(code, message, base64 grpc-status-details-bin or None) of a grpc.Status."""
    details = None
    for key, value in status.trailing_metadata or ():
        if key == "grpc-status-details-bin":
            details = base64.b64encode(value).decode("ascii")
    return status.code.value[0], status.details or "", details


def _metadata(packed: bytes) -> tuple[tuple[str, str | bytes], ...]:
    """The call's metadata as grpcio's `invocation_metadata()` gives it, from the C side's
    `name\0value\0...` (request headers but the pseudo-headers, content-type, te and grpc-*;
    names lowercase, as HTTP/2 requires and nghttp2 checks): a `-bin` value base64-decoded to
    bytes (the C side let only base64 through), any other decoded as UTF-8 (Latin-1 when it is
    not, as grpcio)."""
    if not packed:
        return ()
    parts = packed.split(b"\0")
    out: list[tuple[str, str | bytes]] = []
    for i in range(0, len(parts) - 1, 2):
        key = parts[i].decode("ascii", "replace")
        raw = parts[i + 1]
        if key.endswith("-bin"):  # padding is optional, as for grpc
            out.append((key, base64.b64decode(raw + b"=" * (-len(raw) % 4))))
            continue
        try:
            out.append((key, raw.decode("utf-8")))
        except UnicodeDecodeError:
            out.append((key, raw.decode("latin-1")))
    return tuple(out)


class _Context:
    """What `DecisionService` reads of a grpc ServicerContext: the call's time left (from its
    grpc-timeout, on the same monotonic clock as the C side) and how to fail it; the peer, as
    grpc spells it; the call's metadata, as grpcio gives it (for the observer: trace context,
    and what the decision log's queue counts); no client identities (plaintext)."""

    __slots__ = (
        "_active",
        "_callbacks",
        "_deadline",
        "_ended",
        "_index",
        "_lock",
        "_metadata",
        "_packed",
        "_peer",
        "_register",
        "seq",
    )

    def __init__(
        self,
        deadline: float | None,
        peer: str,
        packed: bytes,
        active: Callable[[int], bool] | None = None,
        index: int = 0,
        register: Callable[[_Context], None] | None = None,
    ) -> None:
        self._deadline = deadline
        self._peer = peer
        self._packed = packed
        self._metadata: tuple[tuple[str, str | bytes], ...] | None = None
        self._active = active
        self._index = index
        self._register = register
        self._callbacks: list[Callable[[], None]] | None = None
        self._ended = False
        self.seq = 0

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        # Made when first read: without an observer nothing reads it.
        if self._metadata is None:
            self._metadata = _metadata(self._packed)
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return dict(_INSECURE)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def abort_with_status(self, status: Any) -> None:
        raise _Aborted(_status_reply(status))

    def peer(self) -> str:
        return self._peer

    def is_active(self) -> bool:
        """False once the client has reset the call or closed its connection (the C side
        marks the call taken), as grpcio's."""
        return self._active is None or self._active(self._index)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """`callback` runs when the call ends, as on grpcio: its reply made, or its client
        gone (then at once, from the stream pump, while the decision may still run). False,
        and never run, once the call has ended."""
        if self._callbacks is None:
            self._callbacks = []
            self._lock = threading.Lock()
            if self._register is not None:
                self._register(self)  # the pump finds it by its id if the client resets it
        with self._lock:
            if self._ended or not self.is_active():
                return False
            self._callbacks.append(callback)
            return True

    def run_callbacks(self) -> None:
        """The callbacks, once (whichever thread sees the end first)."""
        if self._callbacks is None:
            return
        with self._lock:
            if self._ended:
                return
            self._ended = True
            callbacks = self._callbacks
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("native transport: a call's callback failed")


class NativeServer(Readiness):
    """The `PdpServer` interface `pdp serve` uses, on the native transport."""

    def __init__(
        self, holder: EngineHolder, config: ServerConfig, observer: Observer | None = None
    ) -> None:
        """`observer`: telemetry's (the decision log, traces, metrics), told of every Check
        decided, as on grpcio (`DecisionService._check_observed`); closed by `stop`."""
        self._h2 = load_extension()
        self._config = config
        self._holder = holder
        (target,) = config.listen  # pdp.cli.serve_native allows one
        self._sock = _listen(target, config.reuse_port)
        host = target.rsplit(":", 1)[0]
        self.addresses = [f"{host}:{self._sock.getsockname()[1]}"]
        self.service_names = (SERVICE_NAME,)
        self.observer = observer
        self.decision_cache = (
            DecisionCache(config.decision_cache) if config.decision_cache > 0 else None
        )
        self.decisions = DecisionService(
            holder,
            config.limits,
            config.max_message_bytes,
            observer,
            cache=self.decision_cache,
            client_identities=False,
        )
        self.activity = self.decisions.activity
        # The method number _h2 gives a call (its index in self._paths) -> what answers it.
        self._paths = SERVED
        self._methods = _method_table(
            [path for path, _ in self._paths], self.decisions, self._check_health
        )
        self._health: dict[str, int] = {}
        # The streaming calls (Watch, reflection): the grpcio transport's servicers, bounded
        # as there, registered through DecodingServer to get their decoding handlers.
        self.health = BoundedHealth()
        streamed = _Handlers()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, DecodingServer(streamed))  # type: ignore[arg-type]
        reflection_streams = max_reflection_streams(config.threads)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            BoundedReflection(
                (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME),
                reflection_streams,
            ),
            DecodingServer(streamed),  # type: ignore[arg-type]
        )
        self._streams = StreamPump(
            self._h2,
            [streamed.handlers[path] for path in STREAMED],
            reflection_streams + _STREAM_MARGIN,
            _metadata,
            self._cancelled,
        )
        # Unary calls being decided whose servicer registered callbacks, by their C id.
        self._cancellable: dict[int, _Context] = {}
        self._cancellable_lock = threading.Lock()
        self._max_streams_open = MAX_WATCHERS + reflection_streams + _STREAM_MARGIN
        self._draining = False
        self._held = False
        self._drain_deadline = 0.0
        self._running = False
        self._stop_loop = False
        self._thread: threading.Thread | None = None
        self.set_serving(holder.current is not None)
        holder.on_swap(lambda _engine: self.set_serving(True))

    @property
    def port(self) -> int:
        return int(self.addresses[0].rsplit(":", 1)[1])

    # -- health, as PdpServer --------------------------------------------------------------

    def _publish(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        self._health = {name: status for name in ("", *self.service_names)}
        for name in self._health:  # the watchers hear it
            self.health.set(name, status)

    # -- the calls ---------------------------------------------------------------------------

    def _check_health(self, body: bytes, _context: _Context) -> Reply:
        try:
            request = health_pb2.HealthCheckRequest.FromString(body)
        except DecodeError as exc:
            return _status_reply(status_for(exc))
        status = self._health.get(request.service)
        if status is None:  # as grpc's HealthServicer
            return grpc.StatusCode.NOT_FOUND.value[0], "Unknown service", None
        return health_pb2.HealthCheckResponse(status=status).SerializeToString()

    def _watch_cancel(self, context: _Context) -> None:
        context.seq = self._h2.call_id(context._index)
        with self._cancellable_lock:
            self._cancellable[context.seq] = context

    def _cancelled(self, seq: int) -> None:
        """The stream pump: a call being decided was reset; its callbacks run now."""
        with self._cancellable_lock:
            context = self._cancellable.pop(seq, None)
        if context is not None:
            context.run_callbacks()

    def _one(
        self, index: int, method: int, body: bytes, deadline: float | None, peer: str, packed: bytes
    ) -> Reply:
        context = _Context(deadline, peer, packed, self._h2.active, index, self._watch_cancel)
        try:
            return self._methods[method](body, context)
        except _Aborted as exc:
            return exc.reply
        except Exception:  # the servicer answers its own failures; this is a bug here
            log.exception("native transport: a call failed")
            return grpc.StatusCode.INTERNAL.value[0], "internal error", None
        finally:
            if context._callbacks is not None:
                with self._cancellable_lock:
                    self._cancellable.pop(context.seq, None)
                context.run_callbacks()

    def _loop(self) -> None:
        take, answer, one = self._h2.take, self._h2.answer, self._one
        while not self._stop_loop:
            try:
                batch = take(_TAKE_WAIT_S)
            except MemoryError:  # the batch is out but not built: answered INTERNAL
                with contextlib.suppress(ValueError, RuntimeError):
                    answer(None)
                continue
            if not batch:
                continue
            try:
                replies: list[Reply] | None = [one(i, *item) for i, item in enumerate(batch)]
            except BaseException:
                log.exception("native transport: a batch failed")
                replies = None
            with contextlib.suppress(ValueError):  # None: the batch is answered INTERNAL
                answer(replies)

    def start(self) -> None:
        c = self._config
        self._h2.serve_streams(STREAMED, self._max_streams_open, STREAM_OUT_CAP)
        self._h2.start(
            self._sock.fileno(),
            max_message=c.max_message_bytes,
            max_streams=MAX_STREAMS,
            max_conns=c.max_connections,
            max_calls=c.max_concurrent_rpcs,
            idle_timeout=c.idle_timeout_s,
            paths=self._paths,
        )
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="pdp-native-decide", daemon=True)
        self._thread.start()
        self._streams.start()

    def begin_stop(self, grace: float) -> None:
        """As PdpServer's: health NOT_SERVING, every connection told GOAWAY, a Check arriving
        from now on refused with UNAVAILABLE (by the C side), calls in flight get `grace`."""
        if self._draining:
            return
        self._drain_deadline = time.monotonic() + grace
        self._draining = True
        self.decisions.begin_drain(self._drain_deadline)
        if self._running:
            self._h2.drain()
        self.set_serving(False)

    def stop(self, grace: float) -> None:
        self.begin_stop(grace)
        if self._running:
            outstanding = self._h2.outstanding
            # In-flight calls finish (or stop at the drain deadline and answer UNAVAILABLE).
            end = self._drain_deadline + STOP_MARGIN_S
            while outstanding() and time.monotonic() < end:
                time.sleep(0.01)
            if outstanding():
                log.warning("%d calls still running at shutdown", outstanding())
            time.sleep(min(DRAIN_QUIET_S, 0.05))  # the last replies reach the I/O thread
            self._stop_loop = True
            if self._thread is not None:
                self._thread.join(STOP_MARGIN_S + _TAKE_WAIT_S)
            if self._thread is not None and self._thread.is_alive():
                # A decision past every bound (its batch is still out): the process exit
                # closes the connections.
                log.warning("native transport: the decision thread did not stop")
            else:
                self._streams.stop()  # open Watch and reflection streams end UNAVAILABLE
                self._h2.stop()
                self._running = False
        self._sock.close()
        # Last: every call decided has been observed (the decision thread has stopped).
        if self.observer is not None:
            try:
                self.observer.close()
            except Exception:
                log.exception("observer close failed")

    def wait(self, timeout: float | None = None) -> bool:
        return not self._running


class _Handlers:
    """Collects what `DecisionService.register` gives a grpc server: the very handlers grpcio
    serves Check, Plan and ServerInfo with."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers.update({f"/{service}/{name}": h for name, h in handlers.items()})


def _method_table(
    paths: list[str], decisions: DecisionService, health: Callable[[bytes, Any], Reply]
) -> list[Callable[[bytes, Any], Reply]]:
    """One answer per path the C side serves, in its order: Check straight to
    `DecisionService.check` (bytes in, bytes out), Plan and ServerInfo through grpcio's
    handlers (decoding as they do: an undecodable request is INVALID_ARGUMENT naming
    `request`) and their serializer; Health here."""
    grpc_side = _Handlers()
    decisions.register(grpc_side)  # type: ignore[arg-type]
    table: list[Callable[[bytes, Any], Reply]] = []
    for path in paths:
        if path == HEALTH_CHECK:
            table.append(health)
        elif path == f"/{SERVICE_NAME}/Check":
            table.append(decisions.check)
        else:
            handler = grpc_side.handlers[path]  # KeyError: _h2 serves a path pdp does not
            table.append(_unary(handler.unary_unary, handler.response_serializer))
    return table


def _unary(behaviour: Callable[[bytes, Any], Any], serialize: Callable[[Any], bytes]) -> Any:
    return lambda body, context: serialize(behaviour(body, context))


def _listen(target: str, reuse_port: bool) -> socket.socket:
    """A non-blocking listening TCP socket on HOST:PORT (`[v6]:PORT` too)."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise RuntimeError(_bind_error(target)) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # sibling workers only, as the grpcio transport
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise RuntimeError(_bind_error(target)) from exc
    return sock

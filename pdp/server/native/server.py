"""The native transport's server (`pdp serve`'s default, `--transport native`): HTTP/2 and gRPC
framing in C (`_h2.c`, on libnghttp2), the decision in pdp's own `DecisionService`.

The C I/O thread never holds the GIL: it reads, parses and judges the framing of every call,
and queues complete requests. The decision threads here take them in batches (`_h2.take`
releases the GIL while it waits), run each through the very function grpcio calls per Check
(`DecisionService.check`: the decision cache, deadlines, the drain), and hand each reply back
once it is decided (`_h2.reply`; `_h2.answer` ends the batch), which the I/O thread writes,
gathered into one send() per connection.
Measured in bench/RESULTS.md ("A C front end, measured"): about a quarter of grpcio's server
CPU per call.

Served: pdp.v1.DecisionService/Check, Plan and ServerInfo (grpcio's own handlers, through a
path table), grpc.health.v1.Health/Check, and the unary services `pdp serve` adds (Envoy's
ext_authz and rate-limit service: `extra_services`, the registrars grpcio's build_server takes,
their handlers collected here), on TCP listeners, plaintext or TLS (mTLS with client CAs,
`_tls.c`; the allow-list as grpcio's interceptor refuses), and Unix sockets, several at once;
the streaming health Watch and server reflection through `streams.StreamPump` (the grpcio
transport's bounded servicers, made on the first streaming call: until then nothing here
imports grpc); each call observed by telemetry as on grpcio (the call's
metadata and auth context come from the C side). Every other path is UNIMPLEMENTED, as on
grpcio.

Decision threads (`ServerConfig.threads`, `--threads`): each takes its own batches. Decisions
run under the GIL anyway, so more threads do not decide faster; they let other calls be
answered while one decision waits outside the GIL (a Redis rate-limit store's round trip).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from google.protobuf import descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2  # the messages alone (protobuf), not grpc

from ..cache import DecisionCache
from ..config import (
    DEFAULT_THREADS,
    DRAIN_QUIET_S,
    MAX_WATCHERS,
    STOP_MARGIN_S,
    Readiness,
    ServerConfig,
    max_reflection_streams,
)
from ..config import bind_error as _bind_error
from ..hooks import Registrar, on_bytes
from ..identity import AllowList
from ..service import SERVICE_NAME, DecisionService, taken_while_draining
from ..status import Aborted as _Aborted
from ..status import Status, StatusCode, status_for
from .auth import INSECURE, Auth, of_connection
from .streams import StreamPump

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder
    from pdp.server.hooks import Observer, ServiceRegistrar
    from pdp.server.streams import BoundedHealth

log = logging.getLogger("pdp.server")

HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"  # grpc_reflection's name
# Streams one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS), as grpcio's default.
MAX_STREAMS = 100
# The paths served, in the order of the method numbers _h2 hands calls with, each with whether
# it is refused UNAVAILABLE once the drain begins (decisions are; health and ServerInfo answer).
# The extra services' paths follow, none refused by the C side: ext_authz answers its own
# refusal (a denial, 503 `shutting_down`), as on grpcio; the rate-limit service answers on.
SERVED: tuple[tuple[str, bool], ...] = (
    (f"/{SERVICE_NAME}/Check", True),
    (HEALTH_CHECK, False),
    (f"/{SERVICE_NAME}/Plan", True),
    (f"/{SERVICE_NAME}/ServerInfo", False),
)
# The streaming paths (_h2.serve_streams), served by the grpcio transport's own servicers.
STREAMED: tuple[str, ...] = (
    f"/{HEALTH_SERVICE}/Watch",
    f"/{REFLECTION_SERVICE}/ServerReflectionInfo",
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


# What this Python side calls. An editable checkout keeps the extension it last built, which a
# newer checkout's Python may outgrow: refused at start, not by decision threads dying later.
_CALLS = (
    "active", "answer", "call_id", "drain", "outstanding", "reply", "serve_streams", "start",
    "stop", "stream_finish", "stream_send", "stream_take", "take", "use_tls",
)  # fmt: skip


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
    if missing := [name for name in _CALLS if not hasattr(_h2, name)]:
        raise ImportError(
            "the native transport's extension is older than this pdp (it lacks "
            f"{', '.join(missing)}): rebuild it (`make native`, or `pip install -e .` again)"
        )
    return _h2


class _Metadatum(NamedTuple):
    """One metadata item, as grpcio's (a pair with `.key` and `.value`)."""

    key: str
    value: str | bytes


def _metadata(packed: bytes) -> tuple[_Metadatum, ...]:
    """The call's metadata as grpcio's `invocation_metadata()` gives it, from the C side's
    `name\0value\0...` (request headers but the pseudo-headers, content-type, te and grpc-*;
    names lowercase, as HTTP/2 requires and nghttp2 checks): a `-bin` value base64-decoded to
    bytes (the C side let only base64 through), any other decoded as UTF-8 (Latin-1 when it is
    not, as grpcio)."""
    if not packed:
        return ()
    parts = packed.split(b"\0")
    out: list[_Metadatum] = []
    for i in range(0, len(parts) - 1, 2):
        key = parts[i].decode("ascii", "replace")
        raw = parts[i + 1]
        if key.endswith("-bin"):  # padding is optional, as for grpc
            out.append(_Metadatum(key, base64.b64decode(raw + b"=" * (-len(raw) % 4))))
            continue
        try:
            out.append(_Metadatum(key, raw.decode("utf-8")))
        except UnicodeDecodeError:
            out.append(_Metadatum(key, raw.decode("latin-1")))
    return tuple(out)


class _Context:
    """What pdp's servicers (`DecisionService`, ext_authz, the rate-limit service) read of a
    grpc ServicerContext: the call's time left (from its grpc-timeout, on the same monotonic
    clock as the C side) and how to fail it (abort, abort_with_status, or set_code and
    set_details then return); the peer, as grpc spells it (`ipv4:`, `ipv6:`, `unix:`); the
    call's metadata, as grpcio gives it (for the observer: trace context, and what the
    decision log's queue counts); the auth context, as grpcio's (the client's identities under
    mTLS), from the connection's (`auth`: None for plaintext)."""

    __slots__ = (
        "_active",
        "_auth",
        "_callbacks",
        "_code",
        "_deadline",
        "_details",
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
        auth: list[bytes | Auth] | None = None,
        active: Callable[[int], bool] | None = None,
        index: int = 0,
        register: Callable[[_Context], None] | None = None,
    ) -> None:
        self._deadline = deadline
        self._peer = peer
        self._packed = packed
        self._auth = auth
        self._metadata: tuple[_Metadatum, ...] | None = None
        self._code: Any = None  # pdp's StatusCode or grpc's (the same values)
        self._details = ""
        self._active = active
        self._index = index
        self._register = register
        self._callbacks: list[Callable[[], None]] | None = None
        self._ended = False
        self.seq = 0

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        # Made when first read: without an observer nothing reads it.
        if self._metadata is None:
            self._metadata = _metadata(self._packed)
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        if self._auth is None:
            return dict(INSECURE)
        return dict(of_connection(self._auth).context)

    def peer_identity_key(self) -> str | None:
        return None if self._auth is None else of_connection(self._auth).identity_key

    def peer_identities(self) -> list[bytes] | None:
        key = self.peer_identity_key()
        return None if key is None else list(of_connection(self._auth).context[key])  # type: ignore[arg-type]

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def abort_with_status(self, status: Any) -> None:
        """`status`: a grpc.Status (a servicer of grpcio's) or pdp's `Status`."""
        raise _Aborted(Status(status.code, status.details or "", status.trailing_metadata or ()))

    def abort(self, code: Any, details: str) -> None:
        if code.value[0] == 0:  # as grpcio: aborting with OK is a bug of the servicer
            code, details = StatusCode.UNKNOWN, ""
        raise _Aborted(Status(code, details or ""))

    def set_code(self, code: Any) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, _metadata: Any) -> None:
        pass  # no servicer of pdp's sets any but through abort_with_status

    def error(self) -> tuple[int, str, str | None] | None:
        """What set_code and set_details made of the call (None: it answers its reply)."""
        if self._code is None or self._code.value[0] == 0:
            return None
        return self._code.value[0], self._details, None

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
        self,
        holder: EngineHolder,
        config: ServerConfig,
        observer: Observer | None = None,
        *,
        extra_services: Sequence[ServiceRegistrar] = (),
    ) -> None:
        """`observer`: telemetry's (the decision log, traces, metrics), told of every Check
        decided, as on grpcio (`DecisionService._check_observed`); closed by `stop`.
        `extra_services`: as `build_server`'s (ext_authz, the rate-limit service): each
        registers its unary handlers here, and its `begin_drain` (if any) is told of the drain."""
        self._h2 = load_extension()
        self._config = config
        self._holder = holder
        self._socks: list[socket.socket] = []
        self._unix: list[str] = []  # the socket files this server made, removed by stop
        self.addresses: list[str] = []
        try:
            for target in config.listen:
                sock = _listen(target, config.reuse_port)
                self._socks.append(sock)
                self.addresses.append(f"{target.rsplit(':', 1)[0]}:{sock.getsockname()[1]}")
            for path in config.unix:
                self._socks.append(_listen_unix(path))
                self._unix.append(path)
                self.addresses.append(f"unix:{path}")
        except BaseException:
            self._close_listeners()
            raise
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
            client_identities=config.tls is not None and config.tls.client_ca_pem is not None,
        )
        self.activity = self.decisions.activity
        # The extra services' unary methods, by path: a `Registrar` describes them without
        # grpc; any other registrar registers grpc handlers on a collector.
        names: list[str] = []
        extra: dict[str, Callable[[bytes, Any], Reply]] = {}
        collected = _Handlers()
        for register in extra_services:
            if isinstance(register, Registrar):
                service = register.service()
                names.append(service.name)
                for name, method in service.methods.items():
                    extra[f"/{service.name}/{name}"] = on_bytes(method)
            else:
                names.append(register(collected))  # type: ignore[arg-type]
                collected_paths = collected.unary_paths(names[-1:])
                extra.update({path: _unary(h) for path, h in collected_paths.items()})
        self.service_names = (SERVICE_NAME, *names)
        self._extra_services = tuple(extra_services)
        self._drains: list[Callable[[float], None]] = [
            drain
            for register in extra_services
            if (drain := getattr(register, "begin_drain", None))
        ]
        # The method number _h2 gives a call (its index in self._paths) -> what answers it.
        self._paths = SERVED + tuple((path, False) for path in extra)
        self._methods = _method_table(
            [path for path, _ in SERVED], self.decisions, self._check_health
        ) + list(extra.values())
        # --allow-identity: refused as grpcio's interceptor refuses, health left open.
        self._allow = AllowList(config.allow_identities) if config.allow_identities else None
        if self._allow is not None:
            paths = [path for path, _ in self._paths]
            guard = self._allow.guard
            self._methods = [guard(p, m) for p, m in zip(paths, self._methods, strict=True)]
        self._health: dict[str, int] = {}
        self._health_servicer: BoundedHealth | None = None
        self._health_lock = threading.Lock()
        # Reflection streams run on threads of their own here, not on the decision threads:
        # bounded as grpcio's transport bounds them with its default threads, or more.
        self._reflection_streams = max_reflection_streams(max(config.threads, DEFAULT_THREADS))
        self._streams = StreamPump(
            self._h2,
            self._stream_handlers,
            self._reflection_streams + _STREAM_MARGIN,
            _metadata,
            self._cancelled,
        )
        # Unary calls being decided whose servicer registered callbacks, by their C id.
        self._cancellable: dict[int, _Context] = {}
        self._cancellable_lock = threading.Lock()
        self._max_streams_open = MAX_WATCHERS + self._reflection_streams + _STREAM_MARGIN
        self._draining = False
        self._held = False
        self._drain_deadline = 0.0
        self._running = False
        self._stop_loop = False
        self._threads: list[threading.Thread] = []
        self.set_serving(holder.current is not None)
        holder.on_swap(lambda _engine: self.set_serving(True))

    @property
    def port(self) -> int:
        """The first TCP port bound (useful with port 0)."""
        for a in self.addresses:
            if not a.startswith("unix:"):
                return int(a.rsplit(":", 1)[1])
        raise ValueError("no TCP listener")

    def _close_listeners(self) -> None:
        for sock in self._socks:
            sock.close()
        for path in self._unix:  # as grpcio, which removes its socket files at stop
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._unix = []

    # -- health, as PdpServer --------------------------------------------------------------

    def _publish(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        with self._health_lock:
            self._health = {name: status for name in ("", *self.service_names)}
            if self._health_servicer is not None:
                for name in self._health:  # the watchers hear it
                    self._health_servicer.set(name, status)

    # -- the streaming calls, made on the first ----------------------------------------------

    @property
    def health(self) -> BoundedHealth:
        """The health servicer Watch streams are served by (made, and grpc imported, when
        first asked for), told of every status `_publish` sets."""
        with self._health_lock:
            if self._health_servicer is None:
                from ..streams import BoundedHealth

                servicer = BoundedHealth()
                for name, status in self._health.items():
                    servicer.set(name, status)
                self._health_servicer = servicer
            return self._health_servicer

    def _stream_handlers(self) -> list[Any]:
        """The streaming calls' handlers (Watch, reflection), in STREAMED's order: the grpcio
        transport's servicers, bounded as there, registered through DecodingServer to get
        their decoding handlers. Made by the stream pump when the first streaming call opens:
        they are grpcio's, and most servers are never asked for one."""
        from grpc_health.v1 import health_pb2_grpc
        from grpc_reflection.v1alpha import reflection_pb2_grpc

        from ..grpc_edge import DecodingServer, guard_handler
        from ..streams import BoundedReflection

        for register in self._extra_services:  # reflection describes their protos
            if (load := getattr(register, "load", None)) is not None:
                load()
        streamed = _Handlers()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, DecodingServer(streamed))  # type: ignore[arg-type]
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            BoundedReflection(
                (*self.service_names, HEALTH_SERVICE, REFLECTION_SERVICE),
                self._reflection_streams,
            ),
            DecodingServer(streamed),  # type: ignore[arg-type]
        )
        handlers = [streamed.handlers[path] for path in STREAMED]
        if self._allow is not None:  # refused as grpcio's interceptor refuses
            handlers = [guard_handler(self._allow, p, h) for p, h in zip(STREAMED, handlers)]
        return handlers

    # -- the calls ---------------------------------------------------------------------------

    def _check_health(self, body: bytes, _context: _Context) -> Reply:
        try:
            request = health_pb2.HealthCheckRequest.FromString(body)
        except DecodeError as exc:
            return _Aborted(status_for(exc)).reply
        status = self._health.get(request.service)
        if status is None:  # as grpc's HealthServicer
            return StatusCode.NOT_FOUND.value[0], "Unknown service", None
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
        self,
        index: int,
        method: int,
        body: bytes,
        deadline: float | None,
        peer: str,
        packed: bytes,
        auth: list[bytes | Auth] | None,
    ) -> Reply:
        context = _Context(deadline, peer, packed, auth, self._h2.active, index, self._watch_cancel)
        try:
            reply = self._methods[method](body, context)
        except _Aborted as exc:
            return exc.reply
        except Exception:  # the servicer answers its own failures; this is a bug here
            log.exception("native transport: a call failed")
            return StatusCode.INTERNAL.value[0], "internal error", None
        finally:
            if context._callbacks is not None:
                with self._cancellable_lock:
                    self._cancellable.pop(context.seq, None)
                context.run_callbacks()
        return context.error() or reply

    def _loop(self) -> None:
        take, answer, reply, one = self._h2.take, self._h2.answer, self._h2.reply, self._one
        while not self._stop_loop:
            try:
                batch = take(_TAKE_WAIT_S)
            except MemoryError:  # the batch is out but not built: answered INTERNAL
                with contextlib.suppress(ValueError, RuntimeError):
                    answer(None)
                continue
            if not batch:
                continue
            # Taken once the drain began: refused by the servicers, as grpcio's executor marks
            # the calls it takes then (a Check UNAVAILABLE, ext_authz a denial 503).
            taken_while_draining.value = self._draining
            # Each call's reply leaves once it is decided (reply(): no wake-up, the I/O thread
            # sends it within a millisecond), not when the batch ends: a slow call held every
            # reply taken with it. The last goes with answer(), which ends the batch.
            last = len(batch) - 1
            replies: list[Reply] | None = []
            try:
                for i, item in enumerate(batch):
                    decided = one(i, *item)
                    replies.append(decided)
                    if i < last:
                        reply(i, decided)
            except BaseException:
                log.exception("native transport: a batch failed")
                replies = None
            with contextlib.suppress(ValueError):  # None: the batch is answered INTERNAL
                answer(replies)

    def start(self) -> None:
        c = self._config
        # TLS (pdp.server.tls_files checked the files), or plaintext: the extension's state.
        if c.tls is None:
            self._h2.use_tls(None)
        else:
            self._h2.use_tls(c.tls.cert_pem, c.tls.key_pem, c.tls.client_ca_pem)
        self._h2.serve_streams(STREAMED, self._max_streams_open, STREAM_OUT_CAP)
        self._h2.start(
            tuple(sock.fileno() for sock in self._socks),
            max_message=c.max_message_bytes,
            max_streams=MAX_STREAMS,
            max_conns=c.max_connections,
            max_calls=c.max_concurrent_rpcs,
            idle_timeout=c.idle_timeout_s,
            paths=self._paths,
            keepalive_time=c.keepalive_time_s,
            keepalive_timeout=c.keepalive_timeout_s,
        )
        self._running = True
        self._threads = [
            threading.Thread(target=self._loop, name=f"pdp-native-decide-{i}", daemon=True)
            for i in range(max(1, c.threads))
        ]
        for thread in self._threads:
            thread.start()
        self._streams.start()

    def begin_stop(self, grace: float) -> None:
        """As PdpServer's: health NOT_SERVING, every connection told GOAWAY, a Check arriving
        from now on refused with UNAVAILABLE (by the C side), calls in flight get `grace`."""
        if self._draining:
            return
        self._drain_deadline = time.monotonic() + grace
        self._draining = True
        self.decisions.begin_drain(self._drain_deadline)
        for begin_drain in self._drains:  # other services' calls (Envoy ext_authz)
            begin_drain(self._drain_deadline)
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
            end = time.monotonic() + STOP_MARGIN_S + _TAKE_WAIT_S
            for thread in self._threads:
                thread.join(max(0.0, end - time.monotonic()))
            if any(thread.is_alive() for thread in self._threads):
                # A decision past every bound (its batch is still out): the process exit
                # closes the connections.
                log.warning("native transport: a decision thread did not stop")
            else:
                self._streams.stop()  # open Watch and reflection streams end UNAVAILABLE
                self._h2.stop()
                self._running = False
        self._close_listeners()
        # Last: every call decided has been observed (the decision thread has stopped).
        if self.observer is not None:
            try:
                self.observer.close()
            except Exception:
                log.exception("observer close failed")

    def wait(self, timeout: float | None = None) -> bool:
        return not self._running


class _Details(NamedTuple):
    """A grpc.HandlerCallDetails, to ask a generic handler for a path's handler."""

    method: str
    invocation_metadata: tuple[Any, ...] = ()


class _Handlers:
    """Collects what a registrar gives a grpc server (`DecisionService.register`, the
    generated `add_..._to_server`, a generic handler): the very handlers grpcio serves with."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}
        self.generic: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers.update({f"/{service}/{name}": h for name, h in handlers.items()})

    def unary_paths(self, services: Sequence[str]) -> dict[str, Any]:
        """path -> handler of every unary method of `services` (their methods as the protobuf
        descriptors name them, their handlers as registered); a streaming one is refused."""
        out: dict[str, Any] = {}
        pool = descriptor_pool.Default()
        for service in services:
            for method in pool.FindServiceByName(service).methods:
                path = f"/{service}/{method.name}"
                handler = self.handlers.get(path) or next(
                    (h for g in self.generic if (h := g.service(_Details(path))) is not None),
                    None,
                )
                if handler is None:
                    continue
                if handler.unary_unary is None:
                    raise ValueError(f"the native transport serves unary calls only: {path}")
                out[path] = handler
        return out


def _method_table(
    paths: list[str], decisions: DecisionService, health: Callable[[bytes, Any], Reply]
) -> list[Callable[[bytes, Any], Reply]]:
    """One answer per path the C side serves, in its order: Check straight to
    `DecisionService.check` (bytes in, bytes out), Plan and ServerInfo through grpcio's
    handlers (decoding as they do: an undecodable request is INVALID_ARGUMENT naming
    `request`) and their serializer; Health here."""
    methods = decisions.service().methods
    table: list[Callable[[bytes, Any], Reply]] = []
    for path in paths:
        if path == HEALTH_CHECK:
            table.append(health)
        elif path == f"/{SERVICE_NAME}/Check":
            table.append(decisions.check)
        else:  # KeyError: a path pdp does not serve
            table.append(on_bytes(methods[path.removeprefix(f"/{SERVICE_NAME}/")]))
    return table


def _unary(handler: Any) -> Callable[[bytes, Any], Reply]:
    """A grpc unary handler as bytes in, bytes out: decoding as grpcio would (pdp's handlers
    decode their own requests: `pdp.server.status.decoding`), the reply by its serializer."""
    behaviour, serialize = handler.unary_unary, handler.response_serializer
    parse = handler.request_deserializer
    if parse is None:
        return lambda body, context: serialize(behaviour(body, context))
    return lambda body, context: serialize(behaviour(parse(body), context))


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


def _listen_unix(path: str) -> socket.socket:
    """A non-blocking listening Unix socket at `path`. As grpcio: a socket file left there
    (a server that did not stop) is replaced; any other file is not."""
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise RuntimeError(_bind_error(f"unix:{path}")) from exc
    return sock

"""Build, start and stop the gRPC server: decision service, health, reflection, extras.

A sync grpc server on a small thread pool: measured here it out-serves grpc.aio on this
CPU-bound, microsecond-scale work (BENCHMARKING.md), and one process is one core anyway;
`pdp serve --workers N` scales across cores with N processes sharing the port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from .cache import DecisionCache
from .config import (  # noqa: F401  (the defaults: re-exported, where they were first)
    DEFAULT_GRACE_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENT_RPCS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_THREADS,
    DRAIN_QUIET_S,
    STOP_MARGIN_S,
    Readiness,
    ServerConfig,
    TlsConfig,
)
from .config import bind_error as _bind_error
from .grpc_edge import AllowListInterceptor, DecodingServer
from .hooks import Observer, ServiceRegistrar
from .service import Activity, DecisionService, taken_while_draining
from .streams import BoundedHealth, BoundedReflection, max_reflection_streams

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder

log = logging.getLogger("pdp.server")


class _Executor(futures.ThreadPoolExecutor):
    """The RPC threads. Once shutdown begins, a call grpc takes from the transport is marked
    on its thread (the decision service refuses it), and the time it was taken is kept: the
    listeners close once calls stop arriving."""

    draining = False
    last_taken = 0.0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        if not self.draining:
            return super().submit(fn, *args, **kwargs)
        self.last_taken = time.monotonic()
        return super().submit(_refused, fn, *args, **kwargs)


def _refused(fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
    taken_while_draining.value = True
    try:
        return fn(*args, **kwargs)
    finally:
        taken_while_draining.value = False


class PdpServer(Readiness):
    """A built server: `start()`, then `stop(grace)`; `addresses` lists what it listens on."""

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        service_names: Sequence[str],
        addresses: list[str],
        observer: Observer | None,
    ) -> None:
        self.grpc_server = server
        self.health = health_servicer
        self.service_names = tuple(service_names)
        self.addresses = addresses
        self.observer = observer
        self.activity: Activity | None = None
        self.decision_cache: DecisionCache | None = None
        self.decisions: DecisionService | None = None
        # `begin_drain(deadline)` of the extra services that decide (`build_server`).
        self.drains: list[Callable[[float], None]] = []
        self.executor: _Executor | None = None
        self._draining = False
        self._held = False  # hold_serving: a supervisor has not yet said every worker is ready
        self._holder: EngineHolder | None = None
        self._drain_deadline = 0.0

    @property
    def port(self) -> int:
        """The first TCP port bound (useful with port 0)."""
        for a in self.addresses:
            if not a.startswith("unix:"):
                return int(a.rsplit(":", 1)[1])
        raise ValueError("no TCP listener")

    def _publish(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def start(self) -> None:
        self.grpc_server.start()

    def begin_stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Stop taking calls, at once: health says NOT_SERVING and every Check grpc takes from
        the transport from now on is refused with UNAVAILABLE (retryable: nothing is decided
        or logged). Calls already taken ("in flight") have `grace` seconds to finish; one
        still deciding then stops and answers UNAVAILABLE itself, so every decision made is a
        decision sent and logged. Idempotent; `stop` waits for the rest."""
        if self._draining:
            return
        self._drain_deadline = time.monotonic() + grace
        self._draining = True
        if self.executor is not None:
            self.executor.last_taken = time.monotonic()
            self.executor.draining = True
        if self.decisions is not None:
            self.decisions.begin_drain(self._drain_deadline)
        for begin_drain in self.drains:  # other services' calls (Envoy ext_authz)
            begin_drain(self._drain_deadline)
        # Last: a caller that sees NOT_SERVING can count on its next call being refused.
        self.set_serving(False)

    def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """`begin_stop`, close the listeners, wait for in-flight calls, close the observer.

        grpc's own stop cancels (CANCELLED) calls the transport has received but grpc has not
        yet taken, and under load (the GIL busy with decisions) there are some. So the
        listeners close once nothing has been taken or run for `DRAIN_QUIET_S` (every call
        taken meanwhile was refused or finished), or at the end of the grace under sustained
        traffic; calls still arriving at that instant are the only ones grpc cancels.
        """
        self.begin_stop(grace)
        deadline = self._drain_deadline
        executor, activity = self.executor, self.activity
        while time.monotonic() < deadline:
            taken_ago = time.monotonic() - executor.last_taken if executor else DRAIN_QUIET_S
            ran_ago = activity.quiet_for() if activity is not None else DRAIN_QUIET_S
            if min(taken_ago, ran_ago) >= DRAIN_QUIET_S:
                break
            time.sleep(0.02)
        # Calls past the drain deadline stop by themselves; grpc cancels what is left later.
        self.grpc_server.stop(max(deadline - time.monotonic(), 0.0) + STOP_MARGIN_S).wait()
        # grpc's stop has returned once every call ended for the transport; the handler
        # thread of a call it cancelled may still be running: its observation must reach the
        # observer before it closes (else it is counted as a drop).
        if activity is not None and not activity.wait_idle(STOP_MARGIN_S):
            log.warning("%d calls still running at shutdown", activity.in_flight)
        if self.observer is not None:
            try:
                self.observer.close()
            except Exception:
                log.exception("observer close failed")

    def wait(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)


def build_server(
    holder: EngineHolder,
    config: ServerConfig = ServerConfig(),  # noqa: B008  (frozen: one shared default is safe)
    *,
    observer: Observer | None = None,
    extra_services: Sequence[ServiceRegistrar] = (),
) -> PdpServer:
    """Build (not start) a server bound to every configured address."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        # grpc sets SO_REUSEPORT by default, which lets a second server silently share a port
        # already in use; only sibling workers may share it.
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
        *config.extra_options,
    ]
    if config.max_connections > 0:
        options.append(("grpc.max_allowed_incoming_connections", config.max_connections))
    if config.idle_timeout_s > 0:
        # Counted from the connection's start too, so it also bounds a handshake.
        options.append(("grpc.max_connection_idle_ms", max(1, round(config.idle_timeout_s * 1000))))
    if config.keepalive_time_s > 0:
        options += [
            ("grpc.keepalive_time_ms", max(1, round(config.keepalive_time_s * 1000))),
            ("grpc.keepalive_timeout_ms", max(1, round(config.keepalive_timeout_s * 1000))),
            # Without it grpc waits for the ACK its general ping timeout (60 s), whatever the
            # one above says (tests/security/test_keepalive.py).
            ("grpc.http2.ping_timeout_ms", max(1, round(config.keepalive_timeout_s * 1000))),
        ]
    else:  # grpc's spelling of never
        options.append(("grpc.keepalive_time_ms", 2**31 - 1))
    interceptors = (
        [AllowListInterceptor(config.allow_identities)] if config.allow_identities else []
    )
    executor = _Executor(max_workers=config.threads, thread_name_prefix="pdp-rpc")
    server = grpc.server(
        executor,
        options=options,
        interceptors=interceptors,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs or None,
    )
    cache = DecisionCache(config.decision_cache) if config.decision_cache > 0 else None
    decisions = DecisionService(
        holder,
        config.limits,
        config.max_message_bytes,
        observer,
        cache=cache,
        client_identities=config.tls is not None and config.tls.client_ca_pem is not None,
    )
    names = [decisions.register(server)]
    names += [register(server) for register in extra_services]
    for register in extra_services:  # a servicer made on its first call: reflection needs it
        if (load := getattr(register, "load", None)) is not None:
            load()

    # Registered through `DecodingServer`: an undecodable request is INVALID_ARGUMENT there too.
    health_servicer = BoundedHealth()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, DecodingServer(server))
    reflection_servicer = BoundedReflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME),
        max_reflection_streams(config.threads),
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection_servicer, DecodingServer(server)
    )

    credentials = None
    if config.tls is not None:
        credentials = grpc.ssl_server_credentials(
            [(config.tls.key_pem, config.tls.cert_pem)],
            root_certificates=config.tls.client_ca_pem,
            require_client_auth=config.tls.client_ca_pem is not None,
        )
    addresses = []
    targets = [*config.listen, *(f"unix:{p}" for p in config.unix)]
    for target in targets:
        try:
            if credentials is not None:
                port = server.add_secure_port(target, credentials)
            else:
                port = server.add_insecure_port(target)
        except RuntimeError as exc:  # grpc says only `Failed to bind to address ...`
            raise RuntimeError(_bind_error(target)) from exc
        if target.startswith("unix:"):
            addresses.append(target)
        else:
            addresses.append(f"{target.rsplit(':', 1)[0]}:{port}")

    pdp_server = PdpServer(server, health_servicer, names, addresses, observer)
    pdp_server.activity = decisions.activity
    pdp_server.decisions = decisions
    pdp_server.drains = [
        drain for register in extra_services if (drain := getattr(register, "begin_drain", None))
    ]
    pdp_server.executor = executor
    pdp_server._holder = holder
    pdp_server.decision_cache = cache
    pdp_server.set_serving(holder.current is not None)
    holder.on_swap(lambda _engine: pdp_server.set_serving(True))
    return pdp_server

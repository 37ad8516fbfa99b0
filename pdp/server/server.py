"""Build, start and stop the gRPC server: decision service, health, reflection, extras.

A sync grpc server on a small thread pool: measured here it out-serves grpc.aio on this
CPU-bound, microsecond-scale work (BENCHMARKING.md), and one process is one core anyway;
`pdp serve --workers N` scales across cores with N processes sharing the port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pdp.model.request import DEFAULT_LIMITS, Limits

from .cache import DEFAULT_CACHE_ENTRIES, DecisionCache
from .hooks import Observer, ServiceRegistrar
from .identity import AllowListInterceptor
from .service import Activity, DecisionService

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder

log = logging.getLogger("pdp.server")

# Largest request accepted; grpc refuses bigger ones (RESOURCE_EXHAUSTED) before parsing, which
# bounds the memory and parse time one call can cost. A 1,000-check batch with attributes fits.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Calls run on these threads; the work is CPU-bound under the GIL, so more threads only add
# contention, while too few let one slow client's call hold up others.
DEFAULT_THREADS = 8
# Shutdown waits for this long a pause in calls before it stops the server (see `stop`).
DRAIN_QUIET_S = 0.2
# How long in-flight calls may run after shutdown begins before they are cancelled.
DEFAULT_GRACE_S = 10.0


@dataclass(frozen=True)
class TlsConfig:
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None = None  # set: mTLS, a client certificate is required


@dataclass(frozen=True)
class ServerConfig:
    listen: Sequence[str] = ("127.0.0.1:50051",)  # HOST:PORT; port 0 picks a free port
    unix: Sequence[str] = ()  # socket paths
    tls: TlsConfig | None = None
    allow_identities: frozenset[str] = frozenset()  # empty: any authenticated caller
    limits: Limits = DEFAULT_LIMITS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    threads: int = DEFAULT_THREADS
    reuse_port: bool = False  # share the port with sibling worker processes
    decision_cache: int = DEFAULT_CACHE_ENTRIES  # entries; 0 disables the decision cache
    extra_options: Sequence[tuple[str, int | str]] = field(default_factory=tuple)


class PdpServer:
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

    @property
    def port(self) -> int:
        """The first TCP port bound (useful with port 0)."""
        for a in self.addresses:
            if not a.startswith("unix:"):
                return int(a.rsplit(":", 1)[1])
        raise ValueError("no TCP listener")

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def start(self) -> None:
        self.grpc_server.start()

    def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Drain, stop accepting calls, let in-flight ones finish, close the observer.

        grpc's stop() cancels calls the transport has received but the server has not yet
        picked up, and under load (the GIL busy with decisions) there are some. So first
        report NOT_SERVING and wait, within `grace`, until no call has run for `DRAIN_QUIET_S`;
        then stop, with what is left of `grace` for calls still running.
        """
        deadline = time.monotonic() + grace
        self.set_serving(False)
        if self.activity is not None:
            while self.activity.quiet_for() < DRAIN_QUIET_S and time.monotonic() < deadline:
                time.sleep(0.02)
        self.grpc_server.stop(max(deadline - time.monotonic(), 0.0)).wait()
        if self.observer is not None:
            try:
                self.observer.close()
            except Exception:
                log.exception("observer close failed")

    def wait(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)


def build_server(
    holder: EngineHolder,
    config: ServerConfig = ServerConfig(),
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
    interceptors = (
        [AllowListInterceptor(config.allow_identities)] if config.allow_identities else []
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="pdp-rpc"),
        options=options,
        interceptors=interceptors,
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

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
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
        if credentials is not None:
            port = server.add_secure_port(target, credentials)
        else:
            port = server.add_insecure_port(target)
        if target.startswith("unix:"):
            addresses.append(target)
        else:
            addresses.append(f"{target.rsplit(':', 1)[0]}:{port}")

    pdp_server = PdpServer(server, health_servicer, names, addresses, observer)
    pdp_server.activity = decisions.activity
    pdp_server.decision_cache = cache
    pdp_server.set_serving(holder.current is not None)
    holder.on_swap(lambda _engine: pdp_server.set_serving(True))
    return pdp_server

"""What both transports share of a server, without grpcio's: the settings (`ServerConfig`,
`TlsConfig`, the defaults), health's readiness (`Readiness`) and the bind error.

Its own module so the native transport, `pdp serve`'s default, starts without importing
grpcio's server (pdp.server.server: grpc's server, thread pool and servicers), about a tenth
of its start-up (bench/RESULTS.md, session 23).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# The health messages alone (protobuf): the package's servicer module imports grpc.
from grpc_health.v1 import health_pb2

from pdp.model.request import DEFAULT_LIMITS, Limits

from .cache import DEFAULT_CACHE_ENTRIES

if TYPE_CHECKING:
    from pdp.engine.holder import EngineHolder

# Open health Watch streams per server process (pdp.server.streams).
MAX_WATCHERS = 100


def max_reflection_streams(threads: int) -> int:
    """Reflection streams a server with `threads` RPC threads keeps open at once: a quarter of
    the threads (at least one), so most stay free for decisions."""
    return max(1, threads // 4)


# Largest request accepted; grpc refuses bigger ones (RESOURCE_EXHAUSTED) before parsing, which
# bounds the memory and parse time one call can cost. A 1,000-check batch with attributes fits.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Calls run on these threads; the work is CPU-bound under the GIL, so more threads only add
# contention, while too few let one slow client's call hold up others.
DEFAULT_THREADS = 8
# Connections one listening address accepts at once (`--max-connections`; 0: no limit). Each
# holds a file descriptor and HTTP/2 buffers: a caller opening them by the thousand must not
# take every descriptor of the process. Past it, grpc closes a new connection as soon as it
# is accepted (its channel arg `grpc.max_allowed_incoming_connections`).
DEFAULT_MAX_CONNECTIONS = 10_000
# Calls in progress at once, those waiting for an RPC thread included (`--max-concurrent-rpcs`;
# 0: no limit). Past it grpc answers RESOURCE_EXHAUSTED at once rather than queue the call
# behind a backlog that only grows its latency and memory.
DEFAULT_MAX_CONCURRENT_RPCS = 1_000
# A connection that carries no call for this long is closed (GOAWAY; a client reconnects on
# its next call), as is one that never completes its handshake (`--grpc-idle-timeout`; 0: never).
# With the connection cap above, connections nobody uses must not keep their slots for ever:
# a crashed client's, one behind a NAT that forgot it, or one opened only to hold a slot.
DEFAULT_IDLE_TIMEOUT_S = 300.0
# A connection nothing has come from for this long is sent a PING, and closed if its answer has
# not come `DEFAULT_KEEPALIVE_TIMEOUT_S` later (`--grpc-keepalive-time`, `--grpc-keepalive-
# timeout`; grpc's server defaults). The idle timeout spares a connection with a call open: a
# client gone without closing it (its host powered off, a NAT that forgot it) would otherwise
# keep it, and a health Watch that a grpc client holds open for its connection's life, for ever.
DEFAULT_KEEPALIVE_TIME_S = 7200.0
DEFAULT_KEEPALIVE_TIMEOUT_S = 20.0
# Shutdown closes the listeners once no call has been taken or run for this long (see
# `begin_stop`), or at the end of the grace.
DRAIN_QUIET_S = 0.2
# How long in-flight calls may run after shutdown begins; one still deciding then stops and
# answers UNAVAILABLE (see `stop`).
DEFAULT_GRACE_S = 10.0
# After the grace, how long grpc still gives calls (a reply being sent, a call stopping) before
# it cancels them, and how long stop then waits for their handler threads. With the telemetry
# writer's flush (at most `CLOSE_TIMEOUT_S` of pdp.telemetry) this bounds the time from SIGTERM
# to exit: grace + 2 x STOP_MARGIN_S + the flush.
STOP_MARGIN_S = 1.0


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
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # per listening address; 0: no limit
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS  # 0: no limit
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S  # 0: idle connections stay open
    keepalive_time_s: float = DEFAULT_KEEPALIVE_TIME_S  # 0: the server sends no PINGs
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    extra_options: Sequence[tuple[str, int | str]] = field(default_factory=tuple)


class Readiness:
    """What health answers, shared by both transports: SERVING once a bundle is active, unless
    the server is draining or a supervisor holds it (`hold_serving`) until every worker is
    ready. Subclasses write the answer into their health table (`_publish`)."""

    service_names: tuple[str, ...]
    _holder: EngineHolder | None
    _draining: bool
    _held: bool

    def _publish(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        raise NotImplementedError

    def set_serving(self, serving: bool) -> None:
        if serving and (self._draining or self._held):
            # A bundle swapped in during the drain does not make a stopping server ready, nor
            # one worker's bundle the service (pdp.cli.ready).
            return
        self._publish(
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    def hold_serving(self) -> None:
        """Keep health at NOT_SERVING, whatever bundle is active, until `release_serving`."""
        self._held = True
        self.set_serving(False)

    def held_reason(self) -> str:
        """Why health says NOT_SERVING whatever bundle is active ("" when nothing holds it):
        `/readyz` says the same (pdp.http)."""
        if self._draining:
            return "the server is shutting down"
        if self._held:
            return "not every worker serves the same bundle yet"
        return ""

    def release_serving(self) -> None:
        self._held = False
        self.set_serving(self._holder is not None and self._holder.current is not None)


def bind_error(target: str) -> str:
    if target.startswith("unix:"):
        return (
            f"cannot listen on `{target}`: the socket path is in use or its directory is not "
            "writable (choose another with --unix)"
        )
    return (
        f"cannot listen on `{target}`: the address is in use (another process on the port?) "
        "or not on this host; choose another with --listen"
    )

"""Envoy's ext_authz and rate-limit services for `pdp serve`, each servicer made on its first
call.

The gateway's modules (route mapping, JWT verification, request translation, form bodies,
Envoy's protos: ~20 ms of a start for ext_authz, ~14 ms for the rate-limit service) are
imported when the first call arrives, not at start: many servers are never asked for one.
`pdp serve` builds ext_authz eagerly when a flag must be checked at start (`--gateway-mapping`,
`--jwks`: a bad one refuses to start).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pdp.server.hooks import Registrar, Service, Unary, on_bytes

if TYPE_CHECKING:
    from pdp.gateway.ratelimit import RateLimitRegistrar
    from pdp.gateway.servicer import ExtAuthzRegistrar

# The protos' names (pdp.gateway.servicer's and pdp.gateway.ratelimit's SERVICE_NAME; a test
# checks they agree).
SERVICE_NAME = "envoy.service.auth.v3.Authorization"
RATE_LIMIT_SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"

Handler = Callable[[bytes, Any], bytes]


class LazyRegistrar(Registrar):
    """A registrar of service `name` whose unary `methods` `make()` builds on the first call
    (once, whichever thread is first), told of a drain that began before it."""

    def __init__(self, name: str, methods: tuple[str, ...], make: Callable[[], Registrar]) -> None:
        self._name = name
        self._methods = methods
        self._make = make
        self._lock = threading.Lock()
        self._handlers: dict[str, Handler] | None = None
        self._made: Registrar | None = None
        self._drain_at: float | None = None

    def service(self) -> Service:
        return Service(self._name, {m: Unary(self._first(m)) for m in self._methods})

    def _first(self, method: str) -> Handler:
        def call(data: bytes, context: Any) -> bytes:
            handlers = self._handlers or self.load()
            return handlers[method](data, context)

        return call

    def load(self) -> dict[str, Handler]:
        """The servicer's methods (bytes in, bytes out), made now if they were not. Also what
        a server calls before reflection describes the service (its protos imported)."""
        with self._lock:
            if self._handlers is None:
                made = self._make()
                methods = made.service().methods  # the servicer, made
                handlers = {m: on_bytes(methods[m]) for m in self._methods}
                if self._drain_at is not None:
                    self._drain(made, self._drain_at)
                self._made, self._handlers = made, handlers
            return self._handlers

    def begin_drain(self, deadline: float) -> None:
        with self._lock:
            self._drain_at = deadline
            made = self._made
        if made is not None:
            self._drain(made, deadline)

    @staticmethod
    def _drain(made: Registrar, deadline: float) -> None:
        # ext_authz refuses calls taken while draining; the rate-limit service answers on.
        if (begin := getattr(made, "begin_drain", None)) is not None:
            begin(deadline)


def lazy_ext_authz(make: Callable[[], ExtAuthzRegistrar]) -> LazyRegistrar:
    """Envoy's ext_authz (`Check`), made by `make` on its first call."""
    return LazyRegistrar(SERVICE_NAME, ("Check",), make)


def lazy_rate_limit(make: Callable[[], RateLimitRegistrar]) -> LazyRegistrar:
    """Envoy's rate-limit service (`ShouldRateLimit`), made by `make` on its first call."""
    return LazyRegistrar(RATE_LIMIT_SERVICE_NAME, ("ShouldRateLimit",), make)

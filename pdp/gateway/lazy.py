"""Envoy's ext_authz for `pdp serve`, its servicer made on the first call.

The gateway's modules (route mapping, JWT verification, request translation, form bodies,
Envoy's protos: ~20 ms of a start) are imported when the first ext_authz call arrives, not at
start: many servers are never asked for one. `pdp serve` builds it eagerly when a flag must
be checked at start (`--gateway-mapping`, `--jwks`: a bad one refuses to start).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pdp.server.hooks import Registrar, Service, Unary, on_bytes

if TYPE_CHECKING:
    from pdp.gateway.servicer import ExtAuthzRegistrar

# envoy.service.auth.v3's (pdp.gateway.servicer.SERVICE_NAME; a test checks they agree).
SERVICE_NAME = "envoy.service.auth.v3.Authorization"


class LazyExtAuthz(Registrar):
    """A registrar whose servicer `make()` builds on the first call (once, whichever thread
    is first), told of a drain that began before it."""

    def __init__(self, make: Callable[[], ExtAuthzRegistrar]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._check: Callable[[bytes, Any], bytes] | None = None
        self._made: ExtAuthzRegistrar | None = None
        self._drain_at: float | None = None

    def service(self) -> Service:
        return Service(SERVICE_NAME, {"Check": Unary(self._first)})

    def _first(self, data: bytes, context: Any) -> bytes:
        check = self._check or self.load()
        return check(data, context)

    def load(self) -> Callable[[bytes, Any], bytes]:
        """The servicer's Check (bytes in, bytes out), made now if it was not. Also what a
        server calls before reflection describes the service (its protos imported)."""
        with self._lock:
            if self._check is None:
                made = self._make()
                check = on_bytes(made.service().methods["Check"])  # the servicer, made
                if self._drain_at is not None:
                    made.begin_drain(self._drain_at)
                self._made, self._check = made, check
            return self._check

    def begin_drain(self, deadline: float) -> None:
        with self._lock:
            self._drain_at = deadline
            made = self._made
        if made is not None:
            made.begin_drain(deadline)

"""The two streaming services served beside pdp's unary ones, each with a bound on open streams.

Health `Watch` holds no RPC thread (grpc_health answers through a callback), but every open
stream is a call grpc counts against `--max-concurrent-rpcs`: unbounded, one connection
opening a thousand of them would have every later call refused. Reflection's bidirectional
stream holds an RPC thread for as long as its client keeps it open: as many of them as there
are threads would stop every decision. Past its bound, a new stream is RESOURCE_EXHAUSTED;
probes (Kubernetes, Envoy) use the unary `Check`, and grpcurl one reflection stream at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

# The bounds, where the native transport reads them without importing grpc.
from .config import MAX_WATCHERS, max_reflection_streams

__all__ = ["MAX_WATCHERS", "BoundedHealth", "BoundedReflection", "max_reflection_streams"]


class _Slots:
    def __init__(self, limit: int, what: str) -> None:
        self._free = threading.BoundedSemaphore(limit)
        self._refusal = f"{limit} {what} streams are open on this server; close one first"

    def take(self, context: grpc.ServicerContext) -> None:
        """A slot for this call, or the call aborted RESOURCE_EXHAUSTED."""
        if not self._free.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._refusal)

    def give(self) -> None:
        self._free.release()


class BoundedHealth(health.HealthServicer):
    """grpc_health's servicer, non-blocking, with at most `max_watchers` Watch streams."""

    def __init__(self, max_watchers: int = MAX_WATCHERS) -> None:
        super().__init__(experimental_non_blocking=True)
        self._watchers = _Slots(max_watchers, "health Watch")

    def Watch(
        self, request: Any, context: grpc.ServicerContext, send_response_callback: Any = None
    ) -> Any:
        self._watchers.take(context)
        if not context.add_callback(self._watchers.give):  # the call has already ended
            self._watchers.give()
        return super().Watch(request, context, send_response_callback)


class BoundedReflection(reflection.ReflectionServicer):
    """grpc_reflection's servicer with at most `max_streams` streams open at once."""

    def __init__(self, service_names: Sequence[str], max_streams: int) -> None:
        super().__init__(service_names)
        self._streams = _Slots(max_streams, "reflection")

    def ServerReflectionInfo(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        self._streams.take(context)
        try:
            yield from super().ServerReflectionInfo(request_iterator, context)
        finally:
            self._streams.give()

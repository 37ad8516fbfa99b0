"""Caller identities from the mTLS client certificate, and the allow-list interceptor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from .status import permission_denied

# The health service stays open to any caller that completed the TLS handshake, so load
# balancers and kubelets probe without being on the allow-list; it reveals nothing else.
_OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def _decode(values: Iterable[bytes]) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values]


def peer_identities(auth: Mapping[str, Sequence[bytes]]) -> tuple[str, ...]:
    """Every identity the client certificate proves: URI SANs (SPIFFE ids) first, then DNS SANs.

    grpc core exposes URI and DNS SANs as `peer_uri`/`peer_dns`; older releases only as the
    untyped `x509_subject_alternative_name` list, used as a fallback.
    """
    found = _decode(auth.get("peer_uri", ())) + _decode(auth.get("peer_dns", ()))
    if not found:
        found = _decode(auth.get("x509_subject_alternative_name", ()))
    return tuple(dict.fromkeys(found))


def primary_identity(auth: Mapping[str, Sequence[bytes]]) -> str:
    ids = peer_identities(auth)
    if ids:
        return ids[0]
    cn = auth.get("x509_common_name", ())
    return _decode(cn)[0] if cn else ""


class AllowListInterceptor(grpc.ServerInterceptor):
    """Refuses (PERMISSION_DENIED) callers none of whose certificate identities is allowed."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = frozenset(allowed)

    def _guard(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        allowed = self.allowed

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            auth = context.auth_context()
            if allowed.isdisjoint(peer_identities(auth)):
                context.abort_with_status(permission_denied(primary_identity(auth)))
            return behaviour(request, context)

        return guarded

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_SERVICES):
            return handler
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        replace = {k: self._guard(getattr(handler, k)) for k in kinds if getattr(handler, k)}
        return handler._replace(**replace)  # type: ignore[attr-defined]

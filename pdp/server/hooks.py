"""Hooks the server offers to code it must not import: telemetry and extra gRPC services.

The telemetry package implements `Observer` and is injected by the CLI; the server never
imports opentelemetry. The observer is called once after every Check (on success and on
error) and closed once at shutdown, after in-flight calls have finished.

An extra service (Envoy's ext_authz, the rate-limit service) is a `Registrar`: its `service()`
describes its unary methods without grpc objects, which the native transport serves as they
are; called with a grpc server, it registers them there (`pdp.server.grpc_edge`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from google.protobuf.message import DecodeError

from pdp.model.decision import CheckResponse
from pdp.model.request import CheckRequest

from .status import Aborted, status_for

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True, slots=True)
class CheckObservation:
    """One finished Check call."""

    request: CheckRequest | None  # None when the message did not convert
    response: CheckResponse | None  # None when the call failed
    error_code: str  # gRPC status code name (`INVALID_ARGUMENT`), "" on success
    error_message: str
    peer: str  # gRPC peer address, e.g. `ipv4:127.0.0.1:5555`
    peer_identity: str  # mTLS identity (URI SAN such as a SPIFFE id, DNS SAN, or CN); ""
    metadata: tuple[tuple[str, str | bytes], ...]  # incoming metadata (`traceparent`, ...)
    start_time: float  # unix seconds when the call started
    latency_s: float
    rpc: str  # e.g. `/pdp.v1.DecisionService/Check`
    # The bytes the call's request and reply keep alive while queued: telemetry's queue counts
    # (and bounds) them.
    request_size: int = 0


class CallContext(Protocol):
    """What pdp's servicers read of a call's context: grpcio's `ServicerContext`, or the
    native transport's (`pdp.server.native.server._Context`). A servicer fails a call by
    raising `pdp.server.status.Aborted`, which each transport answers."""

    def time_remaining(self) -> float | None: ...

    def is_active(self) -> bool: ...

    def peer(self) -> str: ...

    def auth_context(self) -> Mapping[str, list[bytes]]: ...

    def invocation_metadata(self) -> Any: ...


class Observer(Protocol):
    """An observer may set `wire_only = True` and offer `on_wire(item)`: it is then handed each
    Check as a wire item (`pdp.server.wire.hit_item` or `check_item`: the call's bytes and
    details, read on the serving thread) in place of a `CheckObservation`, so the server keeps
    neither the call's context nor its request and response objects alive in the queue."""

    def on_check(self, record: CheckObservation) -> None:
        """Called on the serving thread after each Check: must not block (queue and return)."""
        ...

    def close(self) -> None:
        """Flush and release; called once at shutdown."""
        ...


# Registers a servicer on a grpc server and returns its full service name (for health and
# reflection). The native transport calls it with a collector of handlers unless it is a
# `Registrar`, whose `service()` it serves without grpc.
ServiceRegistrar = Callable[["grpc.Server"], str]


class Unary(NamedTuple):
    """One unary method as both transports serve it: `behaviour(request, context)` answers the
    reply, or raises `pdp.server.status.Aborted`."""

    behaviour: Callable[[Any, Any], Any]
    parse: Callable[[bytes], Any] | None = None  # None: the behaviour reads the request bytes
    serialize: Callable[[Any], bytes] | None = None  # None: it answers bytes


class Service(NamedTuple):
    """A service's full name (`envoy.service.auth.v3.Authorization`) and its unary methods by
    name (`Check`)."""

    name: str
    methods: Mapping[str, Unary]


def on_bytes(method: Unary) -> Callable[[bytes, Any], Any]:
    """`method` as bytes in, bytes out: decoded as grpcio's transport decodes it (an
    undecodable request is INVALID_ARGUMENT naming `request`), the reply by its serializer."""
    behaviour, parse, serialize = method
    if parse is None and serialize is None:
        return behaviour

    def one(body: bytes, context: Any) -> Any:
        if parse is None:
            reply = behaviour(body, context)
        else:
            try:
                request = parse(body)
            except DecodeError as exc:
                raise Aborted(status_for(exc)) from None
            reply = behaviour(request, context)
        return reply if serialize is None else serialize(reply)

    return one


class Registrar:
    """A `ServiceRegistrar` that both transports serve: subclasses make `service()`."""

    def service(self) -> Service:
        raise NotImplementedError

    def __call__(self, server: grpc.Server) -> str:
        from .grpc_edge import register_service

        return register_service(server, self.service())


# What a decision weighs in a reply besides the texts it carries (effect, policy, rule, reasons),
# and what one explain step, one rate limit and one obligation value (a number, a bool) do.
_DECISION_BYTES = 64
_STEP_BYTES = 48
_SMALL_VALUE_BYTES = 8


def reply_weight(response: CheckResponse | None) -> int:
    """About the bytes `response` keeps alive while its observation is queued, where no reply
    bytes exist to count (the HTTP adapter's, a Plan's, an ext_authz call's): what the request
    makes it carry (error texts, messages, obligations such as the headers an ext_authz answer
    sets, explain traces), and a little per decision. A 15 KB request of 1,000 decisions whose
    rules fail on its values has ~1 MB of reply; counted as its request alone, 10,000 queued
    while the decision log stalled kept 10 GB."""
    if response is None:
        return 0
    n = 0
    for result in response.results:
        for d in result.actions.values():
            n += _DECISION_BYTES + len(d.message) + sum(map(len, d.errors))
            if d.obligations:
                n += _value_weight(d.obligations)
            if d.trace:
                n += sum(_STEP_BYTES + len(step.detail) for step in d.trace)
            if d.limits:
                n += _DECISION_BYTES * len(d.limits)
    return n


def _value_weight(value: object) -> int:
    """About the bytes of a JSON-like value (an obligation a policy computed)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, Mapping):
        return sum(len(str(k)) + _value_weight(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(_value_weight(v) for v in value)
    return _SMALL_VALUE_BYTES

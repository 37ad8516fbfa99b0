"""`envoy.service.auth.v3.Authorization/Check`: a thin servicer over the pure translation.

The route mapping and the verification keys belong to the active bundle, so they are
compiled once per engine (on first use after a swap) and a request uses the mapping of the
same engine that decides it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from pdp.cel import Deadline
from pdp.engine import DeadlineExceeded, new_decision_id
from pdp.errors import NoPoliciesError, PdpError, PolicyError, PolicyErrors
from pdp.gateway._gen.envoy.service.auth.v3 import attribute_context_pb2 as attr_pb2
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway.mapping import RouteMapping, load_route_mapping
from pdp.gateway.request import PARTIAL_BODY_HEADER, HttpAttributes, Verify, translate
from pdp.gateway.response import (
    Outcome,
    deadline_outcome,
    error_outcome,
    outcome_for,
    to_envoy,
)
from pdp.gateway.tokens import KeySetError, TokenVerifier, load_jwks
from pdp.model.decision import CheckResponse
from pdp.model.request import DEFAULT_LIMITS, CheckRequest, Limits
from pdp.ratelog import RateLimitedLog, printable
from pdp.server.hooks import CheckObservation, Observer, Registrar, Service, Unary, reply_weight
from pdp.server.identity import primary_identity
from pdp.server.service import taken_while_draining
from pdp.server.status import StatusCode

if TYPE_CHECKING:
    import grpc

    from pdp.engine import Engine, EngineHolder

SERVICE_NAME = ext.DESCRIPTOR.services_by_name["Authorization"].full_name
log = logging.getLogger("pdp.gateway")


EXT_AUTHZ_RPC = f"/{SERVICE_NAME}/Check"
_CODE_NAMES = {code.value[0]: code.name for code in StatusCode}


class GatewayConfigError(PdpError):
    """The bundle's mapping or keys cannot be used; every request is refused (500)."""


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """Operator settings; each one, when set, overrides the bundle's mapping."""

    mapping: Mapping[str, Any] | None = None  # a RouteMapping document used instead of the bundle's
    mapping_file: str = "mapping.yaml"
    jwks: Any = None  # a JWKS (parsed JSON) used instead of the bundle's data/jwks.json
    issuer: tuple[str, ...] | None = None
    audience: tuple[str, ...] | None = None
    leeway: float | None = None
    trusted_hops: int | None = None
    source: str | None = None  # "jwt" | "envoy_jwt_authn"
    # The mapping's `bodyMethodOverride`: whether the upstream reads `_method` in bodies, which
    # the operator of the upstream may know better than the mapping's authors.
    body_method_override: bool | None = None


@dataclass(frozen=True, slots=True)
class Gateway:
    mapping: RouteMapping
    verify: Verify | None


MappingOf = Callable[["Engine"], tuple[Mapping[str, Any] | None, str]]


def bundle_mapping(engine: Engine) -> tuple[Mapping[str, Any] | None, str]:
    """The RouteMapping document the engine's bundle carries, if its policy set keeps one."""
    ps = engine.policy_set
    return getattr(ps, "route_mapping", None), getattr(
        ps, "route_mapping_file", ""
    ) or "mapping.yaml"


def load_mapping_file(path: str | Path) -> dict[str, Any]:
    """A standalone mapping file (`--gateway-mapping`), read through the policy loader."""
    from pdp.model.loader import load_policy_files

    try:  # loaded under the name the loader knows a mapping by; errors name the file given
        source = load_policy_files({"mapping.yaml": Path(path).read_bytes()})
    except PolicyErrors as exc:
        raise PolicyErrors([_located_in(str(path), err) for err in exc.errors]) from None
    if source.route_mapping is None:
        raise GatewayConfigError(f"`{path}` holds no `kind: RouteMapping` document")
    return source.route_mapping


def _located_in(path: str, err: PolicyError) -> PolicyError:
    if err.location is None or err.location.file != "mapping.yaml":
        return err
    where = dataclasses.replace(err.location, file=path)
    return PolicyError(err.message, where, snippet=err.snippet)


def build_gateway(
    doc: Mapping[str, Any] | None, file: str, data: Mapping[str, Any], options: GatewayOptions
) -> Gateway:
    if options.mapping is not None:
        doc, file = options.mapping, options.mapping_file
    if doc is None:
        raise GatewayConfigError("the active bundle has no route mapping (mapping.yaml)")
    try:
        mapping = load_route_mapping(doc, file)
    except PdpError as e:
        raise GatewayConfigError(f"bad route mapping: {e}") from e
    auth = mapping.auth
    auth = dataclasses.replace(
        auth,
        issuer=auth.issuer if options.issuer is None else options.issuer,
        audience=auth.audience if options.audience is None else options.audience,
        leeway=auth.leeway if options.leeway is None else options.leeway,
        source=auth.source if options.source is None else options.source,
    )
    hops = mapping.trusted_hops if options.trusted_hops is None else options.trusted_hops
    body = options.body_method_override
    mapping = dataclasses.replace(
        mapping,
        auth=auth,
        trusted_hops=hops,
        form_method_override=mapping.form_method_override if body is None else body,
    )
    verify: Verify | None = None
    if auth.source == "jwt":
        jwks = options.jwks if options.jwks is not None else data.get(auth.jwks)
        if jwks is None:
            raise GatewayConfigError(
                f"no verification keys: no `data/{auth.jwks}.json` and none configured"
            )
        try:
            verify = TokenVerifier(load_jwks(jwks, auth.algorithms), auth).verify
        except KeySetError as e:
            raise GatewayConfigError(str(e)) from e
    return Gateway(mapping, verify)


class GatewayResolver:
    """The compiled gateway of an engine, rebuilt when the active engine changes."""

    def __init__(
        self, options: GatewayOptions | None = None, mapping_of: MappingOf = bundle_mapping
    ):
        self.options = options or GatewayOptions()
        self._mapping_of = mapping_of
        self._lock = threading.Lock()
        self._cached: tuple[Engine, Gateway | GatewayConfigError] | None = None

    def resolve(self, engine: Engine) -> Gateway:
        cached = self._cached
        if cached is None or cached[0] is not engine:
            with self._lock:
                cached = self._cached
                if cached is None or cached[0] is not engine:
                    cached = (engine, self._build(engine))
                    self._cached = cached
        result = cached[1]
        if isinstance(result, GatewayConfigError):
            raise result
        return result

    def _build(self, engine: Engine) -> Gateway | GatewayConfigError:
        doc, file = self._mapping_of(engine)
        try:
            return build_gateway(doc, file, engine.policy_set.data, self.options)
        except GatewayConfigError as e:
            log.error("gateway disabled for this bundle: %s", e)
            return e


def attributes_from_proto(
    attributes: attr_pb2.AttributeContext, jwt_namespace: str
) -> HttpAttributes:
    http = attributes.request.http
    headers = dict(http.headers)
    if not headers and http.header_map.headers:
        # `encode_raw_headers: true` sends a list; repeated headers merge as HTTP says. Bytes
        # that are not UTF-8 (obs-text) stay visible as lone surrogates: a route reading such
        # a header is refused naming the field, as no UTF-8 encodes them, where U+FFFD made
        # `d\xff1` and `d\xfe1` one id, neither of them the one the upstream reads.
        for h in http.header_map.headers:
            value = h.raw_value.decode("utf-8", "surrogateescape") if h.raw_value else h.value
            key = h.key.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    jwt_meta = None
    filter_metadata = attributes.metadata_context.filter_metadata
    if jwt_namespace in filter_metadata:
        jwt_meta = json_format.MessageToDict(filter_metadata[jwt_namespace])
    # With `with_request_body`, Envoy marks every call carrying a body (and drops a client's
    # header of that name); `pack_as_bytes` sends the bytes, else a string with `!` for each
    # byte that is not UTF-8. Without the marker, a caller that is not Envoy sent all of it.
    marker = headers.get(PARTIAL_BODY_HEADER)
    data = http.raw_body or http.body.encode("utf-8", "surrogateescape")
    body = data if marker is not None or data else None
    socket = attributes.source.address.socket_address
    return HttpAttributes(
        method=http.method or headers.get(":method", ""),
        path=http.path or headers.get(":path", ""),
        headers=headers,
        source_ip=socket.address,
        request_id=http.id,
        jwt_metadata=jwt_meta,
        body=body,
        body_partial=marker is not None and marker.strip().lower() != "false",
    )


DecisionHook = Callable[[Outcome, CheckRequest | None, CheckResponse | None], None]


class ExtAuthzServicer:
    def __init__(
        self,
        holder: EngineHolder,
        resolver: GatewayResolver | None = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        on_decision: DecisionHook | None = None,
        observer: Observer | None = None,
    ):
        self.holder = holder
        self.resolver = resolver or GatewayResolver()
        self.limits = limits
        self.on_decision = on_decision
        self.observer = observer
        # Any client can trigger these as fast as it can send: one line per cause per minute.
        self.refusal_log = RateLimitedLog(log)
        self.error_log = RateLimitedLog(log)
        # Set by `begin_drain`; the stop times of the calls deciding now, which it brings
        # forward (a plain set under the GIL, as `pdp.server.service.DecisionService` keeps).
        self._drain_at: float | None = None
        self._deciding: set[Deadline] = set()

    def begin_drain(self, deadline: float) -> None:
        """Shutdown: a decision still running at `deadline` (monotonic) stops there, inside
        a resource too, and answers a denial with UNAVAILABLE (503 to Envoy's client), as a
        Check answers UNAVAILABLE: grpc would cancel it past the grace, and its thread would
        decide on with nobody to answer."""
        self._drain_at = deadline
        for stop in list(self._deciding):
            stop.lower(deadline)

    def Check(self, request: ext.CheckRequest, context: Any) -> ext.CheckResponse:
        if self._drain_at is not None and getattr(taken_while_draining, "value", False):
            # Taken by grpc once shutdown began: refused, not decided (nor logged), as a Check
            # is refused UNAVAILABLE, and closed: a denial, 503 to Envoy's client, which its
            # retry policy may send to another replica.
            return self._answer(error_outcome("shutting_down", new_decision_id(), unavailable=True))
        # Envoy sends its `timeout` as the call's deadline: a decision still running past it
        # stops (`Engine.check`'s `stop_at`) rather than hold a thread for an answer nobody
        # waits for. The drain brings it forward to the end of its grace.
        remaining = context.time_remaining() if context is not None else None
        stop = Deadline(math.inf if remaining is None else time.monotonic() + remaining)
        deciding = self._deciding
        deciding.add(stop)
        try:
            drain_at = self._drain_at
            if drain_at is not None:
                stop.lower(drain_at)
            if self.observer is None:
                return self._answer(self.check(request, stop_at=stop))
            start, t0 = time.time(), time.perf_counter()
            seen: list[tuple[CheckRequest | None, CheckResponse | None]] = []
            outcome = self.check(request, seen.append, stop_at=stop)
        finally:
            deciding.discard(stop)
        self._observe(context, outcome, seen, start, t0, request.ByteSize())
        return self._answer(outcome)

    def _answer(self, outcome: Outcome) -> ext.CheckResponse:
        """`outcome` for Envoy. Building it can fail on what the decision carried (headers and
        metadata from obligations and claims); that is a denial with a reason, not grpc's
        UNKNOWN and a traceback."""
        try:
            return to_envoy(outcome)
        except Exception as e:
            self.error_log.log(
                logging.ERROR,
                type(e).__name__,
                f"ext_authz answer for decision {outcome.decision_id} could not be built: "
                f"{type(e).__name__}",
                exc_info=True,
            )
            return to_envoy(error_outcome("internal_error", outcome.decision_id))

    def _observe(
        self,
        context: Any,
        outcome: Outcome,
        seen: list[tuple[CheckRequest | None, CheckResponse | None]],
        start: float,
        t0: float,
        size: int,
    ) -> None:
        """One decision-log record per ext_authz call, like the decision API's. `size`, the
        call's bytes, counts against the telemetry queue's byte budget as a Check's do: a
        caller sending huge requests (headers, a path) while the sink stalls is bounded."""
        check_request, decision = seen[0] if seen else (None, None)
        # A policy allow or deny is a decision; 401/400/5xx outcomes are errors of the call.
        decided = decision is not None and outcome.grpc_code in (0, 7)
        record_error = "" if decided else outcome.reason
        record = CheckObservation(
            request=check_request,
            response=decision,
            error_code="" if decided else _CODE_NAMES.get(outcome.grpc_code, "UNKNOWN"),
            error_message=record_error,
            peer=context.peer(),
            peer_identity=primary_identity(context.auth_context()),
            metadata=tuple((m.key, m.value) for m in context.invocation_metadata()),
            start_time=start,
            latency_s=time.perf_counter() - t0,
            rpc=EXT_AUTHZ_RPC,
            # The decision the record keeps: its obligations (the headers the answer sets, of
            # any number and size a policy computes) and texts, as the HTTP adapter counts.
            request_size=size + reply_weight(decision) + len(record_error),
        )
        try:
            self.observer.on_check(record)  # type: ignore[union-attr]
        except Exception:
            log.exception("decision observer failed")

    def check(
        self,
        request: ext.CheckRequest,
        report: Callable[[tuple[CheckRequest | None, CheckResponse | None]], None] | None = None,
        *,
        stop_at: float | Deadline = math.inf,
    ) -> Outcome:
        check_request: CheckRequest | None = None
        # The call's own deadline, before the drain lowers it: which of the two stopped it.
        own = stop_at.at if isinstance(stop_at, Deadline) else stop_at
        decision: CheckResponse | None = None
        try:
            engine = self.holder.require()
            gateway = self.resolver.resolve(engine)
            attrs = attributes_from_proto(
                request.attributes, gateway.mapping.auth.metadata_namespace
            )
            translation = translate(attrs, gateway.mapping, gateway.verify, self.limits)
            check_request = translation.request
            if check_request is not None:
                decision = engine.check(check_request, stop_at=stop_at)
            outcome = outcome_for(translation, decision, gateway.mapping, new_decision_id())
        except DeadlineExceeded:
            drain_at = self._drain_at
            if drain_at is not None and drain_at < own:
                outcome = error_outcome("shutting_down", new_decision_id(), unavailable=True)
            else:
                outcome = deadline_outcome(new_decision_id())
        except NoPoliciesError:
            outcome = error_outcome("no_policies", new_decision_id(), unavailable=True)
        except GatewayConfigError:
            outcome = error_outcome("gateway_misconfigured", new_decision_id())
        except Exception as e:
            decision_id = new_decision_id()
            self.error_log.log(
                logging.ERROR,
                type(e).__name__,
                f"ext_authz check failed (decision {decision_id}): {type(e).__name__}",
                exc_info=True,
            )
            outcome = error_outcome("internal_error", decision_id)
        if outcome.http_status in (400, 401):
            self.refusal_log.log(
                logging.WARNING,
                outcome.reason,
                f"ext_authz refused a request ({outcome.http_status} {outcome.reason}): "
                + printable(outcome.message),
            )
        if report is not None:
            report((check_request, decision))
        if self.on_decision is not None:
            try:
                self.on_decision(outcome, check_request, decision)
            except Exception:
                log.exception("decision hook failed")
        return outcome


def add_ext_authz(
    server: grpc.Server,
    holder: EngineHolder,
    options: GatewayOptions | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    on_decision: DecisionHook | None = None,
    observer: Observer | None = None,
) -> str:
    """Register the servicer on `server`; returns the full service name (for health/reflection)."""
    return ext_authz_registrar(
        holder, options, limits=limits, on_decision=on_decision, observer=observer
    )(server)


class ExtAuthzRegistrar(Registrar):
    """The servicer for a server (`build_server`'s or `NativeServer`'s `extra_services`; called
    with a grpc server, it registers there), and the server's drain passed on to it
    (`begin_drain`, which the server's `begin_stop` calls)."""

    def __init__(self, holder: EngineHolder, options: GatewayOptions | None, **kwargs: Any):
        self._args = (holder, options)
        self._kwargs = kwargs
        self.servicers: list[ExtAuthzServicer] = []

    def service(self) -> Service:
        holder, options = self._args
        servicer = ExtAuthzServicer(holder, GatewayResolver(options), **self._kwargs)
        self.servicers.append(servicer)
        check = Unary(
            servicer.Check, ext.CheckRequest.FromString, ext.CheckResponse.SerializeToString
        )
        return Service(SERVICE_NAME, {"Check": check})

    def begin_drain(self, deadline: float) -> None:
        for servicer in self.servicers:
            servicer.begin_drain(deadline)


def ext_authz_registrar(
    holder: EngineHolder,
    options: GatewayOptions | None = None,
    **kwargs: Any,
) -> ExtAuthzRegistrar:
    """For `pdp.server.build_server(..., extra_services=[ext_authz_registrar(holder)])`."""
    return ExtAuthzRegistrar(holder, options, **kwargs)

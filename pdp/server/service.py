"""The pdp.v1.DecisionService servicer: convert, decide, convert back.

Check takes the raw request bytes (no deserializer registered) so an undecodable message is an
INVALID_ARGUMENT from `status_for`, not the generic INTERNAL grpc would answer.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pdp import __version__
from pdp.cel import Deadline
from pdp.engine.engine import DeadlineExceeded, new_decision_id
from pdp.model.decision import CheckResponse
from pdp.model.request import CheckRequest, Limits, check_request_id

from ._gen.pdp.v1 import decision_pb2 as _pb
from .cache import CachedDecision, DecisionCache, cacheable, holds_request_id, split_request_id
from .convert import request_from_proto, response_to_proto, server_info_to_proto
from .hooks import CallContext, CheckObservation, Observer, Service, Unary, reply_weight
from .identity import primary_identity
from .status import Aborted, Status, StatusCode, code_name, rich, status_for
from .wire import check_item, decoded_hit, hit_item, propagation

if TYPE_CHECKING:
    import grpc

    from pdp.engine import Engine
    from pdp.engine.holder import EngineHolder
    from pdp.plan import PlanRefused

SERVICE_NAME: str = _pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
CHECK_RPC = f"/{SERVICE_NAME}/Check"
PLAN_RPC = f"/{SERVICE_NAME}/Plan"

log = logging.getLogger("pdp.server")

_parse = _pb.CheckRequest.FromString
_perf_counter = time.perf_counter


class Activity:
    """Calls in flight and when the last one began or ended: shutdown waits for them."""

    __slots__ = ("_lock", "in_flight", "last_change")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_flight = 0
        self.last_change = time.monotonic()

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.last_change = time.monotonic()

    def exit(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last_change = time.monotonic()

    def quiet_for(self) -> float:
        """Seconds since the last call ended, 0 while any call runs."""
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last_change

    def wait_idle(self, timeout: float) -> bool:
        """Wait (polling: shutdown only) until no call runs; False if some still did at
        `timeout`. grpc's stop returns when every call has ended for the transport, but the
        handler of a call it cancelled may still be running on its thread."""
        end = time.monotonic() + timeout
        while self.in_flight:
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True


class CallStopped(Exception):
    """A call given up before its decision was complete: its deadline passed, or the server is
    shutting down. Carries the status the caller gets; no decision is returned. Shutdown's
    refusals are not observed (no decision-log record: the caller retries elsewhere)."""

    def __init__(self, status: Status, *, observed: bool) -> None:
        super().__init__(status.details)
        self.status = status
        self.observed = observed


def _stopped(code: StatusCode, message: str) -> CallStopped:
    return CallStopped(rich(code, message), observed=code != StatusCode.UNAVAILABLE)


# Set on a serving thread while it runs a call grpc took from the transport after shutdown
# began (pdp.server.server's executor): such a call is refused, not decided.
taken_while_draining = threading.local()
SHUTTING_DOWN = "server is shutting down"
_NO_DEADLINE = float("inf")


def _expired(draining: bool, done: int, total: int) -> CallStopped:
    """`done` of `total` resources were decided when the call stopped (0 of 0: before any)."""
    progress = f" (decided {done} of {total} resources)" if total else ""
    if draining:
        return _stopped(
            StatusCode.UNAVAILABLE,
            f"{SHUTTING_DOWN}: the call did not finish within the drain grace{progress}",
        )
    return _stopped(
        StatusCode.DEADLINE_EXCEEDED,
        f"deadline exceeded before the decision was complete{progress}",
    )


def _ids(decision_id: str, request_id: str, evaluated_at: str) -> bytes:
    """A call's own ids, appended to a cached body (a parser keeps the last value of a field)."""
    return _pb.CheckResponse(
        decision_id=decision_id, request_id=request_id, evaluated_at=evaluated_at
    ).SerializeToString()


def _refused(exc: PlanRefused) -> Status:
    """A plan the policies cannot make exactly: FAILED_PRECONDITION, naming the rule."""
    return rich(StatusCode.FAILED_PRECONDITION, exc.message)


def _status(exc: BaseException) -> Status:
    return exc.status if isinstance(exc, CallStopped) else status_for(exc, CHECK_RPC)


def _status_fields(status: Status | None) -> tuple[str, str]:
    """(gRPC code name, details) of a failed call for its observation; ("", "") on success."""
    return (code_name(status), status.details) if status else ("", "")


@dataclasses.dataclass(slots=True)
class _CacheHit:
    """A cache hit's ids, from which its request and response are made when first read."""

    entry: CachedDecision
    decision_id: str
    request_id: str
    evaluated_at: str


class _ObservedCheck:
    """A `CheckObservation` whose costly parts are computed when telemetry first reads them.

    The observer reads an observation on its writer thread, after the reply is sent. Under
    load `context.peer()` and `auth_context()` on the serving thread were the largest part of
    the decision log's cost there (they contend with gRPC's own threads for the call), and a
    cache hit's request and response copies cost more than the hit itself; here they are
    made off the request path. The context stays readable after the call ends (the gRPC call
    object lives as long as it is referenced), so holding it until the writer drains is safe;
    the queue bounds how many are held.
    """

    __slots__ = (
        "_context",
        "_hit",
        "_identities",
        "_identity",
        "_peer",
        "_request",
        "_response",
        "error_code",
        "error_message",
        "latency_s",
        "metadata",
        "request_size",
        "start_time",
    )

    rpc = CHECK_RPC

    def __init__(
        self,
        request: CheckRequest | _CacheHit | None,
        response: CheckResponse | None,
        error_code: str,
        error_message: str,
        context: CallContext,
        metadata: tuple[tuple[str, str | bytes], ...],
        start_time: float,
        latency_s: float,
        identities: bool = True,
        request_size: int = 0,
    ) -> None:
        """`request_size`: the request's (and reply's) bytes, which telemetry's queue counts
        (and bounds)."""
        self._hit = request if isinstance(request, _CacheHit) else None
        self._request = None if self._hit is not None else request
        self._response = response
        self.error_code = error_code
        self.error_message = error_message
        self._context: CallContext | None = context
        self._peer: str | None = None
        self._identity = ""
        self._identities = identities
        self.metadata = metadata
        self.start_time = start_time
        self.latency_s = latency_s
        self.request_size = request_size

    @property
    def cache_hit(self) -> _CacheHit | None:
        """The hit this call was answered from, None otherwise. Telemetry keys per-decision
        fragments of its record on `cache_hit.entry`, which every hit on one cached decision
        shares, and then never needs `request`/`response`."""
        return self._hit

    def _expand_hit(self) -> None:
        hit = self._hit
        if hit is not None and self._request is None:
            # Decoded from the entry's bytes, as the writer process decodes a hit.
            entry = hit.entry
            self._request, self._response = decoded_hit(
                entry.key, entry.body, hit.decision_id, hit.request_id, hit.evaluated_at
            )

    @property
    def request(self) -> CheckRequest | None:
        if self._hit is not None:
            self._expand_hit()
        return self._request  # type: ignore[return-value]

    @property
    def response(self) -> CheckResponse | None:
        if self._hit is not None:
            self._expand_hit()
        return self._response

    def _read_context(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            self._peer = context.peer()
            if self._identities:
                self._identity = primary_identity(context.auth_context())

    @property
    def peer(self) -> str:
        if self._peer is None:
            self._read_context()
        return self._peer or ""

    @property
    def peer_identity(self) -> str:
        if self._peer is None:
            self._read_context()
        return self._identity


class DecisionService:
    def __init__(
        self,
        holder: EngineHolder,
        limits: Limits,
        max_message_bytes: int,
        observer: Observer | None = None,
        *,
        cache: DecisionCache | None = None,
        client_identities: bool = True,
    ) -> None:
        """`client_identities=False`: clients present no certificates (no mTLS), so the
        observer is told an empty identity without reading each call's auth context, which
        was a third of what observing a call cost the server."""
        self.holder = holder
        self.limits = limits
        self.max_message_bytes = max_message_bytes
        self.observer = observer
        self._wire_only = bool(getattr(observer, "wire_only", False))
        self.cache = cache
        self._identities = client_identities
        self.activity = Activity()
        # Set by `begin_drain`: calls still deciding at this monotonic time give up.
        self._drain_at: float | None = None
        # The stop times of the calls deciding now, which `begin_drain` brings forward to the
        # end of the grace. A plain set, no lock: under the GIL `add`, `discard` and the
        # drain's copy are atomic, and a call reads `_drain_at` after adding its own (so
        # either the drain's copy holds it, or the call sees the drain).
        self._deciding: set[Deadline] = set()
        # Chosen once, like `check`: a wire-only observer's calls skip the dispatch.
        self._observe: Callable[..., None] = (
            self._observe_wire if self._wire_only else self._observe_object
        )
        self._on_wire: Callable[[tuple[Any, ...]], None] | None = getattr(observer, "on_wire", None)
        # Chosen once: without an observer the per-call path stays bare.
        self.check: Callable[[bytes, CallContext], bytes] = (
            self._check_observed if observer is not None else self._check
        )

    def begin_drain(self, deadline: float) -> None:
        """Shutdown: a call still deciding at `deadline` (monotonic) stops and answers
        UNAVAILABLE, before grpc would cancel it, so no decision is made that is not sent:
        between resources (`_clock_watch`) and inside one (each call's `Deadline`, which the
        engine reads at its checks, is brought forward to `deadline`)."""
        self._drain_at = deadline
        for stop in list(self._deciding):
            stop.lower(deadline)

    def _draining_check(self, drain_at: float) -> None:
        """While shutting down: refuse a call taken since, or one past the drain deadline."""
        if getattr(taken_while_draining, "value", False):
            raise _stopped(StatusCode.UNAVAILABLE, f"{SHUTTING_DOWN}: not taking new calls")
        if time.monotonic() >= drain_at:
            raise _expired(True, 0, 0)

    def _check(self, data: bytes, context: CallContext) -> bytes:
        self.activity.enter()
        try:
            out, _, response = self._decide(data, False, context)
            if self._drain_at is not None and response is not None and not context.is_active():
                # Cancelled by grpc past the drain's grace: never answered, so its rate
                # limits get back the quota it took (as `_check_observed`).
                self.holder.require().give_back(response)
            return out
        except Exception as exc:
            raise Aborted(_status(exc)) from exc
        finally:
            self.activity.exit()

    def _decide(
        self, data: bytes, observed: bool, context: CallContext
    ) -> tuple[bytes, CheckRequest | _CacheHit | None, CheckResponse | None]:
        """The reply bytes, and (when observed, for the decision log) the request and response.

        A cache hit observed returns a `_CacheHit` in place of the request: the observation
        builds the hit's own request and response from it later, on the telemetry writer.
        Raises `CallStopped` when the call's deadline (or the drain deadline) passes first.
        """
        # The per-call cost of deadlines: one read of the call's time left and a comparison
        # (a call that waited in the queue past its deadline is not decided); batches also
        # look at the clock between resources (`_clock_watch`), and a resource between its
        # actions and in CEL comprehensions (`Engine.check`'s `stop_at`).
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _expired(False, 0, 0)
        if self._drain_at is not None:
            self._draining_check(self._drain_at)
        engine = self.holder.require()
        cache = self.cache
        split = split_request_id(data) if cache is not None else None
        if split is not None:
            entry = cache.get(engine, split[0])  # type: ignore[union-attr]
            if entry is not None:
                if split[1]:  # a hit skips the conversion, which checks the id otherwise
                    check_request_id(split[1], self.limits)
                return self._from_cache(entry, split[1], observed)
        # Before the parse: a large request's parsing spends the caller's time too.
        stop_at = _NO_DEADLINE if remaining is None else time.monotonic() + remaining
        request = request_from_proto(_parse(data), self.limits)
        # The engine's stop time: the call's deadline, or the end of the drain's grace if
        # shutdown begins first (`begin_drain` lowers it while the call runs).
        stop = Deadline(stop_at)
        deciding = self._deciding
        deciding.add(stop)
        try:
            drain_at = self._drain_at
            if drain_at is not None:
                stop.lower(drain_at)
            if len(request.resources) > 1:
                response = engine.check(
                    request, before_next=self._clock_watch(stop_at), stop_at=stop
                )
            else:
                response = engine.check(request, stop_at=stop)
        except DeadlineExceeded as exc:  # inside a resource (between two: `_clock_watch`)
            drain_at = self._drain_at
            draining = drain_at is not None and drain_at < stop_at
            raise _expired(draining, exc.done, exc.total) from None
        finally:
            deciding.discard(stop)
        # A request id that was not encoded first stays inside the key: not worth caching, and
        # a key holding one would answer a hit with the wrong id (`holds_request_id`).
        if (
            split is not None
            and split[1] == request.request_id
            and cacheable(request, response)
            and not holds_request_id(split[0])
        ):
            return self._store(engine, split[0], request, response), request, response
        return response_to_proto(response).SerializeToString(), request, response

    def _clock_watch(self, stop_at: float) -> Callable[[int, int], None]:
        """For a batch: between one resource and the next, stop once the call's deadline
        (`stop_at`, monotonic) or the drain deadline (which may be set while it runs) passed."""

        def before_next(done: int, total: int) -> None:
            now = time.monotonic()
            if now >= stop_at:
                raise _expired(False, done, total)
            drain_at = self._drain_at
            if drain_at is not None and now >= drain_at:
                raise _expired(True, done, total)

        return before_next

    def _from_cache(
        self, entry: CachedDecision, request_id: str, observed: bool
    ) -> tuple[bytes, _CacheHit | None, None]:
        decision_id = new_decision_id()
        # The engine's clock writes milliseconds (`pdp.engine.engine._MillisecondClock`): a hit
        # writes its time as a miss does.
        evaluated_at = entry.evaluated_at or datetime.now(UTC).isoformat(timespec="milliseconds")
        out = entry.body + _ids(decision_id, request_id, evaluated_at)
        if not observed:
            return out, None, None
        # Two `dataclasses.replace` calls cost more than the rest of a hit: deferred to the
        # telemetry writer, which only needs them for the record.
        return out, _CacheHit(entry, decision_id, request_id, evaluated_at), None

    def _store(
        self, engine: Engine, key: bytes, request: CheckRequest, response: CheckResponse
    ) -> bytes:
        msg = response_to_proto(response)
        for name in ("decision_id", "request_id", "evaluated_at"):
            msg.ClearField(name)
        body = msg.SerializeToString()
        evaluated_at = response.evaluated_at if request.time is not None else ""
        self.cache.put(engine, key, CachedDecision(body, evaluated_at, key))  # type: ignore[union-attr]
        return body + _ids(response.decision_id, response.request_id, response.evaluated_at)

    def _check_observed(self, data: bytes, context: CallContext) -> bytes:
        self.activity.enter()
        try:
            start = time.time()
            t0 = _perf_counter()
            try:
                out, request, response = self._decide(data, True, context)
            except Exception as exc:
                status = _status(exc)
                if not isinstance(exc, CallStopped) or exc.observed:
                    self._observe(context, None, None, status, start, t0, data, None)
                raise Aborted(status) from exc
            if self._drain_at is None or context.is_active():
                # (While draining, grpc may have cancelled the call past the grace: then the
                # caller never gets this decision, and the log must not hold it, nor its
                # rate limits the quota it took.)
                self._observe(context, request, response, None, start, t0, data, out)
            elif response is not None:
                self.holder.require().give_back(response)
            return out
        finally:
            self.activity.exit()

    def _observe_object(
        self,
        context: CallContext,
        request: CheckRequest | _CacheHit | None,
        response: Any,
        status: Status | None,
        start: float,
        t0: float,
        data: bytes,
        out: bytes | None,
    ) -> None:
        record = _ObservedCheck(
            request,
            response,
            *_status_fields(status),
            context,
            # Already a tuple of (key, value) namedtuples: no copy.
            context.invocation_metadata(),  # type: ignore[arg-type]
            start,
            time.perf_counter() - t0,
            self._identities,
            # The reply too (its response object, here): a batch with `explain` answers many
            # times its request. Not a hit's: the cache holds that, shared by every hit.
            len(data) + (len(out) if out is not None and type(request) is not _CacheHit else 0),
        )
        try:
            # Structurally a CheckObservation (same attributes), read lazily by the observer.
            self.observer.on_check(record)  # type: ignore[union-attr,arg-type]
        except Exception:
            # Telemetry must never fail a decision.
            log.exception("observer failed")

    def _observe_wire(
        self,
        context: CallContext,
        request: CheckRequest | _CacheHit | None,
        _response: Any,
        status: Status | None,
        start: float,
        t0: float,
        data: bytes,
        out: bytes | None,
    ) -> None:
        latency = _perf_counter() - t0
        # Read now, while the call is hot: an observation that keeps the context for a feeder
        # thread to read keeps the whole gRPC call alive until then, and that thread, freeing
        # hundreds of calls at once (grpcio's call destructor releases the GIL: a thread
        # hand-off each under load), spent more CPU than the reads cost here.
        peer = context.peer()
        identity = primary_identity(context.auth_context()) if self._identities else ""
        propagated = propagation(context.invocation_metadata())
        if isinstance(request, _CacheHit):
            entry = request.entry
            item = hit_item(
                CHECK_RPC, entry.key, entry.body, request.decision_id, request.request_id,
                request.evaluated_at, peer, identity, propagated, start, latency,
            )  # fmt: skip
        else:
            item = check_item(
                CHECK_RPC, data, out, *_status_fields(status),
                peer, identity, propagated, start, latency,
            )  # fmt: skip
        try:
            self._on_wire(item)  # type: ignore[misc]
        except Exception:
            log.exception("observer failed")

    def server_info(
        self, _request: _pb.ServerInfoRequest, context: CallContext
    ) -> _pb.ServerInfoResponse:
        try:
            engine = self.holder.current
            return server_info_to_proto(
                __version__,
                engine.bundle if engine is not None else None,
                self.holder.status,
                self.limits,
                self.max_message_bytes,
            )
        except Exception as exc:
            raise Aborted(status_for(exc, f"/{SERVICE_NAME}/ServerInfo")) from exc

    def plan(self, request: _pb.PlanRequest, context: CallContext) -> _pb.PlanResponse:
        """Plan RPC: convert, plan (pdp.plan), convert back; observed like a Check."""
        # Imported on the first plan, not at start-up: most deployments never ask for one.
        from pdp.plan import PlanRefused
        from pdp.plan import plan as plan_resources

        from .plan_convert import plan_request_from_proto, plan_to_proto

        self.activity.enter()
        start, t0 = time.time(), _perf_counter()
        req = result = status = None
        observed = True
        try:
            try:
                # The call's deadline and the drain bound a plan as they bound a Check: its
                # conditions' known parts run the same CEL (`_decide`).
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    raise _expired(False, 0, 0)
                if self._drain_at is not None:
                    self._draining_check(self._drain_at)
                stop_at = _NO_DEADLINE if remaining is None else time.monotonic() + remaining
                req = plan_request_from_proto(request, self.limits)
                result = self._plan(plan_resources, req, stop_at)
                return plan_to_proto(result)
            except PlanRefused as exc:
                status = _refused(exc)
            except CallStopped as exc:
                status, observed = exc.status, exc.observed
            except Exception as exc:
                status = status_for(exc, PLAN_RPC)
            raise Aborted(status)
        finally:
            if self.observer is not None and observed:
                size = request.ByteSize()
                self._observe_plan(context, req, result, status, start, t0, size)
            self.activity.exit()

    def _plan(self, plan_resources: Callable[..., Any], req: Any, stop_at: float) -> Any:
        """`plan_resources(engine, req, stop)` under the call's stop time, which `begin_drain`
        brings forward; raises `CallStopped` once it passed."""
        engine = self.holder.require()
        stop = Deadline(stop_at)
        deciding = self._deciding
        deciding.add(stop)
        try:
            drain_at = self._drain_at
            if drain_at is not None:
                stop.lower(drain_at)
            return plan_resources(engine, req, stop)
        except DeadlineExceeded:
            drain_at = self._drain_at
            raise _expired(drain_at is not None and drain_at < stop_at, 0, 0) from None
        finally:
            deciding.discard(stop)

    def _observe_plan(self, context: Any, req: Any, result: Any, status: Any, start: float,
                      t0: float, size: int) -> None:  # fmt: skip
        response = result.as_response() if result is not None else None
        record = CheckObservation(
            request=req.check if req is not None else None,
            response=response,
            error_code=code_name(status) if status else "",
            error_message=status.details if status else "",
            peer=context.peer(),
            peer_identity=primary_identity(context.auth_context()) if self._identities else "",
            metadata=tuple(context.invocation_metadata()),  # type: ignore[arg-type]
            start_time=start,
            latency_s=_perf_counter() - t0,
            rpc=PLAN_RPC,
            # The plan as the record keeps it (a decision: its message, reasons) counts as the
            # HTTP adapter's replies do; the filter and SQL are the caller's, not the record's.
            request_size=size + reply_weight(response) + len(status.details if status else ""),
        )
        try:
            self.observer.on_check(record)  # type: ignore[union-attr]
        except Exception:
            log.exception("observer failed")

    def service(self) -> Service:
        """Its methods for either transport (`pdp.server.hooks.Service`): Check reads its request
        bytes and answers bytes; Plan and ServerInfo decode their own (an undecodable request
        is INVALID_ARGUMENT naming `request`)."""
        return Service(
            SERVICE_NAME,
            {
                "Check": Unary(self.check),
                "Plan": Unary(
                    self.plan, _pb.PlanRequest.FromString, _pb.PlanResponse.SerializeToString
                ),
                "ServerInfo": Unary(
                    self.server_info,
                    _pb.ServerInfoRequest.FromString,
                    _pb.ServerInfoResponse.SerializeToString,
                ),
            },
        )

    def register(self, server: grpc.Server) -> str:
        """Register on grpcio's server (`pdp.server.server`)."""
        from .grpc_edge import register_service

        return register_service(server, self.service())

"""The HTTP API: AuthZEN 1.0, the JSON mirror of pdp.v1, health. Thin over the same engine
call, limits and observer as gRPC.

Handlers are plain functions of a `Call` (method, path, headers, peer, parsed body) that
return `(status, json_value)`; the router owns reading and parsing bodies, errors, the
allow-list and `X-Request-ID`. Adding an endpoint is one `api.add(...)` call; endpoints that
AuthZEN's metadata lists name their metadata key and appear in
`/.well-known/authzen-configuration` only when registered.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from pdp import __version__
from pdp.cel import Deadline
from pdp.engine.engine import DeadlineExceeded
from pdp.errors import LimitExceeded, NoPoliciesError, RequestError
from pdp.model.decision import ALLOW, CheckResponse
from pdp.model.request import CheckRequest, Limits, check_request_id
from pdp.plan import PlanRefused
from pdp.plan.api import Candidates, Trace, plan_json, search_resource
from pdp.server.convert import request_from_proto, response_to_proto, server_info_to_proto
from pdp.server.hooks import CheckObservation, Observer, reply_weight
from pdp.server.identity import parse_allow_list

from . import authzen
from .body import BodyError, parse_json_object

if TYPE_CHECKING:
    from pdp.engine import Engine
    from pdp.engine.holder import EngineHolder

from pdp.server._gen.pdp.v1 import decision_pb2 as _pb

log = logging.getLogger("pdp.http")

# Trace propagation headers: the only request headers the decision log and spans get.
PROPAGATION_HEADERS = ("traceparent", "tracestate", "baggage")
# Health and readiness probes answer on their own merits: open to any client identity, and a
# load balancer that sends a junk or over-long `X-Request-ID` must not take the instance out
# with a 400 (there the header is ignored, neither echoed nor logged, instead of refused).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class HttpError(Exception):
    """An error answered with `status` and a JSON body naming `field`."""

    def __init__(self, status: int, message: str, field: str = "", code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code  # gRPC-style code name for the decision log
        self.recorded = False  # the handler wrote the call's decision-log record already


def shutting_down(done: int, total: int) -> HttpError:
    """The answer to a call still deciding when the server's drain grace ended (as gRPC's
    UNAVAILABLE: retryable, nothing decided is answered)."""
    progress = f" (decided {done} of {total} resources)" if total else ""
    return HttpError(
        503,
        f"server is shutting down: the call did not finish within the drain grace{progress}",
        "",
        "UNAVAILABLE",
    )


def expired(call: Call, done: int, total: int) -> HttpError:
    """504 when the call's own deadline passed, 503 when the drain brought it forward."""
    stop = call.stop
    if stop is not None and stop.at < call.stop_at:
        return shutting_down(done, total)
    return deadline_exceeded(done, total)


def deadline_exceeded(done: int, total: int) -> HttpError:
    """The answer to a call whose decision deadline passed, as gRPC's DEADLINE_EXCEEDED:
    `done` of `total` resources were decided (0 of 0: none, the call waited its turn too long).
    No decision is returned, none partial: the caller denies, as on any error."""
    progress = f" (decided {done} of {total} resources)" if total else ""
    return HttpError(
        504,
        f"deadline exceeded before the decision was complete{progress}",
        "",
        "DEADLINE_EXCEEDED",
    )


@dataclass(slots=True)
class Call:
    """One HTTP request as handlers see it."""

    method: str
    path: str
    headers: Mapping[str, str]
    peer: str  # `ipv4:127.0.0.1:5555`, as gRPC names peers
    identity: str  # mTLS identity (URI SAN, DNS SAN, or CN), "" without client certificates
    request_id: str  # X-Request-ID, "" when absent
    base_url: str  # scheme://host of this request, or the configured public URL
    body: dict[str, Any] = field(default_factory=dict)
    start: float = 0.0
    t0: float = 0.0
    size: int = 0  # bytes of the request body
    # Monotonic time by which the decision must be made (`--http-timeout` after the body
    # arrived): a call still deciding then stops (between two resources, or inside one) and
    # answers 504.
    stop_at: float = math.inf
    # The engine's stop time: `stop_at`, which the server's drain brings forward to the end of
    # its grace (`HttpServer.stop`); None outside a server.
    stop: Deadline | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, self.headers[k]) for k in PROPAGATION_HEADERS if k in self.headers)


Handler = Callable[[Call], tuple[int, Any]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    body: bool  # parse a JSON object body
    metadata_key: str = ""  # AuthZEN metadata parameter that advertises this route


# A `Host` header as RFC 3986 allows it in a URL: a name or IPv4 address, or an IPv6 one in
# brackets, and an optional port (`_` too, which container host names use).
_HOST = re.compile(r"^(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_NO_FIELD = re.compile(r'no field named "([^"]+)" at "([^"]+)"')
# protobuf's other parse errors name the field only in their text: "Failed to parse principal
# field: Failed to parse roles field: ... at CheckRequest.principal.." (the `at` path, with
# list indexes, is there for some errors only, and stops at the message for others).
_PARSE_STEP = re.compile(r"Failed to parse (\w+) field")
_AT_PATH = re.compile(r" at CheckRequest\.([\w.\[\]]+?)\.*$")
_INDEX = re.compile(r"\[\d+\]")


def _parse_error_field(text: str) -> str:
    """The field a protobuf JSON parse error is about, as the caller wrote its path."""
    chain = ".".join(_PARSE_STEP.findall(text))
    m = _AT_PATH.search(text)
    if m and _INDEX.sub("", m.group(1)) == chain:
        return m.group(1)
    return chain or "body"


class HttpApi:
    def __init__(
        self,
        holder: EngineHolder,
        limits: Limits,
        max_body_bytes: int,
        observer: Observer | None = None,
        *,
        hide_reasons: bool = False,
        public_url: str = "",
        allow_identities: frozenset[str] = frozenset(),
        reject_unknown_fields: bool = False,
        search: Candidates | None = None,
        held: Callable[[], str] = lambda: "",
    ) -> None:
        self.holder = holder
        # Why the gRPC health is held NOT_SERVING with a bundle active (a worker of
        # `--workers N` before every worker serves it, a drain): `/readyz` is not ready then
        # either, or a load balancer would send callers to a sibling with nothing to serve.
        self.held = held
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.observer = observer
        self.hide_reasons = hide_reasons
        self.public_url = public_url.rstrip("/")
        self._allowed = parse_allow_list(allow_identities)  # typed, as gRPC's AllowList
        self.strict = reject_unknown_fields
        self.routes: dict[str, dict[str, Route]] = {}
        self.add("POST", "/access/v1/evaluation", self.evaluation, "access_evaluation_endpoint")
        self.add("POST", "/access/v1/evaluations", self.evaluations, "access_evaluations_endpoint")
        self.add("POST", "/access/v1/search/action", self.search_action, "search_action_endpoint")
        # Resource search needs a candidate source (`--search-db`, `--search-map`); without one
        # it is neither served nor advertised. Subject search is never served: a plan is made
        # per resource kind, for one principal, not per subject (docs/AUTHZEN.md).
        self.search = search
        if search is not None:
            self.add(
                "POST",
                "/access/v1/search/resource",
                self.search_resource,
                "search_resource_endpoint",
            )
        self.add("GET", "/.well-known/authzen-configuration", self.metadata, body=False)
        if not hide_reasons:
            # The pdp.v1 mirror answers with reasons, rules, explain traces (CEL conditions
            # included) and plans by design: a listener that hides them from AuthZEN callers
            # must not hand them out here.
            self.add("POST", "/v1/check", self.check_json)
            self.add("POST", "/v1/plan", self.plan)
        self.add("GET", "/v1/server-info", self.server_info, body=False)
        self.add("GET", "/healthz", self.healthz, body=False)
        self.add("GET", "/readyz", self.readyz, body=False)

    def add(
        self, method: str, path: str, handler: Handler, metadata_key: str = "", *, body: bool = True
    ) -> None:
        """Serve `method path` with `handler`; `metadata_key` advertises it in AuthZEN's
        metadata (e.g. `search_resource_endpoint`)."""
        self.routes.setdefault(path, {})[method] = Route(handler, body, metadata_key)

    # -- helpers -------------------------------------------------------------------------------

    def _observe(
        self,
        call: Call,
        rpc: str,
        request: CheckRequest | None,
        response: CheckResponse | None,
        error: HttpError | None = None,
    ) -> None:
        if self.observer is None:
            return
        record = CheckObservation(
            request=request,
            response=response,
            error_code=error.code if error else "",
            error_message=error.message if error else "",
            peer=call.peer,
            peer_identity=call.identity,
            metadata=call.metadata,
            start_time=call.start,
            latency_s=time.perf_counter() - call.t0,
            rpc=rpc,
            request_size=call.size + reply_weight(response),
        )
        try:
            self.observer.on_check(record)
        except Exception:
            # Telemetry must never fail a decision.
            log.exception("observer failed")

    def read_request_id(self, header: str, path: str) -> tuple[str, HttpError | None]:
        """The request id an `X-Request-ID` header gives, and the 400 for one that is no
        request id (`check_request_id`). A bad header is dropped (neither echoed in the answer
        nor logged); it is refused on every route but the probes (`PROBE_PATHS`)."""
        if not header:
            return "", None
        try:
            check_request_id(header, self.limits, "X-Request-ID")
        except RequestError as exc:
            return "", None if path in PROBE_PATHS else as_http_error(exc)
        return header, None

    def observe_failure(self, call: Call, error: HttpError) -> None:
        """A decision endpoint's call that ended in an error: one record, as gRPC makes."""
        route = self.routes.get(call.path, {}).get(call.method)
        if route is not None and route.body and not error.recorded:
            self._observe(call, f"{call.method} {call.path}", None, None, error)

    def _request(
        self,
        call: Call,
        evals: list[authzen.Evaluation],
        actions: list[list[str]] | None = None,
    ) -> CheckRequest:
        return authzen.check_request(evals, actions, self.limits, call.request_id)

    def _check(
        self,
        call: Call,
        engine: Engine,
        request: CheckRequest,
        done: int = 0,
        total: int = 0,
        decided: list[tuple[CheckRequest, CheckResponse]] | None = None,
    ) -> CheckResponse:
        """Decide `request`, the part of the call's `total` resources after the `done` first,
        stopping (504) once the call's deadline passed: before it, when resources of the call
        were decided already, between its resources (the engine's `before_next`, as the gRPC
        server watches a batch) and inside one (the engine's `stop_at`), so a call past its
        deadline frees its thread.

        The decision is logged now, or, given `decided`, appended to it for the caller to log
        once the whole call is answered (a call of several parts that ends in a 504 must not
        leave its first parts in the decision log as if they had been answered)."""
        stop = call.stop if call.stop is not None else Deadline(call.stop_at)
        total = total or len(request.resources)
        if done and time.monotonic() >= stop.at:
            raise expired(call, done, total)
        try:
            if len(request.resources) > 1 and stop.at != math.inf:

                def before_next(i: int, _n: int) -> None:
                    if time.monotonic() >= stop.at:
                        raise expired(call, done + i, total)

                response = engine.check(request, before_next=before_next, stop_at=stop)
            else:
                response = engine.check(request, stop_at=stop)
        except DeadlineExceeded as exc:
            raise expired(call, done + exc.done, total) from None
        if decided is None:
            self._observe(call, f"{call.method} {call.path}", request, response)
        else:
            decided.append((request, response))
        return response

    def _observe_all(self, call: Call, decided: list[tuple[CheckRequest, CheckResponse]]) -> None:
        for request, response in decided:
            self._observe(call, f"{call.method} {call.path}", request, response)

    def _answer(self, response: CheckResponse, index: int) -> dict[str, Any]:
        d = next(iter(response.results[index].actions.values()))
        return authzen.decision(d, response.decision_id, self.hide_reasons)

    # -- AuthZEN -------------------------------------------------------------------------------
    # Each call reads the engine once (a batch never mixes two bundles) and validates every
    # evaluation before deciding any (a bad one is a 400 with no decision made).

    def evaluation(self, call: Call) -> tuple[int, Any]:
        if self.strict:
            authzen.reject_unknown_fields(call.body, "evaluation")
        request = self._request(call, [authzen.single(call.body)])
        return 200, self._answer(self._check(call, self.holder.require(), request), 0)

    def evaluations(self, call: Call) -> tuple[int, Any]:
        if self.strict:
            authzen.reject_unknown_fields(call.body, "evaluations")
        evals, semantic = authzen.evaluations_of(call.body, self.limits)
        if "evaluations" not in call.body or not call.body["evaluations"]:
            request = self._request(call, evals)
            answer = self._answer(self._check(call, self.holder.require(), request), 0)
            return 200, {**answer, "evaluations": [answer]}
        # Evaluations sharing a subject, context and action properties are validated as one
        # request (the shared parts once), whatever the semantic; a batch of many groups is
        # refused before it is validated over and over.
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, ev in enumerate(evals):
            groups.setdefault(authzen.group_key(ev), []).append(i)
        if len(groups) > 1:
            authzen.check_batch_size(
                [[evals[i] for i in ix] for ix in groups.values()], self.limits
            )
        batches = [(ix, self._request(call, [evals[i] for i in ix])) for ix in groups.values()]
        engine = self.holder.require()
        # Each group is a decision of its own in the log, written once every group is decided:
        # a call stopped by its deadline (504) is one error record, as a gRPC batch is.
        decided: list[tuple[CheckRequest, CheckResponse]] = []
        try:
            return self._evaluations(call, engine, evals, semantic, batches, decided)
        except BaseException:
            # Not answered: the rate-limit quota the parts decided before took is given back
            # (the caller got an error, never their allows).
            for _request, response in decided:
                engine.give_back(response)
            raise

    def _evaluations(
        self,
        call: Call,
        engine: Engine,
        evals: list[authzen.Evaluation],
        semantic: str,
        batches: list[tuple[list[int], CheckRequest]],
        decided: list[tuple[CheckRequest, CheckResponse]],
    ) -> tuple[int, Any]:
        if semantic == "execute_all":
            out: list[dict[str, Any] | None] = [None] * len(evals)
            done = 0
            for indexes, request in batches:
                response = self._check(call, engine, request, done, len(evals), decided)
                done += len(indexes)
                for j, i in enumerate(indexes):
                    out[i] = self._answer(response, j)
            self._observe_all(call, decided)
            return 200, {"evaluations": out}
        # Short-circuit semantics: in order, one at a time, stopping at the first deny
        # (deny_on_first_deny) or permit (permit_on_first_permit).
        slot: list[tuple[CheckRequest, int]] = [(batches[0][1], 0)] * len(evals)
        for indexes, request in batches:
            for j, i in enumerate(indexes):
                slot[i] = (request, j)
        stop_on = semantic == "permit_on_first_permit"
        answers = []
        for k, (request, j) in enumerate(slot):
            one = dataclasses.replace(request, resources=(request.resources[j],))
            answer = self._answer(self._check(call, engine, one, k, len(slot), decided), 0)
            answers.append(answer)
            if answer["decision"] is stop_on:
                break
        self._observe_all(call, decided)
        return 200, {"evaluations": answers}

    def search_action(self, call: Call) -> tuple[int, Any]:
        body = call.body
        if self.strict:
            authzen.reject_unknown_fields(body, "search_action")
        page = authzen._opt_obj(body.get("page"), "page")
        if page.get("token") not in (None, ""):
            raise RequestError(
                "page.token", "unknown token (this PDP returns every result at once)"
            )
        ev = authzen.Evaluation(
            subject=authzen._obj(body.get("subject"), "subject"),
            action={},
            resource=authzen._obj(body.get("resource"), "resource"),
            context=authzen._opt_obj(body.get("context"), "context"),
            where={"subject": "", "action": "", "resource": "", "context": ""},
        )
        engine = self.holder.require()
        kind = ev.resource.get("type")
        compiled = engine.policy_set.kinds.get(kind) if isinstance(kind, str) else None
        if compiled is None:
            # Validate the request all the same: an unknown kind is no excuse for bad input.
            self._request(call, [ev], [["-"]])
            return 200, {"results": []}
        declared = list(compiled.actions)
        response = self._check(call, engine, self._request(call, [ev], [declared]))
        decided = response.results[0].actions
        results = [{"name": a} for a in declared if decided[a].effect == ALLOW]
        return 200, {"results": results}

    def search_resource(self, call: Call) -> tuple[int, Any]:
        assert self.search is not None
        if self.strict:
            authzen.reject_unknown_fields(call.body, "search_resource")
        search = self.search
        return self._planned(
            call,
            lambda trace: search_resource(
                self.holder, call.body, search, self.limits, trace, call.request_id, _stop(call)
            ),
            hide=self.hide_reasons,
        )

    def metadata(self, call: Call) -> tuple[int, Any]:
        base = call.base_url
        if not self.public_url and not _HOST.match(base.partition("://")[2]):
            # The document is built from the caller's `Host`: one that is no host name or
            # address would be served (and cached by a proxy) as endpoint URLs.
            raise HttpError(
                400, "`Host` must be a host name or address and port", "Host", "INVALID_ARGUMENT"
            )
        doc: dict[str, Any] = {"policy_decision_point": base}
        for path, methods in self.routes.items():
            for route in methods.values():
                if route.metadata_key:
                    doc[route.metadata_key] = base + path
        return 200, doc

    # -- pdp.v1 as JSON ------------------------------------------------------------------------

    def check_json(self, call: Call) -> tuple[int, Any]:
        msg = _pb.CheckRequest()
        try:
            json_format.ParseDict(call.body, msg)
        except json_format.ParseError as exc:
            text = str(exc).split("\n", 1)[0]
            m = _NO_FIELD.search(text)
            if m is None:
                raise RequestError(_parse_error_field(text), text[:200]) from None
            at = m.group(2).split(".", 1)[1] + "." if "." in m.group(2) else ""
            raise RequestError(at + m.group(1), "is an unknown field") from None
        if call.request_id and not msg.request_id:
            msg.request_id = call.request_id
        engine = self.holder.require()
        request = request_from_proto(msg, self.limits)
        response = self._check(call, engine, request)
        return 200, json_format.MessageToDict(response_to_proto(response))

    def plan(self, call: Call) -> tuple[int, Any]:
        """`POST /v1/plan`: the plan request of docs/PLANNING.md, as the Plan RPC takes it."""
        body = call.body
        if call.request_id and "request_id" not in body and "requestId" not in body:
            body = {**body, "request_id": call.request_id}
        return self._planned(
            call, lambda trace: plan_json(self.holder, body, self.limits, trace, _stop(call))
        )

    def _planned(
        self, call: Call, run: Callable[[Trace], Any], hide: bool = False
    ) -> tuple[int, Any]:
        """Run a planning call and record it as the Plan RPC records one: the request and the
        plan as a decision, or the request and the error (a refusal is a 422, its `to_dict()`;
        with `hide`, an AuthZEN caller under `--http-hide-reasons`, without the policy, rule
        and message, which the decision log keeps)."""
        trace = Trace()
        try:
            value = run(trace)
        except PlanRefused as exc:
            error = HttpError(422, exc.message, "", "FAILED_PRECONDITION")
            self._observe_plan(call, trace, error)
            if hide:
                return 422, PlanRefused("the policies cannot answer this search exactly").to_dict()
            return 422, exc.to_dict()
        except DeadlineExceeded:
            # Stopped at the call's deadline (504) or the drain's end (503), as a Check is.
            http_error = expired(call, 0, 0)
            self._observe_plan(call, trace, http_error)
            http_error.recorded = True
            raise http_error from None
        except Exception as exc:
            if trace.request is None:
                raise  # a bad body: the router records it as any refused call
            http_error = as_http_error(exc)
            if http_error is None:
                raise
            self._observe_plan(call, trace, http_error)
            http_error.recorded = True
            raise http_error from None
        self._observe_plan(call, trace)
        return 200, value

    def _observe_plan(self, call: Call, trace: Trace, error: HttpError | None = None) -> None:
        request = trace.request.check if trace.request is not None else None
        plan = trace.plan if error is None else None
        response = plan.as_response() if plan is not None else None
        self._observe(call, f"{call.method} {call.path}", request, response, error)

    def server_info(self, call: Call) -> tuple[int, Any]:
        engine = self.holder.current
        info = server_info_to_proto(
            __version__,
            engine.bundle if engine is not None else None,
            self.holder.status,
            self.limits,
            self.max_body_bytes,
        )
        return 200, json_format.MessageToDict(info)

    # -- health --------------------------------------------------------------------------------

    def healthz(self, call: Call) -> tuple[int, Any]:
        return 200, {"status": "ok"}

    def readyz(self, call: Call) -> tuple[int, Any]:
        engine = self.holder.current
        if engine is None:
            return 503, {"ready": False, "reason": "no bundle is active"}
        if reason := self.held():
            return 503, {"ready": False, "reason": reason}
        b = engine.bundle
        body: dict[str, Any] = {
            "ready": True,
            "bundle": {"name": b.name, "version": b.version, "revision": b.revision},
        }
        # A state the operator must see where probes look (a cached bundle serving while its
        # source has not answered); never a refusal's reason, which this open route must not
        # show (the source URL in it is masked: pdp.bundle.sources.mask_url).
        note = self.holder.status.note
        if note:
            body["note"] = note
        return 200, body

    # -- dispatch ------------------------------------------------------------------------------

    def route(self, method: str, path: str) -> Route:
        methods = self.routes.get(path)
        if methods is None:
            raise HttpError(404, f"no such endpoint `{path[:200]}`", "path", "NOT_FOUND")
        route = methods.get(method)
        if route is None:
            allowed = ", ".join(sorted(methods))
            raise HttpError(
                405,
                f"method `{method[:20]}` not allowed (allowed: {allowed})",
                "method",
                "UNIMPLEMENTED",
            )
        return route

    def authorize(self, call: Call, identities: frozenset[tuple[str, str]]) -> None:
        """`identities`: the certificate's typed SANs (`pdp.http.server.cert_allow_keys`),
        matched against the entries as on gRPC (`pdp.server.identity.AllowList`)."""
        allowed = self._allowed
        if allowed and call.path not in PROBE_PATHS and allowed.isdisjoint(identities):
            who = f"`{call.identity}`" if call.identity else "an unidentified caller"
            raise HttpError(403, f"{who} is not allowed", "identity", "PERMISSION_DENIED")

    def run(self, route: Route, call: Call, data: bytes | None) -> tuple[int, Any]:
        """Parse the body and run the handler; every failure becomes an `HttpError`."""
        try:
            if time.monotonic() >= (call.stop.at if call.stop is not None else call.stop_at):
                # It waited for a decision thread past its deadline (or the drain's end): not
                # decided (as gRPC).
                raise expired(call, 0, 0)
            if route.body:
                call.size = len(data or b"")
                call.body = parse_json_object(data or b"")
            return route.handler(call)
        except HttpError:
            raise
        except Exception as exc:
            http_error = as_http_error(exc)
            if http_error is None:
                raise
            raise http_error from None


def _stop(call: Call) -> Deadline:
    """The stop time a call's decision or plan works under: the server's (which its drain
    lowers), or one of the call's deadline outside a server."""
    return call.stop if call.stop is not None else Deadline(call.stop_at)


def as_http_error(exc: BaseException) -> HttpError | None:
    """The HTTP answer to an error of the request (None: a bug, answered 500)."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, LimitExceeded):
        return HttpError(400, f"`{exc.field}` {exc.message}", exc.field, "RESOURCE_EXHAUSTED")
    if isinstance(exc, BodyError | RequestError):
        return HttpError(400, f"`{exc.field}` {exc.message}", exc.field, "INVALID_ARGUMENT")
    if isinstance(exc, RecursionError):
        return HttpError(400, "JSON nested too deeply", "body", "INVALID_ARGUMENT")
    if isinstance(exc, NoPoliciesError):
        return HttpError(503, str(exc), "", "UNAVAILABLE")
    return None

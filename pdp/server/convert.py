"""Pure translation between the pdp.v1 protobuf messages and the model's values.

`request_from_proto` builds the same `CheckRequest` that `parse_check_request` builds from JSON
(same dict shapes, same validation, same field paths and `Limits`), in one pass over the
message with no JSON round trip. Struct numbers follow the model's number rule (integral
values within +-2**53 are ints), so a request decides the same over gRPC as in process.
`response_to_proto` and `server_info_to_proto` go the other way. Nothing here touches gRPC
itself.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from google.protobuf.struct_pb2 import ListValue, Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from pdp.errors import LimitExceeded, RequestError
from pdp.model.decision import (
    ALLOW,
    DENY,
    ActionDecision,
    BundleInfo,
    CheckResponse,
    LimitStatus,
    ResourceDecision,
    TraceStep,
)
from pdp.model.request import (
    CLIENT_TIME_REFUSED,
    MAX_EXACT_INT,
    MAX_KEY_LENGTH,
    CheckRequest,
    Limits,
    ResourceRequest,
    check_request_id,
    context_country,
    context_ip,
    id_problem,
    make_check_request,
)

from ._gen.pdp.v1 import decision_pb2 as _pb

if TYPE_CHECKING:
    from pdp.engine.holder import Activation

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS_PER_SECOND = 1_000_000_000
_EFFECT_ALLOW = _pb.EFFECT_ALLOW
_EFFECT_DENY = _pb.EFFECT_DENY


class _AttrError(Exception):
    """Raised deep inside a Struct; each frame adds its path segment while it unwinds, so the
    happy path never builds a path string."""

    def __init__(self, message: str, limit: bool) -> None:
        self.message = message
        self.limit = limit
        self.segments: list[str] = []


class _Budget:
    __slots__ = ("left",)

    def __init__(self, n: int) -> None:
        self.left = n


def _too_many(limits: Limits) -> _AttrError:
    return _AttrError(f"request has more than {limits.max_attr_values} attribute values", True)


def _too_deep(limits: Limits) -> _AttrError:
    return _AttrError(f"attributes nested deeper than {limits.max_attr_depth} levels", True)


# Most attribute values are non-empty strings. A Value's `string_value` reads "" unless the
# Value holds a string, so reading it first settles those without `WhichOneof` (which costs
# three times as much); an empty or oversized string, or one past a limit, takes `_value`,
# which decides it and reports the limit at the same path.


def _struct(s: Struct, limits: Limits, budget: _Budget, depth: int) -> dict[str, Any]:
    budget.left -= 1
    if budget.left < 0:
        raise _too_many(limits)
    if depth > limits.max_attr_depth:
        raise _too_deep(limits)
    out = {}
    fields = s.fields
    max_len = limits.max_string_length
    leaf_fits = depth < limits.max_attr_depth  # a value one level down is within the depth
    for key in fields:  # iterating keys and indexing beats .items() on a protobuf map
        if len(key) > MAX_KEY_LENGTH:
            raise _AttrError(f"has a key longer than {MAX_KEY_LENGTH} characters", False)
        value = fields[key]
        text = value.string_value
        if text and leaf_fits and len(text) <= max_len and budget.left > 0:
            budget.left -= 1
            out[key] = text
            continue
        try:
            out[key] = _value(value, limits, budget, depth + 1)
        except _AttrError as e:
            e.segments.append(f".{key}")
            raise
    return out


def _list(lv: ListValue, limits: Limits, budget: _Budget, depth: int) -> list[Any]:
    budget.left -= 1
    if budget.left < 0:
        raise _too_many(limits)
    if depth > limits.max_attr_depth:
        raise _too_deep(limits)
    out: list[Any] = []
    max_len = limits.max_string_length
    leaf_fits = depth < limits.max_attr_depth
    for value in lv.values:
        text = value.string_value
        if text and leaf_fits and len(text) <= max_len and budget.left > 0:
            budget.left -= 1
            out.append(text)
            continue
        try:
            out.append(_value(value, limits, budget, depth + 1))
        except _AttrError as e:
            e.segments.append(f"[{len(out)}]")
            raise
    return out


def _value(v: Value, limits: Limits, budget: _Budget, depth: int) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return _struct(v.struct_value, limits, budget, depth)
    if kind == "list_value":
        return _list(v.list_value, limits, budget, depth)
    budget.left -= 1
    if budget.left < 0:
        raise _too_many(limits)
    if depth > limits.max_attr_depth:
        raise _too_deep(limits)
    if kind == "string_value":
        s = v.string_value
        if len(s) > limits.max_string_length:
            raise _AttrError(f"string longer than {limits.max_string_length} characters", True)
        return s
    if kind == "number_value":
        n = v.number_value
        if math.isnan(n) or math.isinf(n):
            raise _AttrError("must be a finite number", False)
        # Integral values within +-2**53 are ints, as on every path (`number`).
        if n.is_integer() and -MAX_EXACT_INT <= n <= MAX_EXACT_INT:
            return int(n)
        return n
    if kind == "bool_value":
        return v.bool_value
    return None  # null_value, or a Value with no kind set (JSON null either way)


def _attrs(msg: Any, path: str, limits: Limits, budget: _Budget) -> dict[str, Any]:
    """`msg.attr` (a Struct) as a plain dict; an absent Struct is an empty one. `path` names
    `msg.attr` in an error."""
    attr = msg.attr
    if not attr.fields and not msg.HasField("attr"):
        return {}
    try:
        return _struct(attr, limits, budget, 1)
    except _AttrError as e:
        where = path + "".join(reversed(e.segments))
        raise (LimitExceeded if e.limit else RequestError)(where, e.message) from None


def _str(s: str, path: str, limits: Limits, *, required: bool) -> str:
    if not s:
        if required:
            raise RequestError(path, "is required")
        return s
    if len(s) > limits.max_id_length:
        raise LimitExceeded(path, f"is longer than {limits.max_id_length} characters")
    return s


def _id(s: str, path: str, limits: Limits, *, required: bool) -> str:
    """`_str` for an identifier (`id_problem`, the check the JSON parser makes too)."""
    _str(s, path, limits, required=required)
    problem = id_problem(s)
    if problem:
        raise RequestError(path, problem)
    return s


def _str_list(items: Any, path: str, limits: Limits) -> list[str]:
    """A list of identifiers (roles, scopes, actions)."""
    out = list(items)
    for i, s in enumerate(out):
        if not s:
            raise RequestError(f"{path}[{i}]", "must not be empty")
        if len(s) > limits.max_id_length:
            raise LimitExceeded(f"{path}[{i}]", f"is longer than {limits.max_id_length} characters")
        problem = id_problem(s)
        if problem:
            raise RequestError(f"{path}[{i}]", problem)
    return out


def _ids_fit(items: list[str], max_len: int) -> bool:
    """Every id non-empty, at most `max_len` long and an identifier: the check that `_str_list`
    makes, without naming the culprit (the caller re-runs that to report one)."""
    return all(s and len(s) <= max_len and not id_problem(s) for s in items)


def _principal(p: _pb.Principal, limits: Limits, budget: _Budget) -> dict[str, Any]:
    actor = None
    if p.HasField("actor"):
        a = p.actor
        actor = {
            "id": _id(a.id, "principal.actor.id", limits, required=True),
            "type": _id(a.type, "principal.actor.type", limits, required=False),
            "scopes": _str_list(a.scopes, "principal.actor.scopes", limits),
            "attr": _attrs(a, "principal.actor.attr", limits, budget),
        }
    return {
        "id": _id(p.id, "principal.id", limits, required=True),
        # A missing tenant is the engine's business (`missing_tenant`), as in the JSON parser.
        "tenant": _id(p.tenant, "principal.tenant", limits, required=False),
        "roles": _str_list(p.roles, "principal.roles", limits),
        "scopes": _str_list(p.scopes, "principal.scopes", limits),
        "attr": _attrs(p, "principal.attr", limits, budget),
        "actor": actor,
    }


def _resource(r: _pb.Resource, i: int, limits: Limits, budget: _Budget) -> ResourceRequest:
    actions = list(r.actions)
    kind, rid, tenant = r.kind, r.id, r.tenant
    max_id = limits.max_id_length
    # The usual, valid resource is checked without building a field path; anything else
    # takes `_resource_checked`, which names the first bad field.
    if not (
        actions
        and _ids_fit(actions, max_id)
        and kind
        and rid
        and len(kind) <= max_id
        and len(rid) <= max_id
        and len(tenant) <= max_id
        and not id_problem(kind)
        and not id_problem(rid)
        and not id_problem(tenant)
    ):
        _resource_checked(r, f"resources[{i}]", limits)
    attr = _attrs(r, f"resources[{i}].attr", limits, budget) if r.HasField("attr") else {}
    resource = {"kind": kind, "id": rid, "tenant": tenant, "attr": attr}
    return ResourceRequest(resource=resource, actions=tuple(dict.fromkeys(actions)))


def _resource_checked(r: _pb.Resource, path: str, limits: Limits) -> None:
    """Raise the error for the first invalid field of `r`, in the order the fields are read."""
    if not _str_list(r.actions, f"{path}.actions", limits):
        raise RequestError(f"{path}.actions", "must list at least one action")
    _id(r.kind, f"{path}.kind", limits, required=True)
    _id(r.id, f"{path}.id", limits, required=True)
    _id(r.tenant, f"{path}.tenant", limits, required=False)


def timestamp_to_datetime(ts: Timestamp, path: str) -> datetime:
    """An aware UTC datetime; out-of-range seconds or nanos are a `RequestError` at `path`."""
    if not 0 <= ts.nanos < _NANOS_PER_SECOND:
        raise RequestError(path, f"nanos `{ts.nanos}` out of range")
    try:
        return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    except OverflowError:
        raise RequestError(path, f"`{ts.seconds}` seconds is out of the supported range") from None


def _context(
    msg: _pb.CheckRequest, limits: Limits, budget: _Budget
) -> tuple[dict[str, Any], datetime | None]:
    if not msg.HasField("context"):
        return {"ip": "", "country": "", "attr": {}}, None
    c = msg.context
    ip = context_ip(_str(c.ip, "context.ip", limits, required=False))
    country = context_country(_str(c.country, "context.country", limits, required=False))
    time = None
    if c.HasField("time"):
        if not limits.allow_client_time:
            raise RequestError("context.time", CLIENT_TIME_REFUSED)
        time = timestamp_to_datetime(c.time, "context.time")
    ctx: dict[str, Any] = {
        "ip": ip,
        "country": country,
        "attr": _attrs(c, "context.attr", limits, budget),
    }
    if time is not None:
        ctx["time"] = time
    return ctx, time


def request_from_proto(msg: _pb.CheckRequest, limits: Limits) -> CheckRequest:
    """Validate and convert; raises `RequestError` (or `LimitExceeded`) naming the field."""
    budget = _Budget(limits.max_attr_values)
    if not msg.HasField("principal"):
        raise RequestError("principal", "is required")
    principal = _principal(msg.principal, limits, budget)
    raw = msg.resources
    if not raw:
        raise RequestError("resources", "must be a non-empty list")
    if len(raw) > limits.max_resources:
        raise LimitExceeded("resources", f"more than {limits.max_resources} resources")
    resources = [_resource(r, i, limits, budget) for i, r in enumerate(raw)]
    checks = sum(len(r.actions) for r in resources)
    if checks > limits.max_checks:
        raise LimitExceeded(
            "resources", f"{checks} resource x action checks exceed {limits.max_checks}"
        )
    context, time = _context(msg, limits, budget)
    return make_check_request(
        principal,
        resources,
        context,
        request_id=check_request_id(msg.request_id, limits),
        explain=msg.explain,
        time=time,
    )


# -- model -> proto ---------------------------------------------------------------------------


def _bundle(b: BundleInfo) -> _pb.Bundle:
    return _pb.Bundle(name=b.name, version=b.version, revision=b.revision, digest=b.digest)


def _fill_action(a: _pb.ActionResult, d: ActionDecision) -> None:
    # Filled in place, field by field, skipping defaults: a third faster than building an
    # ActionResult and copying it into the map.
    a.effect = _EFFECT_ALLOW if d.effect == ALLOW else _EFFECT_DENY
    if d.policy:
        a.policy = d.policy
    if d.rule:
        a.rule = d.rule
    if d.reasons:
        a.reasons.extend(d.reasons)
    if d.message:
        a.message = d.message
    if d.errors:
        a.errors.extend(d.errors)
    if d.obligations:
        a.obligations.update(d.obligations)
    if d.limits:
        add_limit = a.limits.add
        for lim in d.limits:
            add_limit(
                id=lim.id,
                policy=lim.policy,
                limit=lim.limit,
                window_seconds=lim.window_s,
                remaining=lim.remaining,
                reset_seconds=lim.reset_s,
                exceeded=lim.exceeded,
                retry_after_seconds=lim.retry_after_s,
            )
    if d.trace:
        add = a.trace.add
        for s in d.trace:
            add(stage=s.stage, policy=s.policy, rule=s.rule, outcome=s.outcome, detail=s.detail)


def response_to_proto(resp: CheckResponse) -> _pb.CheckResponse:
    out = _pb.CheckResponse(
        decision_id=resp.decision_id,
        request_id=resp.request_id,
        evaluated_at=resp.evaluated_at,
        time_dependent=resp.time_dependent,
    )
    b, bundle = out.bundle, resp.bundle
    b.name, b.version, b.revision, b.digest = (
        bundle.name,
        bundle.version,
        bundle.revision,
        bundle.digest,
    )
    add = out.results.add
    for r in resp.results:
        actions = add(kind=r.kind, id=r.id).actions
        for name, d in r.actions.items():
            _fill_action(actions[name], d)
    return out


def _timestamp(unix: float) -> Timestamp:
    ts = Timestamp()
    seconds = math.floor(unix)
    ts.seconds = seconds
    ts.nanos = int((unix - seconds) * _NANOS_PER_SECOND)
    return ts


def server_info_to_proto(
    version: str,
    bundle: BundleInfo | None,
    status: Activation,
    limits: Limits,
    max_message_bytes: int,
) -> _pb.ServerInfoResponse:
    out = _pb.ServerInfoResponse(
        pdp_version=version,
        last_error=status.last_error,
        limits=_pb.Limits(
            max_checks=limits.max_checks,
            max_resources=limits.max_resources,
            max_attr_depth=limits.max_attr_depth,
            max_attr_values=limits.max_attr_values,
            max_string_length=limits.max_string_length,
            max_id_length=limits.max_id_length,
            max_message_bytes=max_message_bytes,
        ),
    )
    if bundle is not None:
        out.active_bundle.CopyFrom(_bundle(bundle))
    if status.activated_at is not None:
        out.activated_at.CopyFrom(_timestamp(status.activated_at))
    if status.last_attempt_at is not None:
        out.last_attempt_at.CopyFrom(_timestamp(status.last_attempt_at))
    return out


# -- proto -> model (what a client reads) -----------------------------------------------------


def struct_to_dict(s: Struct) -> dict[str, Any]:
    """A Struct as plain values, without limits (for answers from a trusted server)."""
    return {k: value_to_python(v) for k, v in s.fields.items()}


def value_to_python(v: Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [value_to_python(x) for x in v.list_value.values]
    if kind in (None, "null_value"):
        return None
    if kind == "number_value":
        # The number rule of requests (`pdp.model.request.number`) for answers too: a Struct
        # carries every number as a double, and `max_rows: 10` read back as 10.0 where AuthZEN,
        # the JSON mirror and in process say 10.
        n = v.number_value
        return int(n) if n.is_integer() and -MAX_EXACT_INT <= n <= MAX_EXACT_INT else n
    return getattr(v, kind)


def bundle_from_proto(b: _pb.Bundle) -> BundleInfo:
    return BundleInfo(name=b.name, version=b.version, revision=b.revision, digest=b.digest)


def _action_from_proto(a: _pb.ActionResult) -> ActionDecision:
    return ActionDecision(
        # Fail closed: EFFECT_UNSPECIFIED (or a value from a newer server) is a deny.
        effect=ALLOW if a.effect == _pb.EFFECT_ALLOW else DENY,
        policy=a.policy,
        rule=a.rule,
        reasons=tuple(a.reasons),
        obligations=struct_to_dict(a.obligations),
        message=a.message,
        errors=tuple(a.errors),
        trace=tuple(
            TraceStep(
                stage=s.stage, policy=s.policy, rule=s.rule, outcome=s.outcome, detail=s.detail
            )
            for s in a.trace
        ),
        limits=tuple(
            LimitStatus(
                id=x.id,
                policy=x.policy,
                limit=x.limit,
                window_s=x.window_seconds,
                remaining=x.remaining,
                reset_s=x.reset_seconds,
                retry_after_s=x.retry_after_seconds,
                exceeded=x.exceeded,
            )
            for x in a.limits
        ),
    )


def response_from_proto(msg: _pb.CheckResponse) -> CheckResponse:
    return CheckResponse(
        request_id=msg.request_id,
        decision_id=msg.decision_id,
        bundle=bundle_from_proto(msg.bundle),
        results=tuple(
            ResourceDecision(
                kind=r.kind,
                id=r.id,
                actions={name: _action_from_proto(a) for name, a in r.actions.items()},
            )
            for r in msg.results
        ),
        evaluated_at=msg.evaluated_at,
        time_dependent=msg.time_dependent,
    )

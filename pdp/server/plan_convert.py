"""pdp.v1 PlanRequest/PlanResponse <-> pdp.plan values (the Plan RPC's conversion)."""

from __future__ import annotations

from pdp.errors import RequestError
from pdp.model.request import Limits
from pdp.plan import ALWAYS_ALLOWED, ALWAYS_DENIED, CONDITIONAL, PLAN_VERSION, Plan, PlanRequest
from pdp.plan import tree as t

from ._gen.pdp.v1 import decision_pb2 as _pb
from .convert import request_from_proto

# Enum names, resolved per call: nothing here reads the generated module at import time, so
# `make proto` (which imports pdp.server) still runs when the generated code is stale.
_KINDS = {ALWAYS_ALLOWED: "ALWAYS_ALLOWED", ALWAYS_DENIED: "ALWAYS_DENIED",
          CONDITIONAL: "CONDITIONAL"}  # fmt: skip


def plan_request_from_proto(msg: _pb.PlanRequest, limits: Limits) -> PlanRequest:
    """Validate and convert; the principal and context exactly as Check converts them."""
    if not msg.resource_kind:
        raise RequestError("resource_kind", "is required")
    if not msg.action:
        raise RequestError("action", "is required")
    check = _pb.CheckRequest(request_id=msg.request_id)
    if msg.HasField("principal"):
        check.principal.CopyFrom(msg.principal)
    if msg.HasField("context"):
        check.context.CopyFrom(msg.context)
    tenant = msg.resource_tenant if msg.HasField("resource_tenant") else None
    check.resources.add(kind=msg.resource_kind, id="*", tenant=tenant or "", actions=[msg.action])
    try:
        converted = request_from_proto(check, limits)
    except RequestError as e:
        if e.field.startswith("resources[0]."):
            name = e.field.removeprefix("resources[0].")
            field = "action" if name.startswith("actions") else {
                "kind": "resource_kind", "tenant": "resource_tenant"}.get(name, name)  # fmt: skip
            raise type(e)(field, e.message) from None
        raise
    return PlanRequest(check=converted, kind=msg.resource_kind, action=msg.action, tenant=tenant)


def plan_to_proto(p: Plan) -> _pb.PlanResponse:
    out = _pb.PlanResponse(
        plan_version=PLAN_VERSION,
        plan_id=p.plan_id,
        request_id=p.request_id,
        kind=_pb.PlanResponse.Kind.Value(_KINDS[p.kind]),
        resource_kind=p.resource_kind,
        action=p.action,
        cel=p.cel,
        reason=p.reason,
        message=p.message,
        policy=p.policy,
        rule=p.rule,
        evaluated_at=p.evaluated_at,
        time_dependent=p.time_dependent,
    )
    out.filter.update(t.to_json(p.filter))
    if p.bundle is not None:
        b = p.bundle
        out.bundle.CopyFrom(
            _pb.Bundle(name=b.name, version=b.version, revision=b.revision, digest=b.digest)
        )
    return out

"""Plain request dicts (the JSON shape of `pdp check`) to a pdp.v1.CheckRequest message.

The dicts go through `parse_check_request` first, the validation `pdp check` and the server
apply, so the client sends exactly the request those would decide, or raises the same
`RequestError` naming the same field: nothing is dropped on the way (an `actor: {}` is an
actor without an id, refused, never a request without an actor), and a list given as a
string is refused rather than sent character by character. The server's configured limits
are the server's to enforce; only shape and types are checked here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pdp.model.request import CheckRequest, Limits, parse_check_request
from pdp.server._gen.pdp.v1 import decision_pb2 as _pb

# Shape and types only: the size limits belong to the server, which may be set above the
# defaults (and answers INVALID_ARGUMENT itself past its own).
_SHAPE_ONLY = Limits(
    max_checks=2**31,
    max_resources=2**31,
    max_attr_depth=2**31,
    max_attr_values=2**31,
    max_string_length=2**31,
    max_id_length=2**31,
)


def _attr(msg: Any, attr: Mapping[str, Any]) -> None:
    if attr:
        msg.attr.update(attr)


def _principal(p: Mapping[str, Any], msg: _pb.Principal) -> None:
    msg.id = p["id"]
    msg.tenant = p["tenant"]
    msg.roles.extend(p["roles"])
    msg.scopes.extend(p["scopes"])
    _attr(msg, p["attr"])
    actor = p["actor"]
    if actor is not None:
        a = msg.actor
        a.SetInParent()  # present even when every field is at its default
        a.id = actor["id"]
        a.type = actor["type"]
        a.scopes.extend(actor["scopes"])
        _attr(a, actor["attr"])


def to_proto(req: CheckRequest) -> _pb.CheckRequest:
    """A validated request as the message the server will turn back into the same request."""
    msg = _pb.CheckRequest(request_id=req.request_id, explain=req.explain)
    _principal(req.principal, msg.principal)
    for r in req.resources:
        out = msg.resources.add(kind=r.kind, id=r.id, tenant=r.tenant, actions=r.actions)
        _attr(out, r.resource["attr"])
    c = req.context
    if c["ip"] or c["country"] or c["attr"] or req.time is not None:
        ctx = msg.context
        ctx.SetInParent()
        ctx.ip = c["ip"]
        ctx.country = c["country"]
        _attr(ctx, c["attr"])
        if req.time is not None:
            ctx.time.FromDatetime(req.time)
    return msg


def request_to_proto(
    principal: Mapping[str, Any],
    resources: Iterable[Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
    *,
    request_id: str = "",
    explain: bool = False,
) -> _pb.CheckRequest:
    """Validate (raising `RequestError` as `pdp check` would) and convert."""
    obj: dict[str, Any] = {
        "principal": principal,
        "resources": resources if isinstance(resources, list | tuple) else list(resources),
        "request_id": request_id,
        "explain": explain,
    }
    if context is not None:
        obj["context"] = context
    return to_proto(parse_check_request(obj, _SHAPE_ONLY))

"""Plain request dicts (the JSON shape of `pdp check`) to a pdp.v1.CheckRequest message."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pdp.model.request import parse_time
from pdp.server._gen.pdp.v1 import decision_pb2 as _pb


def _fill(msg: Any, d: Mapping[str, Any], strings: Iterable[str], lists: Iterable[str]) -> None:
    for name in strings:
        value = d.get(name)
        if value:
            setattr(msg, name, value)
    for name in lists:
        value = d.get(name)
        if value:
            getattr(msg, name).extend(value)
    attr = d.get("attr")
    if attr:
        msg.attr.update(attr)


def principal_to_proto(p: Mapping[str, Any], msg: _pb.Principal) -> None:
    _fill(msg, p, ("id", "tenant"), ("roles", "scopes"))
    actor = p.get("actor")
    if actor:
        _fill(msg.actor, actor, ("id", "type"), ("scopes",))


def resource_to_proto(r: Mapping[str, Any], msg: _pb.Resource) -> None:
    _fill(msg, r, ("kind", "id", "tenant"), ("actions",))


def context_to_proto(c: Mapping[str, Any], msg: _pb.Context) -> None:
    _fill(msg, c, ("ip", "country"), ())
    t = c.get("time")
    if t:
        when = t if isinstance(t, datetime) else parse_time(t, "context.time")
        msg.time.FromDatetime(when.astimezone(UTC))


def request_to_proto(
    principal: Mapping[str, Any],
    resources: Iterable[Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
    *,
    request_id: str = "",
    explain: bool = False,
) -> _pb.CheckRequest:
    msg = _pb.CheckRequest(request_id=request_id, explain=explain)
    principal_to_proto(principal, msg.principal)
    for r in resources:
        resource_to_proto(r, msg.resources.add())
    if context:
        context_to_proto(context, msg.context)
    return msg

"""JSON in, JSON out: the plan endpoint and AuthZEN 1.0 resource search, for any transport.

`plan_json(source, body)` answers `POST /v1/plan`; `search_resource(source, body, candidates)`
answers AuthZEN's `POST /access/v1/search/resource`. Both raise `RequestError` (HTTP 400, the
field named), `PlanRefused` (HTTP 422, `err.to_dict()`) and `NoPoliciesError` (HTTP 503);
neither imports anything from HTTP.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pdp.engine import Engine, EngineHolder
from pdp.errors import RequestError
from pdp.model.request import DEFAULT_LIMITS, Limits

from .planner import ALWAYS_DENIED, Plan, PlanRequest, parse_plan_request, plan

# A candidate source: given the plan, a cursor (the last id of the previous page, or None)
# and a count, the ids of at most `count` resources the plan's filter selects, in a stable
# order, strictly after the cursor. `pdp.plan.sqlalchemy.where_clause` makes the filter.
Candidates = Callable[[Plan, str | None, int], Sequence[str]]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _engine(source: Engine | EngineHolder) -> Engine:
    return source.require() if isinstance(source, EngineHolder) else source


def plan_request(
    source: Engine | EngineHolder, body: Any, limits: Limits = DEFAULT_LIMITS
) -> tuple[PlanRequest, Plan]:
    req = parse_plan_request(body, limits)
    return req, plan(_engine(source), req)


def plan_json(
    source: Engine | EngineHolder, body: Any, limits: Limits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """`POST /v1/plan`: a plan request (docs/PLANNING.md) to the plan's JSON."""
    return plan_request(source, body, limits)[1].to_dict()


# --- AuthZEN resource search ----------------------------------------------------------------

_SEARCH_KEYS = frozenset({"subject", "action", "resource", "context", "page"})


def _obj(v: Any, path: str, *, required: bool = True) -> Mapping[str, Any]:
    if v is None and not required:
        return {}
    if not isinstance(v, Mapping):
        raise RequestError(path, "must be an object")
    return v


def authzen_to_plan(body: Any) -> dict[str, Any]:
    """An AuthZEN resource-search request as a pdp plan request.

    subject {type, id, properties: {tenant, roles, scopes, attr, actor}} is the principal;
    action {name}; resource {type, properties: {tenant}} the kind (and a fixed tenant);
    context {ip, country, time, attr} passes through.
    """
    req = _obj(body, "request")
    for k in req:
        if k not in _SEARCH_KEYS:
            raise RequestError(str(k)[:64] or "request", f"unknown field `{str(k)[:64]}`")
    subject = _obj(req.get("subject"), "subject")
    props = _obj(subject.get("properties"), "subject.properties", required=False)
    principal = {"id": subject.get("id")}
    for k in ("tenant", "roles", "scopes", "attr", "actor"):
        if k in props:
            principal[k] = props[k]
    action = _obj(req.get("action"), "action")
    resource = _obj(req.get("resource"), "resource")
    rprops = _obj(resource.get("properties"), "resource.properties", required=False)
    res: dict[str, Any] = {"kind": resource.get("type")}
    if "tenant" in rprops:
        res["tenant"] = rprops["tenant"]
    out: dict[str, Any] = {"principal": principal, "resource": res, "action": action.get("name")}
    if req.get("context") is not None:
        out["context"] = req["context"]
    return out


def _decode_token(token: Any) -> str | None:
    if token in (None, ""):
        return None
    if not isinstance(token, str) or len(token) > 4096:
        raise RequestError("page.next_token", "is not a token this server issued")
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise RequestError("page.next_token", "is not a token this server issued") from None
    if not isinstance(raw, dict) or raw.get("v") != 1 or not isinstance(raw.get("after"), str):
        raise RequestError("page.next_token", "is not a token this server issued")
    return raw["after"]


def _encode_token(after: str) -> str:
    raw = json.dumps({"v": 1, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def search_resource(
    source: Engine | EngineHolder,
    body: Any,
    candidates: Candidates,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """AuthZEN `POST /access/v1/search/resource`: one page of the resources the subject may
    act on, `{"results": [{"type", "id"}], "page": {"next_token"}}`.

    The plan is made on every page (a page token carries only a cursor, never a decision), so
    a changed policy or a forged token can never widen what a later page returns.
    """
    req = _obj(body, "request")
    page = _obj(req.get("page"), "page", required=False)
    limit = page.get("limit", DEFAULT_PAGE_SIZE)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise RequestError("page.limit", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    after = _decode_token(page.get("next_token"))
    _req, p = plan_request(source, authzen_to_plan(req), limits)
    if p.kind == ALWAYS_DENIED:
        return {"results": [], "page": {"next_token": ""}}
    ids = list(candidates(p, after, limit + 1))
    more = len(ids) > limit
    ids = ids[:limit]
    return {
        "results": [{"type": p.resource_kind, "id": i} for i in ids],
        "page": {"next_token": _encode_token(ids[-1]) if more and ids else ""},
    }

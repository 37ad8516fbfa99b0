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
from dataclasses import dataclass
from typing import Any

from pdp.cel import Deadline
from pdp.engine import Engine, EngineHolder
from pdp.errors import RequestError
from pdp.http import authzen  # the AuthZEN mapping only: pure, no HTTP library
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


@dataclass(slots=True)
class Trace:
    """What a call got to, for its decision-log record: the parsed request once it is valid,
    the plan once it is made (a refusal leaves `plan` None)."""

    request: PlanRequest | None = None
    plan: Plan | None = None


def plan_request(
    source: Engine | EngineHolder,
    body: Any,
    limits: Limits = DEFAULT_LIMITS,
    trace: Trace | None = None,
    stop: Deadline | None = None,
) -> tuple[PlanRequest, Plan]:
    """Parse and plan; `stop` as `pdp.plan.plan` takes it (`DeadlineExceeded` past it)."""
    trace = trace if trace is not None else Trace()
    req = trace.request = parse_plan_request(body, limits)
    p = trace.plan = plan(_engine(source), req, stop)
    return req, p


def plan_json(
    source: Engine | EngineHolder,
    body: Any,
    limits: Limits = DEFAULT_LIMITS,
    trace: Trace | None = None,
    stop: Deadline | None = None,
) -> dict[str, Any]:
    """`POST /v1/plan`: a plan request (docs/PLANNING.md) to the plan's JSON."""
    return plan_request(source, body, limits, trace, stop)[1].to_dict()


# --- AuthZEN resource search ----------------------------------------------------------------


def _obj(v: Any, path: str, *, required: bool = True) -> Mapping[str, Any]:
    if v is None and not required:
        return {}
    if not isinstance(v, Mapping):
        raise RequestError(path, "must be an object")
    return v


def authzen_to_plan(body: Any) -> dict[str, Any]:
    """An AuthZEN resource-search request as a pdp plan request, by the one AuthZEN mapping
    (`pdp.http.authzen`, pure translation): subject -> principal, action.name -> action,
    resource.type (and properties.tenant) -> kind (and a fixed tenant), context as for an
    evaluation. Unknown top-level keys are ignored, as AuthZEN asks of receivers."""
    return authzen.plan_body(_obj(body, "body"))


def _decode_token(page: Mapping[str, Any]) -> str | None:
    # AuthZEN names it `page.token`; `page.next_token` (as the answer names it) is accepted too.
    where = "page.next_token" if "token" not in page and "next_token" in page else "page.token"
    token = page.get(where[5:])
    if "token" in page and "next_token" in page and page["token"] != page["next_token"]:
        raise RequestError("page.next_token", "differs from `page.token`")
    if token in (None, ""):
        return None
    if not isinstance(token, str) or len(token) > 4096:
        raise RequestError(where, "is not a token this server issued")
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError, RecursionError):  # 3,000 `[` fit in the cap
        raise RequestError(where, "is not a token this server issued") from None
    if not isinstance(raw, dict) or raw.get("v") != 1 or not isinstance(raw.get("after"), str):
        raise RequestError(where, "is not a token this server issued")
    try:
        raw["after"].encode("utf-8")  # the cursor goes to SQL as text; `"\ud800"` is none
    except UnicodeEncodeError:
        raise RequestError(where, "is not a token this server issued") from None
    return raw["after"]


def _encode_token(after: str) -> str:
    raw = json.dumps({"v": 1, "after": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def search_resource(
    source: Engine | EngineHolder,
    body: Any,
    candidates: Candidates,
    limits: Limits = DEFAULT_LIMITS,
    trace: Trace | None = None,
    request_id: str = "",
    stop: Deadline | None = None,
) -> dict[str, Any]:
    """AuthZEN `POST /access/v1/search/resource`: one page of the resources the subject may
    act on, `{"results": [{"type", "id"}], "page": {"next_token"}}`.

    The plan is made on every page (a page token carries only a cursor, never a decision), so
    a changed policy or a forged token can never widen what a later page returns.
    """
    req = _obj(body, "body")
    page = _obj(req.get("page"), "page", required=False)
    limit = page.get("limit", DEFAULT_PAGE_SIZE)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise RequestError("page.limit", f"must be an integer from 1 to {MAX_PAGE_SIZE}")
    after = _decode_token(page)
    plan_body = authzen_to_plan(req)
    if request_id:
        plan_body["request_id"] = request_id
    try:
        _req, p = plan_request(source, plan_body, limits, trace, stop)
    except RequestError as exc:
        exc.field = authzen.plan_field(exc.field)
        exc.args = (f"{exc.field}: {exc.message}",)
        raise
    if p.kind == ALWAYS_DENIED:
        return {"results": [], "page": {"next_token": ""}}
    ids = list(candidates(p, after, limit + 1))
    more = len(ids) > limit
    ids = ids[:limit]
    return {
        "results": [{"type": p.resource_kind, "id": i} for i in ids],
        "page": {"next_token": _encode_token(ids[-1]) if more and ids else ""},
    }

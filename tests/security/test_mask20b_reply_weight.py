"""What a queued record keeps alive of its reply counts against the log queue's byte budget.

`reply_weight` estimates a decided call's reply where no reply bytes exist to count: the HTTP
adapter's (`/v1/check`, AuthZEN, `/v1/plan`) and, now, the gRPC Plan's and an ext_authz call's
(which counted their request alone). It counted messages and errors only: the obligations a
policy computes (an ext_authz answer's headers: any number, any size) and `/v1/check`'s explain
traces were free, so a stalled sink could queue 10,000 records of them by count alone.
"""

from __future__ import annotations

from pdp.model.decision import (
    ActionDecision,
    BundleInfo,
    CheckResponse,
    LimitStatus,
    ResourceDecision,
    TraceStep,
)
from pdp.server.hooks import reply_weight

HEADERS = {f"x-h{i}": "v" * 1000 for i in range(64)}  # 64 KB of answer headers


def _response(d: ActionDecision, n: int = 1) -> CheckResponse:
    results = tuple(ResourceDecision("doc", f"d{i}", {"read": d}) for i in range(n))
    return CheckResponse("r", "id", BundleInfo("b", "1", ""), results)


def test_obligations_count_as_the_headers_they_set() -> None:
    plain = reply_weight(_response(ActionDecision("allow")))
    heavy = reply_weight(_response(ActionDecision("allow", obligations={"headers": HEADERS})))
    assert heavy - plain >= 64 * 1000
    nested = {"a": [{"b": "x" * 5000}, 1, True, None], "c": ("y" * 3000,)}
    assert reply_weight(_response(ActionDecision("allow", obligations=nested))) - plain >= 8000


def test_explain_traces_and_limits_count() -> None:
    steps = tuple(
        TraceStep("allow_rule", "p", f"r{i}", "not_matched", "d" * 200) for i in range(50)
    )
    plain = reply_weight(_response(ActionDecision("deny"), 100))
    traced = reply_weight(_response(ActionDecision("deny", trace=steps), 100))
    assert traced - plain >= 100 * 50 * 200
    limit = LimitStatus("l", "p", 10, 1.0, 5, 1)
    limited = reply_weight(_response(ActionDecision("deny", limits=(limit,) * 10), 100))
    assert limited > plain

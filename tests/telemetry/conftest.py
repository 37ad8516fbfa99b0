"""Server `CheckObservation`s built from `pdp.model` values, as the decision service makes them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from pdp.model.decision import ActionDecision, BundleInfo, CheckResponse, ResourceDecision
from pdp.model.request import CheckRequest, parse_check_request
from pdp.server.hooks import CheckObservation

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
BUNDLE = BundleInfo(name="platform", version="1.4.0", revision="abc123", digest="sha256:x")


def observation(
    request: CheckRequest | None, response: CheckResponse | None, **fields: Any
) -> CheckObservation:
    defaults: dict[str, Any] = {
        "error_code": "",
        "error_message": "",
        "peer": "ipv4:127.0.0.1:40000",
        "peer_identity": "spiffe://example.org/gateway",
        "metadata": (),
        "start_time": time.time(),
        "latency_s": 0.00042,
        "rpc": "/pdp.v1.DecisionService/Check",
    }
    defaults.update(fields)
    return CheckObservation(request=request, response=response, **defaults)


def request_dict(**overrides: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "request_id": "req-1",
        "principal": {
            "id": "alice",
            "tenant": "acme",
            "roles": ["editor"],
            "scopes": ["docs:read", "docs:write"],
            "attr": {
                "email": "alice@acme.example",
                "department": "legal",
                "token": TOKEN,
                "headers": {"Authorization": f"Bearer {TOKEN}", "x-request-id": "r-9"},
            },
            "actor": {"id": "agent-7", "type": "ai_agent", "scopes": ["docs:read"], "attr": {}},
        },
        "resources": [
            {
                "kind": "document",
                "id": "doc-1",
                "tenant": "acme",
                "attr": {"owner": "alice", "ssn": "123-45-6789", "note": f"bearer {TOKEN}"},
                "actions": ["read", "delete"],
            },
            {
                "kind": "document",
                "id": "doc-2",
                "tenant": "acme",
                "attr": {"owner": "bob", "ssn": "987-65-4321"},
                "actions": ["read"],
            },
        ],
        "context": {"ip": "10.1.2.3", "country": "FR", "attr": {"mfa": True, "auth_time": None}},
    }
    req.update(overrides)
    return req


def response_for(request: CheckRequest, decision_id: str = "dec-1") -> CheckResponse:
    results = []
    for r in request.resources:
        actions = {}
        for a in r.actions:
            if a == "read":
                actions[a] = ActionDecision(
                    "allow",
                    policy="document",
                    rule="readers",
                    reasons=("reader",),
                    obligations={"watermark": True},
                )
            else:
                actions[a] = ActionDecision(
                    "deny",
                    policy="",
                    rule="",
                    reasons=("missing_scope",),
                    message="missing scope `docs:delete` (alice@acme.example)",
                )
        results.append(ResourceDecision(kind=r.kind, id=r.id, actions=actions))
    return CheckResponse(
        request_id=request.request_id,
        decision_id=decision_id,
        bundle=BUNDLE,
        results=tuple(results),
        evaluated_at="2026-03-01T12:00:00+00:00",
    )


ObsFactory = Callable[..., CheckObservation]


@pytest.fixture
def make_obs() -> ObsFactory:
    def make(
        *, decision_id: str = "dec-1", request: dict[str, Any] | None = None, **fields: Any
    ) -> CheckObservation:
        req = parse_check_request(request if request is not None else request_dict())
        fields.setdefault(
            "metadata",
            (
                ("traceparent", TRACEPARENT),
                ("authorization", f"Bearer {TOKEN}"),
                ("user-agent", "grpc-python/1.60"),
            ),
        )
        return observation(req, response_for(req, decision_id), **fields)

    return make

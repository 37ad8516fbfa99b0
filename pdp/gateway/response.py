"""Decision → ext_authz answer. `outcome_for` is pure; `to_envoy` only fills the proto.

Only an engine `allow` (or a public/unmapped-allow route) ever yields gRPC status OK; every
other path — deny, bad credentials, bad request, internal error — is a non-OK status with a
denied response, so Envoy never forwards a request by accident.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2

from pdp.gateway._gen.envoy.config.core.v3 import base_pb2
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway.mapping import RouteMapping
from pdp.gateway.request import Translation
from pdp.gateway.templates import render_value
from pdp.model.decision import CheckResponse, LimitStatus

DECISION_ID_HEADER = "x-pdp-decision-id"

# google.rpc.Code values.
OK, INVALID_ARGUMENT, PERMISSION_DENIED, UNAVAILABLE, INTERNAL, UNAUTHENTICATED = (
    0,
    3,
    7,
    14,
    13,
    16,
)
RESOURCE_EXHAUSTED = 8
DEADLINE_EXCEEDED = 4
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    grpc_code: int
    http_status: int  # for denials; 200 on allow
    reason: str
    decision_id: str
    message: str = ""
    # Allow: headers set on the upstream request / removed from it. Deny: response headers.
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_to_remove: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def body(self) -> str:
        error = {
            401: "unauthenticated",
            400: "bad_request",
            403: "forbidden",
            429: "too_many_requests",
        }.get(self.http_status, "unavailable" if self.http_status == 503 else "internal_error")
        return json.dumps(
            {"error": error, "reason": self.reason, "decision_id": self.decision_id},
            separators=(",", ":"),
        )


def header_value(value: Any) -> str:
    """An obligation or template value as one header line (no CR/LF smuggling)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        text = ",".join(str(v) for v in value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    text = "".join(ch for ch in text if ch == "\t" or (ch >= " " and ch != "\x7f"))
    # A lone surrogate cannot go into the answer's protobuf: kept visible, escaped.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def rate_limit_headers(status: LimitStatus) -> dict[str, str]:
    """The draft RFC's `x-ratelimit-*` headers (version 03, as Envoy's filter sends them)."""
    return {
        "x-ratelimit-limit": f"{status.limit}, {status.limit};w={status.window_s:g}",
        "x-ratelimit-remaining": str(status.remaining),
        "x-ratelimit-reset": str(status.reset_s),
    }


def outcome_for(
    translation: Translation,
    decision: CheckResponse | None,
    mapping: RouteMapping,
    decision_id: str,
) -> Outcome:
    """The answer for a translated request and (when it was asked) the engine's decision."""
    if decision is not None:
        decision_id = decision.decision_id
    meta: dict[str, Any] = {"decision_id": decision_id}
    kind = translation.kind
    if kind == "check":
        assert decision is not None
        action = next(iter(decision.results[0].actions.values()))
        reason = (
            action.reasons[0] if action.reasons else ("allowed" if action.allowed else "denied")
        )
        meta |= {
            "effect": action.effect,
            "policy": action.policy,
            "rule": action.rule,
            "reason": reason,
            "bundle": f"{decision.bundle.name}@{decision.bundle.version}",
        }
        exceeded = [lim for lim in action.limits if lim.exceeded]
        if not action.allowed and exceeded:
            out = _denied(RESOURCE_EXHAUSTED, 429, reason, decision_id, meta, action.message)
            headers = {
                **rate_limit_headers(exceeded[0]),
                "retry-after": str(exceeded[0].retry_after_s),
            }
            return _with_headers(out, headers)
        if not action.allowed:
            return _denied(PERMISSION_DENIED, 403, reason, decision_id, meta, action.message)
        return _allowed(translation, mapping, decision_id, reason, meta, dict(action.obligations))
    if kind == "allow":
        meta |= {"effect": "allow", "reason": translation.reason}
        return _allowed(translation, mapping, decision_id, translation.reason, meta, None)
    meta |= {"effect": "deny", "reason": translation.reason}
    if kind == "unauthenticated":
        out = _denied(
            UNAUTHENTICATED, 401, translation.reason, decision_id, meta, translation.message
        )
        # RFC 6750: no error code when no credential was sent at all.
        challenge = 'Bearer realm="pdp"'
        if translation.reason != "missing_token":
            challenge += ', error="invalid_token"'
        return _with_headers(out, {"www-authenticate": challenge})
    if kind == "bad_request":
        return _denied(
            INVALID_ARGUMENT, 400, translation.reason, decision_id, meta, translation.message
        )
    return _denied(
        PERMISSION_DENIED, 403, translation.reason, decision_id, meta, translation.message
    )


def error_outcome(reason: str, decision_id: str, *, unavailable: bool = False) -> Outcome:
    """No decision could be made: never OK."""
    meta = {"decision_id": decision_id, "effect": "deny", "reason": reason}
    if unavailable:
        return _denied(UNAVAILABLE, 503, reason, decision_id, meta)
    return _denied(INTERNAL, 500, reason, decision_id, meta)


def deadline_outcome(decision_id: str) -> Outcome:
    """The call's deadline (Envoy's `timeout`) passed while deciding: Envoy has stopped
    waiting and applies its failure mode; this denial is what the decision log keeps."""
    meta = {"decision_id": decision_id, "effect": "deny", "reason": "deadline_exceeded"}
    return _denied(DEADLINE_EXCEEDED, 504, "deadline_exceeded", decision_id, meta)


def _denied(
    code: int, status: int, reason: str, decision_id: str, meta: dict[str, Any], message: str = ""
) -> Outcome:
    return Outcome(
        allowed=False,
        grpc_code=code,
        http_status=status,
        reason=reason,
        decision_id=decision_id,
        message=message,
        headers={DECISION_ID_HEADER: decision_id, "content-type": "application/json"},
        metadata=meta,
    )


def _with_headers(out: Outcome, extra: Mapping[str, str]) -> Outcome:
    return Outcome(
        allowed=out.allowed,
        grpc_code=out.grpc_code,
        http_status=out.http_status,
        reason=out.reason,
        decision_id=out.decision_id,
        message=out.message,
        headers={**out.headers, **extra},
        headers_to_remove=out.headers_to_remove,
        metadata=out.metadata,
    )


def _allowed(
    translation: Translation,
    mapping: RouteMapping,
    decision_id: str,
    reason: str,
    meta: dict[str, Any],
    obligations: dict[str, Any] | None,
) -> Outcome:
    headers: dict[str, str] = {}
    remove: list[str] = list(mapping.remove_headers)
    if translation.env is not None:
        for name, template in mapping.add_headers.items():
            value = render_value(template, translation.env)
            if value is not None:
                headers[name.lower()] = header_value(value)
            else:
                # Nothing to say (a claim or parameter the request lacks): the upstream must not
                # get a client's own header of that name as if pdp had set it.
                remove.append(name.lower())
    else:  # a public route, or an unmapped one let through: no principal, nothing to add
        remove += [name.lower() for name in mapping.add_headers]
    for key, header in mapping.obligation_headers.items():
        if obligations and key in obligations:
            headers[header] = header_value(obligations[key])
        else:
            # The upstream trusts these headers as pdp's; a client must not be able to send one.
            remove.append(header)
    headers[DECISION_ID_HEADER] = decision_id
    remove = [h for h in dict.fromkeys(remove) if h not in headers]
    if obligations:
        meta = {**meta, "obligations": obligations}
    return Outcome(
        allowed=True,
        grpc_code=OK,
        http_status=200,
        reason=reason,
        decision_id=decision_id,
        headers=headers,
        headers_to_remove=tuple(remove),
        metadata=meta,
    )


def _header_options(headers: Mapping[str, str]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v), append_action=_OVERWRITE
        )
        for k, v in headers.items()
    ]


def to_envoy(outcome: Outcome) -> ext.CheckResponse:
    response = ext.CheckResponse()
    response.status.code = outcome.grpc_code
    if outcome.allowed:
        ok = response.ok_response
        ok.headers.extend(_header_options(outcome.headers))
        ok.headers_to_remove.extend(outcome.headers_to_remove)
    else:
        response.status.message = outcome.reason
        denied = response.denied_response
        denied.status.code = outcome.http_status  # type: ignore[assignment]
        denied.headers.extend(_header_options(outcome.headers))
        denied.body = outcome.body()
    metadata = struct_pb2.Struct()
    # Envoy files this under `envoy.filters.http.ext_authz`, so access logs can print
    # `%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%`.
    metadata.update(_jsonable(outcome.metadata))
    response.dynamic_metadata.CopyFrom(metadata)
    return response


def _jsonable(value: Any) -> Any:
    # Struct holds only JSON; obligations already are, this guards against tuples etc.
    return json.loads(json.dumps(value, default=str))

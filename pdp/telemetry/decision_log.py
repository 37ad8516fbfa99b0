"""The decision-log record: one JSON object per Check, documented in docs/DECISION_LOG.md.

`build_record` turns an observation into a record (masked) on the writer thread;
`request_from_record` gives back the decision request in the exact JSON shape accepted by
`pdp.model.request.parse_check_request`, so logged traffic can be replayed against a
candidate bundle (`pdp bundle diff --requests decisions.jsonl`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pdp.errors import RequestError
from pdp.model.decision import ActionDecision, CheckResponse
from pdp.model.request import CheckRequest, parse_time
from pdp.telemetry.masking import Masked, Masker, redact_credentials
from pdp.telemetry.observation import Observation

# Identifies the record layout; bumped on any incompatible change so readers can refuse
# what they do not understand instead of misreading it.
SCHEMA = "pdp.decision_log/v1"


def request_to_json(request: CheckRequest, *, time: datetime | None = None) -> dict[str, Any]:
    """The JSON shape of `request`, as `parse_check_request` accepts it (unmasked).

    `time` pins `context.time` when the caller sent none, so a replay decides at the instant
    the original decision was made rather than at replay time.
    """
    p = request.principal
    principal: dict[str, Any] = {
        "id": p["id"],
        "tenant": p.get("tenant", ""),
        "roles": list(p.get("roles", ())),
        "scopes": list(p.get("scopes", ())),
        "attr": p.get("attr", {}),
    }
    actor = p.get("actor")
    if actor:
        principal["actor"] = {
            "id": actor["id"],
            "type": actor.get("type", ""),
            "scopes": list(actor.get("scopes", ())),
            "attr": actor.get("attr", {}),
        }
    resources = [
        {
            "kind": r.resource["kind"],
            "id": r.resource["id"],
            "tenant": r.resource.get("tenant", ""),
            "attr": r.resource.get("attr", {}),
            "actions": list(r.actions),
        }
        for r in request.resources
    ]
    c = request.context
    context: dict[str, Any] = {
        "ip": c.get("ip", ""),
        "country": c.get("country", ""),
        "attr": c.get("attr", {}),
    }
    when = request.time or time
    if when is not None:
        context["time"] = _rfc3339(when)
    out: dict[str, Any] = {
        "request_id": request.request_id,
        "principal": principal,
        "resources": resources,
        "context": context,
    }
    if request.explain:
        out["explain"] = True
    return out


def request_from_record(record: Mapping[str, Any], *, pin_time: bool = True) -> dict[str, Any]:
    """The replayable request of a decision-log record (a fresh copy).

    With `pin_time=False`, a `context.time` the server filled in (the caller sent none) is
    removed, so the replay decides at the replay's own clock.
    Raises `ValueError` for a record without a request (one whose request failed to convert).
    """
    request = record.get("request")
    if not isinstance(request, Mapping):
        raise ValueError("decision-log record has no `request` object")
    out = copy.deepcopy(dict(request))
    if not pin_time and record.get("time_pinned"):
        out.get("context", {}).pop("time", None)
    return out


def build_record(
    obs: Observation,
    masker: Masker,
    *,
    trace_id: str = "",
    span_id: str = "",
) -> dict[str, Any]:
    """One masked record for one observed call."""
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "decision_id": "",
        "timestamp": unix_rfc3339(obs.start_time),
        "rpc": obs.rpc,
        "caller": {"address": obs.peer, "identity": obs.peer_identity},
    }
    request, response = obs.request, obs.response
    masked: Masked | None = None
    if request is not None:
        pinned = None if request.time is not None else _decision_time(obs)
        masked = masker.mask_request(request_to_json(request, time=pinned))
        record["request_id"] = masked.request["request_id"]
        record["principal"] = _principal_summary(masked.request["principal"])
    if response is not None:
        record["decision_id"] = response.decision_id
        record["bundle"] = {
            "name": response.bundle.name,
            "version": response.bundle.version,
            "revision": response.bundle.revision,
        }
        record["decisions"] = _results(request, masked, response)
        record["effects"] = effect_counts(response)
    if obs.error_code:
        message = (
            _text(obs.error_message, masked) if masked else masker.redact_refused(obs.error_message)
        )
        record["error"] = {"code": obs.error_code, "message": message}
    record["latency_ms"] = latency_ms(obs.latency_s)
    record["trace_id"] = trace_id
    record["span_id"] = span_id
    if request is not None and masked is not None:
        record["time_pinned"] = request.time is None
        record["request"] = masked.request
    return record


# A bucket left with less than this share of its limit is "near" it: the span says so, so a
# trace shows a caller about to be rate limited before it is.
NEAR_LIMIT_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Summary:
    """What the span and the metrics read of a successful call's decisions."""

    decisions: tuple[tuple[str, str, int], ...]  # (effect, first reason, count)
    checks: int  # resource x action decisions
    allow: int
    deny: int
    limits: tuple[tuple[str, str, int], ...] = ()  # (limit id, granted | limited, count)
    near_limits: str = ""  # ids of buckets near their limit, comma-separated
    limited: str = ""  # ids of limits that refused an action, comma-separated


def summarize(response: CheckResponse) -> Summary:
    counts: dict[tuple[str, str], int] = {}
    takes: dict[tuple[str, str], int] = {}
    near: dict[str, None] = {}
    for r in response.results:
        for d in r.actions.values():
            key = (d.effect, d.reasons[0] if d.reasons else "")
            counts[key] = counts.get(key, 0) + 1
            for lim in d.limits:
                # A refused take is all or nothing: only the limit that refused counts.
                if lim.exceeded or d.effect == "allow":
                    outcome = (lim.id, "limited" if lim.exceeded else "granted")
                    takes[outcome] = takes.get(outcome, 0) + 1
                if lim.remaining < lim.limit * NEAR_LIMIT_FRACTION:
                    near[lim.id] = None
    allow = sum(n for (effect, _), n in counts.items() if effect == "allow")
    deny = sum(n for (effect, _), n in counts.items() if effect == "deny")
    return Summary(
        tuple((e, r, n) for (e, r), n in counts.items()),
        sum(counts.values()),
        allow,
        deny,
        tuple((i, o, n) for (i, o), n in takes.items()),
        ",".join(near),
        ",".join(dict.fromkeys(i for (i, o) in takes if o == "limited")),
    )


def latency_ms(latency_s: float) -> float:
    """A call's latency as its record gives it: milliseconds, to the microsecond."""
    return round(latency_s * 1e6) / 1000


def effect_counts(response: CheckResponse) -> dict[str, int]:
    counts = {"allow": 0, "deny": 0}
    for r in response.results:
        for d in r.actions.values():
            counts[d.effect] = counts.get(d.effect, 0) + 1
    return counts


def _principal_summary(p: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: p[k] for k in ("id", "tenant", "roles", "scopes")}
    actor = p.get("actor")
    if actor:
        out["actor"] = {k: actor[k] for k in ("id", "type", "scopes")}
    return out


def _results(
    request: CheckRequest | None, masked: Masked | None, response: CheckResponse
) -> list[dict[str, Any]]:
    # Map each (kind, id) the caller sent to its masked id, so a masked resource id never
    # reappears through the decision half of the record.
    ids: dict[tuple[str, str], str] = {}
    if request is not None and masked is not None:
        for orig, m in zip(request.resources, masked.request["resources"]):
            ids[(orig.resource["kind"], orig.resource["id"])] = m["id"]
    out = []
    for r in response.results:
        out.append(
            {
                # A kind or action the scrub masked in the request (a `Bearer …` sent as
                # one) is masked here too; the request half of the record says which.
                "kind": _echo(r.kind, masked),
                "id": ids.get((r.kind, r.id)) or _echo(r.id, masked),
                "actions": _actions(r.actions, masked),
            }
        )
    return out


def _actions(
    actions: Mapping[str, ActionDecision], masked: Masked | None
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, d in actions.items():
        key = _echo(name, masked)
        while key in out:  # two masked actions stay two decisions
            key += "'"
        out[key] = _action(d, masked)
    return out


def _action(d: ActionDecision, masked: Masked | None) -> dict[str, Any]:
    # Explain traces are left out: they repeat the request's values in free text and can be
    # large; `pdp check --explain` reproduces them from the logged request.
    out: dict[str, Any] = {
        "effect": d.effect,
        "policy": d.policy,
        "rule": d.rule,
        "reasons": list(d.reasons),
    }
    if d.obligations:
        out["obligations"] = {k: _redact_deep(v, masked) for k, v in d.obligations.items()}
    if d.message:
        out["message"] = _text(d.message, masked)
    if d.errors:
        out["errors"] = [_text(e, masked) for e in d.errors]
    return out


def _echo(text: str, masked: Masked | None) -> str:
    """A kind, id or action name the request sent: the scrub read it there, and masked it
    whole if it held a credential (`masked.secrets`); with no parsed request, read it now."""
    if masked is None:
        return redact_credentials(text)
    return masked.redact(text) if masked.secrets else text


def _text(text: str, masked: Masked | None) -> str:
    """A string of the decision half of the record: the request's masked values blanked out
    (a message quoting a masked attribute), then any credential left in it (a CEL error or
    message quoting part of an attribute, a policy echoing a header). Runs on every message:
    the pre-filter of `redact_credentials` inline."""
    if masked is not None and masked.secrets:
        text = masked.redact(text)
    if (
        "eyJ" in text
        or " " in text
        or not text.isprintable()
        or "eyA" in text
        or ("ew" in text and ("ewo" in text or "ewk" in text or "ew0" in text))
    ):
        return redact_credentials(text)  # which reads for a scheme's name first
    return text


def _redact_deep(value: Any, masked: Masked | None) -> Any:
    """An obligation's value (any JSON value a policy computed, often from the request) with
    `_text` applied to every string in it."""
    t = type(value)
    if t is str:
        return _text(value, masked)
    if t is dict:
        return {k: _redact_deep(v, masked) for k, v in value.items()}
    if t is list or t is tuple:
        return [_redact_deep(v, masked) for v in value]
    return value


def _decision_time(obs: Observation) -> datetime:
    """The instant the decision was made under: the engine's own, else the call's start."""
    response = obs.response
    if response is not None and response.evaluated_at:
        try:
            return parse_time(response.evaluated_at, "evaluated_at")
        except RequestError:
            pass  # an unexpected format: the call's start time is as good
    return datetime.fromtimestamp(obs.start_time, UTC)


def unix_rfc3339(t: float) -> str:
    """Unix seconds as the record's RFC 3339 timestamp (UTC, microseconds)."""
    return _rfc3339(datetime.fromtimestamp(t, UTC))


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

"""The decision-log record: one JSON object per Check, documented in docs/DECISION_LOG.md.

`build_record` turns an observation into a record (masked) on the writer thread;
`request_from_record` gives back the decision request in the exact JSON shape accepted by
`pdp.model.request.parse_check_request`, so logged traffic can be replayed against a
candidate bundle (`pdp bundle diff --requests decisions.jsonl`).
"""

from __future__ import annotations

import copy
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pdp.errors import RequestError
from pdp.model.decision import ActionDecision, CheckResponse
from pdp.model.request import CheckRequest, parse_time
from pdp.telemetry.masking import Masked, Masker
from pdp.telemetry.observation import Observation
from pdp.telemetry.sinks import _orjson, to_json_bytes

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
        message = masked.redact(obs.error_message) if masked else obs.error_message
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


class CachedEntry(Protocol):
    """A server decision-cache entry (`pdp.server.cache.CachedDecision`), read structurally."""

    @property
    def request(self) -> CheckRequest: ...

    @property
    def response(self) -> CheckResponse: ...


class CacheHit(Protocol):
    """What an observation answered from the server's decision cache offers as `cache_hit`."""

    @property
    def entry(self) -> CachedEntry: ...

    @property
    def decision_id(self) -> str: ...

    @property
    def request_id(self) -> str: ...

    @property
    def evaluated_at(self) -> str: ...


class RecordShape:
    """The parts of a record that every cache hit on one cached decision shares.

    A hit differs from the decision it was cached from only by its decision id, request id,
    time and call details, so the masked request, the principal summary and the decisions are
    built once per cached entry and shared (never mutated: sinks only serialise them) by the
    records of all its hits. Built only when `request_id` is not masked: a masked request id
    is a secret the shared free text was not redacted for.
    """

    __slots__ = (
        "_last_time",
        "_template",
        "bundle",
        "context",
        "decisions",
        "effects",
        "entry",
        "explain",
        "pinned",
        "principal",
        "request_principal",
        "resources",
        "revision",
        "summary",
    )

    def __init__(self, entry: CachedEntry, masker: Masker) -> None:
        request, response = entry.request, entry.response
        self.entry = entry
        masked = masker.mask_request(request_to_json(request))
        req = masked.request
        self.principal = _principal_summary(req["principal"])
        self.bundle = {
            "name": response.bundle.name,
            "version": response.bundle.version,
            "revision": response.bundle.revision,
        }
        self.revision = response.bundle.revision
        self.decisions = _results(request, masked, response)
        self.effects = effect_counts(response)
        self.summary = summarize(response)
        self.request_principal = req["principal"]
        self.resources = req["resources"]
        # Without a time of its own the request is logged with each hit's decision instant.
        self.pinned = request.time is None
        self.context = req["context"]
        self.explain = bool(req.get("explain"))
        self._template: tuple[bytes, Callable[[tuple[bytes, ...]], Any]] | tuple[()] | None = None
        self._last_time: tuple[str, str] | None = None

    def record(
        self, obs: Observation, hit: CacheHit, trace_id: str = "", span_id: str = ""
    ) -> dict[str, Any]:
        """The record `build_record` would make for this hit (same keys, same order)."""
        return self._assemble(*self._values(obs, hit, trace_id, span_id))

    def line(self, obs: Observation, hit: CacheHit, trace_id: str = "", span_id: str = "") -> bytes:
        """`record` as a JSON line, the bytes `to_json_bytes` would make of it."""
        return self.line_of(
            hit.decision_id, obs.start_time, obs.rpc, obs.peer, obs.peer_identity,
            hit.request_id, obs.latency_s, trace_id, span_id, hit.evaluated_at,
        )  # fmt: skip

    def line_of(
        self,
        decision_id: str,
        start_time: float,
        rpc: str,
        peer: str,
        identity: str,
        request_id: str,
        latency_s: float,
        trace_id: str,
        span_id: str,
        evaluated_at: str,
    ) -> bytes:
        """`line` from the hit's and the call's values: the shared parts are serialised once
        per shape, and each call's values are JSON-encoded and put in their places by one `%`
        formatting."""
        template = self._template
        if template is None:
            template = self._template = self._make_template()
        if not template:  # the shared parts contain a slot marker: no template
            return to_json_bytes(
                self._assemble(
                    decision_id, unix_rfc3339(start_time), rpc, peer, identity, request_id,
                    latency_ms(latency_s), trace_id, span_id,
                    self._time_text(evaluated_at, start_time) if self.pinned else None,
                )
            )  # fmt: skip
        text, order = template
        dumps = _orjson.dumps
        repeated = _repeated.get
        return text % order(
            (
                dumps(decision_id),
                json_unix_rfc3339(start_time),
                repeated(rpc) or _json_repeated(rpc),
                repeated(peer) or _json_repeated(peer),
                repeated(identity) or _json_repeated(identity),
                dumps(request_id),
                _latencies.get(micros := round(latency_s * 1e6)) or _latency_json(micros),
                dumps(trace_id),
                dumps(span_id),
                _json_repeated(self._time_text(evaluated_at, start_time)) if self.pinned else b"",
            )
        )

    def _values(self, obs: Observation, hit: CacheHit, trace_id: str, span_id: str) -> _Values:
        return (
            hit.decision_id,
            unix_rfc3339(obs.start_time),
            obs.rpc,
            obs.peer,
            obs.peer_identity,
            hit.request_id,
            latency_ms(obs.latency_s),
            trace_id,
            span_id,
            self._time_text(hit.evaluated_at, obs.start_time) if self.pinned else None,
        )

    def _time_text(self, evaluated_at: str, start_time: float) -> str:
        # Hits on a request that fixed no time repeat the instant their entry was decided at
        # (or each its own): parsed and formatted once per distinct value.
        last = self._last_time
        if last is not None and last[0] == evaluated_at and evaluated_at:
            return last[1]
        text = _rfc3339(_hit_time(evaluated_at, start_time))
        self._last_time = (evaluated_at, text)
        return text

    def _assemble(
        self,
        decision_id: Any,
        timestamp: Any,
        rpc: Any,
        address: Any,
        identity: Any,
        request_id: Any,
        latency_ms: Any,
        trace_id: Any,
        span_id: Any,
        time: Any,
    ) -> dict[str, Any]:
        context = self.context if time is None else {**self.context, "time": time}
        request: dict[str, Any] = {
            "request_id": request_id,
            "principal": self.request_principal,
            "resources": self.resources,
            "context": context,
        }
        if self.explain:
            request["explain"] = True
        return {
            "schema": SCHEMA,
            "decision_id": decision_id,
            "timestamp": timestamp,
            "rpc": rpc,
            "caller": {"address": address, "identity": identity},
            "request_id": request_id,
            "principal": self.principal,
            "bundle": self.bundle,
            "decisions": self.decisions,
            "effects": self.effects,
            "latency_ms": latency_ms,
            "trace_id": trace_id,
            "span_id": span_id,
            "time_pinned": self.pinned,
            "request": request,
        }

    def _make_template(self) -> tuple[bytes, Callable[[tuple[bytes, ...]], Any]] | tuple[()]:
        """The record's JSON as a bytes `%` format with a `%b` where each per-call value goes,
        and what picks those values, in their order, out of `line`'s tuple. Empty when
        orjson is missing or a shared part happens to contain a slot marker (then every line
        is serialised whole)."""
        if _orjson is None:
            return ()
        markers = [_SLOT.format(i) for i in range(_SLOTS)]
        if not self.pinned:
            markers[_SLOTS - 1] = None  # type: ignore[call-overload]
        data = to_json_bytes(self._assemble(*markers))
        tokens = {_orjson.dumps(m): i for i, m in enumerate(markers) if m is not None}
        pattern = re.compile(b"|".join(re.escape(t) for t in tokens))
        parts: list[bytes] = []
        slots: list[int] = []
        at = 0
        for match in pattern.finditer(data):
            parts.append(data[at : match.start()])
            slots.append(tokens[match.group()])
            at = match.end()
        parts.append(data[at:])
        # request_id is written twice (top level and in the request); every other value once.
        expected = sorted([*tokens.values(), _REQUEST_ID_SLOT])
        if sorted(slots) != expected:
            return ()
        text = b"%b".join(part.replace(b"%", b"%%") for part in parts)
        return text, operator.itemgetter(*slots)


def latency_ms(latency_s: float) -> float:
    """A call's latency as its record gives it: milliseconds, to the microsecond."""
    return round(latency_s * 1e6) / 1000


# JSON of latencies by whole microseconds: calls of one service take a few thousand distinct
# values, and `round(x, 3)` (decimal rounding) then a float's JSON cost more than the rest of
# a line's values together. Cleared when full.
_latencies: dict[int, bytes] = {}
_MAX_LATENCIES = 8192


def _latency_json(micros: int) -> bytes:
    text = _orjson.dumps(micros / 1000) if _orjson is not None else str(micros / 1000).encode()
    if len(_latencies) >= _MAX_LATENCIES:
        _latencies.clear()
    _latencies[micros] = text
    return text


# JSON of the string values that repeat from call to call (rpc, peer address, identity, pinned
# time): encoded once each; cleared when full, since every new connection brings a new peer.
_repeated: dict[str, bytes] = {}
_MAX_REPEATED = 4096


def _json_repeated(value: str) -> bytes:
    data = _repeated.get(value)
    if data is None:
        if len(_repeated) >= _MAX_REPEATED:
            _repeated.clear()
        data = _repeated[value] = _orjson.dumps(value)
    return data


# The per-call values of a shared-shape record, in `RecordShape._assemble`'s order.
_Values = tuple[str, str, str, str, str, str, float, str, str, "str | None"]
_SLOTS = 10
_REQUEST_ID_SLOT = 5
# A string no JSON value of a masked request can equal by accident: orjson writes the control
# characters as escapes, and a shared part that still contains one disables the template.
_SLOT = "\x01pdp-record-slot-{}\x01"


def _hit_time(evaluated_at: str, start_time: float) -> datetime:
    if evaluated_at:
        try:
            return parse_time(evaluated_at, "evaluated_at")
        except RequestError:
            pass
    return datetime.fromtimestamp(start_time, UTC)


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
                "kind": r.kind,
                "id": ids.get((r.kind, r.id), r.id if masked is None else masked.redact(r.id)),
                "actions": {a: _action(d, masked) for a, d in r.actions.items()},
            }
        )
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
        out["obligations"] = dict(d.obligations)
    if d.message:
        out["message"] = masked.redact(d.message) if masked else d.message
    if d.errors:
        out["errors"] = [masked.redact(e) if masked else e for e in d.errors]
    return out


def _decision_time(obs: Observation) -> datetime:
    """The instant the decision was made under: the engine's own, else the call's start."""
    response = obs.response
    if response is not None and response.evaluated_at:
        try:
            return parse_time(response.evaluated_at, "evaluated_at")
        except RequestError:
            pass  # an unexpected format: the call's start time is as good
    return datetime.fromtimestamp(obs.start_time, UTC)


# (unix second, `"YYYY-MM-DDTHH:MM:SS` in UTC): records of one second share the formatting.
_second: tuple[float, bytes] = (-1.0, b"")
_modf = math.modf


def json_unix_rfc3339(t: float) -> bytes:
    """`unix_rfc3339(t)` as a JSON string, the bytes a record line holds."""
    global _second
    # datetime.fromtimestamp's own rounding: the fraction to microseconds, half to even.
    frac, whole = _modf(t)
    micros = round(frac * 1e6)
    if not 0 <= micros < 1_000_000:
        if micros >= 1_000_000:
            whole, micros = whole + 1, micros - 1_000_000
        else:
            whole, micros = whole - 1, micros + 1_000_000
    cached = _second
    if cached[0] != whole:  # compared as floats: int() only once a second
        text = datetime.fromtimestamp(int(whole), UTC).strftime('"%Y-%m-%dT%H:%M:%S')
        cached = _second = (whole, text.encode())
    return b'%b.%06dZ"' % (cached[1], micros)


def unix_rfc3339(t: float) -> str:
    """`_rfc3339(datetime.fromtimestamp(t, UTC))`, formatting each second once: the date
    and time functions were a visible part of a record's cost."""
    return json_unix_rfc3339(t)[1:-1].decode()


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

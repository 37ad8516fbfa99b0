from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.model.request import CheckRequest, parse_check_request
from pdp.telemetry import MASKED, SCHEMA, Masker, build_record, request_from_record
from pdp.telemetry.decision_log import RecordShape, unix_rfc3339
from pdp.telemetry.sinks import to_json_bytes

from .conftest import TOKEN, ObsFactory, observation, request_dict, response_for


def test_record_fields(make_obs: ObsFactory) -> None:
    obs = make_obs()
    record = build_record(obs, Masker(), trace_id="t" * 32, span_id="s" * 16)
    assert record["schema"] == SCHEMA
    assert record["decision_id"] == "dec-1"
    assert record["timestamp"].endswith("Z")
    assert record["caller"] == {
        "address": "ipv4:127.0.0.1:40000",
        "identity": "spiffe://example.org/gateway",
    }
    assert record["principal"] == {
        "id": "alice",
        "tenant": "acme",
        "roles": ["editor"],
        "scopes": ["docs:read", "docs:write"],
        "actor": {"id": "agent-7", "type": "ai_agent", "scopes": ["docs:read"]},
    }
    assert record["bundle"] == {"name": "platform", "version": "1.4.0", "revision": "abc123"}
    assert record["effects"] == {"allow": 2, "deny": 1}
    doc1 = record["decisions"][0]
    assert doc1["kind"] == "document" and doc1["id"] == "doc-1"
    assert doc1["actions"]["read"] == {
        "effect": "allow",
        "policy": "document",
        "rule": "readers",
        "reasons": ["reader"],
        "obligations": {"watermark": True},
    }
    assert doc1["actions"]["delete"]["reasons"] == ["missing_scope"]
    assert record["latency_ms"] == 0.42
    assert record["trace_id"] == "t" * 32
    assert "error" not in record


def test_request_replays_through_parse_check_request(make_obs: ObsFactory) -> None:
    obs = make_obs()
    line = json.dumps(build_record(obs, Masker()))
    replay = parse_check_request(request_from_record(json.loads(line)))
    assert replay.principal["id"] == "alice"
    assert replay.principal["actor"]["id"] == "agent-7"
    assert [(r.kind, r.id, r.actions) for r in replay.resources] == [
        ("document", "doc-1", ("read", "delete")),
        ("document", "doc-2", ("read",)),
    ]
    assert replay.context["attr"] == {"mfa": True, "auth_time": None}
    # The caller sent no time: the decision's own instant is pinned for the replay.
    assert replay.time is not None and replay.time.isoformat() == "2026-03-01T12:00:00+00:00"
    unpinned = request_from_record(json.loads(line), pin_time=False)
    assert "time" not in unpinned["context"]


def test_callers_time_is_kept(make_obs: ObsFactory) -> None:
    req = request_dict()
    req["context"]["time"] = "2025-01-02T03:04:05Z"
    record = build_record(make_obs(request=req), Masker())
    assert record["time_pinned"] is False
    assert record["request"]["context"]["time"] == "2025-01-02T03:04:05.000000Z"
    assert "time" in request_from_record(record, pin_time=False)["context"]


def test_masked_values_reach_no_part_of_the_record(make_obs: ObsFactory) -> None:
    masker = Masker(["principal.attr.email", "resources[*].attr.ssn", "resources[*].id"])
    obs = make_obs(error_code="", error_message="")
    text = json.dumps(build_record(obs, masker))
    for secret in (TOKEN, "alice@acme.example", "123-45-6789", "987-65-4321", "doc-1", "doc-2"):
        assert secret not in text
    assert "authorization" not in text.lower()
    record = json.loads(text)
    assert [r["id"] for r in record["decisions"]] == [MASKED, MASKED]
    assert MASKED in record["decisions"][0]["actions"]["delete"]["message"]


def test_error_record_without_response(make_obs: ObsFactory) -> None:
    obs = make_obs()
    failed = dataclasses.replace(
        obs,
        response=None,
        error_code="INVALID_ARGUMENT",
        error_message="context.ip: `alice@acme.example` is not an IP address",
    )
    record = build_record(failed, Masker(["principal.attr.email"]))
    assert record["error"] == {
        "code": "INVALID_ARGUMENT",
        "message": f"context.ip: `{MASKED}` is not an IP address",
    }
    assert record["decision_id"] == ""
    assert "decisions" not in record and "request" in record


def test_record_without_request_has_no_request_key(make_obs: ObsFactory) -> None:
    obs = make_obs()
    failed = dataclasses.replace(obs, request=None, response=None, error_code="INVALID_ARGUMENT")
    record = build_record(failed, Masker())
    assert "request" not in record
    with pytest.raises(ValueError, match="no `request`"):
        request_from_record(record)


def test_record_is_not_mistaken_for_a_plain_request(make_obs: ObsFactory) -> None:
    # `pdp bundle diff --requests` reads a line as a plain request when it has `principal`
    # and `resources` at the top, and as a wrapped one when it has a `request` object: a
    # decision-log record must only ever match the second.
    record = build_record(make_obs(), Masker())
    assert "resources" not in record
    assert isinstance(record["request"], dict)


def cache_hit(req: CheckRequest, *, decision_id: str, request_id: str) -> tuple[Any, Any]:
    """A hit on the entry cached for `req`, and the observation of that hit's own call."""
    resp = response_for(req, "dec-0")
    hit = SimpleNamespace(
        entry=SimpleNamespace(request=req, response=resp),
        decision_id=decision_id,
        request_id=request_id,
        evaluated_at="2026-03-01T12:00:05.250000+00:00",
    )
    obs = observation(
        dataclasses.replace(req, request_id=request_id),
        dataclasses.replace(
            resp, decision_id=decision_id, request_id=request_id, evaluated_at=hit.evaluated_at
        ),
    )
    return hit, obs


@pytest.mark.parametrize("pinned", [True, False])
@pytest.mark.parametrize("paths", [(), ("principal.attr.email", "resources[*].id", "context.ip")])
def test_cache_hit_record_from_shared_shape_equals_the_full_build(
    pinned: bool, paths: tuple[str, ...]
) -> None:
    # A cache hit's record is assembled from parts shared by every hit on the cached entry;
    # it must be byte for byte the record built from the hit's own request and response.
    overrides = {} if pinned else {"context": {"ip": "10.1.2.3", "time": "2026-03-01T11:00:00Z"}}
    req = parse_check_request(request_dict(**overrides))
    masker = Masker(paths)
    hit, obs = cache_hit(req, decision_id="dec-9", request_id="req-9")
    shape = RecordShape(hit.entry, masker)  # type: ignore[arg-type]
    for _ in range(2):  # the shared parts survive being serialised
        got = shape.record(obs, hit, trace_id="t" * 32, span_id="s" * 16)  # type: ignore[arg-type]
        want = build_record(obs, masker, trace_id="t" * 32, span_id="s" * 16)
        assert json.dumps(got) == json.dumps(want)
        # The templated JSON line is the line a sink would write for the full record.
        line = shape.line(obs, hit, trace_id="t" * 32, span_id="s" * 16)  # type: ignore[arg-type]
        assert line == to_json_bytes(want)
    assert shape.summary.allow == want["effects"]["allow"]
    assert shape.summary.deny == want["effects"]["deny"]
    assert Masker(["request_id"]).masks_request_id and not masker.masks_request_id


def test_shared_shape_line_without_template_when_data_holds_a_slot_marker() -> None:
    # A request whose own data spells a slot marker must not be cut at it: the line is then
    # serialised whole, and still equals the full record's.
    marker = "\x01pdp-record-slot-0\x01"
    req = parse_check_request(
        request_dict(principal={"id": "alice", "tenant": "acme", "attr": {"note": marker}})
    )
    hit, obs = cache_hit(req, decision_id="dec-1", request_id='req-"quoted"')
    shape = RecordShape(hit.entry, Masker())  # type: ignore[arg-type]
    line = shape.line(obs, hit, trace_id="t", span_id="s")  # type: ignore[arg-type]
    assert line == to_json_bytes(build_record(obs, Masker(), trace_id="t", span_id="s"))
    assert json.loads(line)["principal"]["id"] == "alice"
    assert json.loads(line)["request_id"] == 'req-"quoted"'


def test_shared_shape_line_keeps_percent_signs_in_shared_and_per_call_values() -> None:
    # The line is a bytes `%` format: a `%` in the shared parts (escaped in the template) and
    # in this call's values (inserted as they are) must come out unchanged.
    req = parse_check_request(
        request_dict(principal={"id": "al%bice", "tenant": "100%", "attr": {"p": "%s%%%b"}})
    )
    hit, obs = cache_hit(req, decision_id="dec-%b", request_id="req-%s-100%")
    shape = RecordShape(hit.entry, Masker())  # type: ignore[arg-type]
    line = shape.line(obs, hit, trace_id="t%", span_id="%s")  # type: ignore[arg-type]
    assert line == to_json_bytes(build_record(obs, Masker(), trace_id="t%", span_id="%s"))
    record = json.loads(line)
    assert record["principal"]["id"] == "al%bice" and record["request_id"] == "req-%s-100%"


@settings(max_examples=3000, deadline=None)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_unix_timestamps_format_as_datetime_does(t: float) -> None:
    want = datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")
    assert unix_rfc3339(t) == want.replace("+00:00", "Z")


_LATENCY_SHAPE: list[Any] = []


@settings(max_examples=2000, deadline=None)
@given(
    st.floats(min_value=0, max_value=3600, allow_nan=False),
    st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
)
def test_shared_shape_lines_carry_the_latency_and_time_the_full_build_does(
    latency_s: float, start_time: float
) -> None:
    # The line takes a latency's JSON from a cache by whole microseconds, and its timestamp
    # from a cache by second: across values (and repeats, since the shape is kept between
    # examples), every line must equal the record built and serialised in full.
    if not _LATENCY_SHAPE:
        req = parse_check_request(request_dict())
        hit, _ = cache_hit(req, decision_id="dec-1", request_id="req-1")
        _LATENCY_SHAPE.append((hit, RecordShape(hit.entry, Masker())))  # type: ignore[arg-type]
    hit, shape = _LATENCY_SHAPE[0]
    obs = observation(
        dataclasses.replace(hit.entry.request, request_id=hit.request_id),
        dataclasses.replace(
            hit.entry.response,
            decision_id=hit.decision_id,
            request_id=hit.request_id,
            evaluated_at=hit.evaluated_at,
        ),
        latency_s=latency_s,
        start_time=start_time,
    )
    line = shape.line(obs, hit, trace_id="t" * 32, span_id="s" * 16)
    assert line == to_json_bytes(build_record(obs, Masker(), trace_id="t" * 32, span_id="s" * 16))
    assert json.loads(line)["latency_ms"] == round(latency_s * 1e6) / 1000

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.model.request import parse_check_request
from pdp.telemetry import MASKED, SCHEMA, Masker, build_record, request_from_record
from pdp.telemetry.decision_log import unix_rfc3339

from .conftest import TOKEN, ObsFactory, request_dict


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


def test_a_masked_request_id_reaches_no_part_of_the_record(make_obs: ObsFactory) -> None:
    obs = make_obs()
    record = build_record(obs, Masker(["request_id"]))
    assert record["request_id"] == MASKED and record["request"]["request_id"] == MASKED
    assert "req-1" not in json.dumps(record)
    assert record["decision_id"] == "dec-1"  # the server's own id stays


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


@settings(max_examples=3000, deadline=None)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_unix_timestamps_format_as_datetime_does(t: float) -> None:
    want = datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")
    assert unix_rfc3339(t) == want.replace("+00:00", "Z")

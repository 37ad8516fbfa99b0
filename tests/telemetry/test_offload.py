"""The telemetry writer process: observations cross the pipe as the server's own bytes, records
come out masked and complete, drops are counted, shutdown loses nothing, metrics cross too."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from pdp.client._convert import request_to_proto
from pdp.engine.holder import EngineHolder
from pdp.model.decision import BundleInfo
from pdp.model.request import DEFAULT_LIMITS
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.convert import request_from_proto, response_to_proto
from pdp.server.wire import (
    PROPAGATION_KEYS,
    check_item,
    decode_observation,
    encode_observation,
    hit_item,
    propagation,
)
from pdp.telemetry import TelemetryOptions
from pdp.telemetry.offload import OffloadObserver, WriterProcessError

from .conftest import TOKEN, TRACE_ID, TRACEPARENT, request_dict, response_for

CHILD = [sys.executable, "-m", "pdp.cli.telemetry_writer"]
METADATA = (
    ("traceparent", TRACEPARENT),
    ("authorization", f"Bearer {TOKEN}"),
    ("user-agent", "grpc-python/1.60"),
)


def wire_obs(decision_id: str = "dec-1", *, failed: bool = False) -> SimpleNamespace:
    """What the decision service's observation offers: its request and reply bytes."""
    raw = request_dict()
    data = request_to_proto(
        raw["principal"], raw["resources"], raw["context"], request_id=raw["request_id"]
    ).SerializeToString()
    request = request_from_proto(pb.CheckRequest.FromString(data), DEFAULT_LIMITS)
    reply = response_to_proto(response_for(request, decision_id)).SerializeToString()
    return SimpleNamespace(
        rpc="/pdp.v1.DecisionService/Check",
        wire_request=data,
        wire_reply=None if failed else reply,
        error_code="UNAVAILABLE" if failed else "",
        error_message="no bundle loaded" if failed else "",
        peer="ipv4:127.0.0.1:40000",
        peer_identity="spiffe://example.org/gateway",
        metadata=METADATA,
        start_time=time.time(),
        latency_s=0.0004,
    )


def item_of(obs: SimpleNamespace) -> tuple[Any, ...]:
    """The wire item the decision service hands a wire-only observer for this call."""
    meta = propagation(obs.metadata)
    hit = getattr(obs, "cache_hit", None)
    if hit is not None:
        entry = hit.entry
        return hit_item(
            obs.rpc, entry.key, entry.body, hit.decision_id, hit.request_id, hit.evaluated_at,
            obs.peer, obs.peer_identity, meta, obs.start_time, obs.latency_s,
        )  # fmt: skip
    return check_item(
        obs.rpc, obs.wire_request, obs.wire_reply, obs.error_code, obs.error_message,
        obs.peer, obs.peer_identity, meta, obs.start_time, obs.latency_s,
    )  # fmt: skip


def test_the_wire_form_rebuilds_the_servers_request_and_response() -> None:
    obs = wire_obs()
    item = item_of(obs)
    back = decode_observation(item)
    request = request_from_proto(pb.CheckRequest.FromString(obs.wire_request), DEFAULT_LIMITS)
    assert back.request == request
    assert back.response == response_for(request, "dec-1")
    # Same action order as the engine's answer, though a protobuf map does not keep it.
    assert [list(r.actions) for r in back.response.results] == [["read", "delete"], ["read"]]
    assert back.metadata == (("traceparent", TRACEPARENT),)
    assert (back.peer, back.peer_identity, back.latency_s) == (
        obs.peer,
        obs.peer_identity,
        obs.latency_s,
    )


def test_a_failed_call_crosses_without_request_or_response() -> None:
    back = decode_observation(item_of(wire_obs(failed=True)))
    assert back.request is None and back.response is None
    assert (back.error_code, back.error_message) == ("UNAVAILABLE", "no bundle loaded")


def test_other_observations_cross_whole(make_obs: Any) -> None:
    obs = make_obs()  # as the ext_authz servicer makes them: model objects, no bytes
    back = decode_observation(encode_observation(obs))
    assert back.request == obs.request and back.response == obs.response
    assert back.metadata == (("traceparent", TRACEPARENT),)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_record_is_written_masked_and_nothing_is_lost_on_close(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    options = TelemetryOptions(
        decision_log=(str(log),), mask=("principal.attr.email",), otel=False, queue_size=100_000
    )
    observer = OffloadObserver(options, encode=encode_observation, child=CHILD)
    n = 3000
    for i in range(n):
        observer.on_wire(item_of(wire_obs(f"dec-{i}")))
    observer.close()  # at once: whatever is still queued or in the pipe must be written
    got = records(log)
    assert [r["decision_id"] for r in got] == [f"dec-{i}" for i in range(n)]
    assert observer.dropped == 0
    text = log.read_text()
    assert TOKEN not in text and "alice@acme.example" not in text
    assert got[0]["trace_id"] == TRACE_ID
    assert got[0]["caller"] == {
        "address": "ipv4:127.0.0.1:40000",
        "identity": "spiffe://example.org/gateway",
    }


def test_a_full_queue_drops_and_counts_and_the_writer_warns(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "decisions.jsonl"
    options = TelemetryOptions(decision_log=(str(log),), otel=False, queue_size=1)
    observer = OffloadObserver(options, encode=encode_observation, child=CHILD)
    n = 2000
    for i in range(n):
        observer.on_wire(item_of(wire_obs(f"dec-{i}")))  # never blocks: appends or counts a drop
    observer.close()
    written = len(records(log))
    assert observer.dropped > 0
    assert written + observer.dropped == n
    err = capfd.readouterr().err
    assert f"total dropped {observer.dropped}" in err, err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("pdp_bundle_activations_total", "pdp_bundle_failures_total"):
                out[s.name] = out.get(s.name, 0) + s.value
            if s.name == "pdp_decisions_total":
                out[f"decisions:{s.labels['effect']}"] = s.value
    return out


def test_decision_and_bundle_metrics_are_kept_by_the_writer_process() -> None:
    port = free_port()
    options = TelemetryOptions(otel=False, prometheus=f"127.0.0.1:{port}")
    observer = OffloadObserver(options, encode=encode_observation, child=CHILD)
    try:
        holder = EngineHolder()
        observer.watch_holder(holder)
        holder.swap(SimpleNamespace(bundle=BundleInfo("platform", "1.0.0", "r1")))  # type: ignore[arg-type]
        holder.record_failure("signature refused")
        for i in range(3):
            observer.on_wire(item_of(wire_obs(f"dec-{i}")))
        want = {
            "pdp_bundle_activations_total": 1,
            "pdp_bundle_failures_total": 1,
            "decisions:allow": 6,  # 2 reads per call
            "decisions:deny": 3,
        }
        deadline = time.monotonic() + 10
        got = scrape(port)
        while got != want and time.monotonic() < deadline:
            time.sleep(0.05)
            got = scrape(port)
        assert got == want
    finally:
        observer.close()


def test_a_writer_that_cannot_open_its_sink_fails_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "decisions.jsonl"  # a file where a directory should be
    options = TelemetryOptions(decision_log=(str(bad),), otel=False)
    with pytest.raises(WriterProcessError, match="a-file"):
        OffloadObserver(options, encode=encode_observation, child=CHILD)


def hit_obs(decision_id: str, request_id: str) -> SimpleNamespace:
    """A decision-cache hit as the decision service observes it: the entry's cache key (the
    request bytes without their id) and cached reply body, and this hit's own ids."""
    obs = wire_obs()
    request = request_from_proto(pb.CheckRequest.FromString(obs.wire_request), DEFAULT_LIMITS)
    key = pb.CheckRequest.FromString(obs.wire_request)
    key.ClearField("request_id")
    body = response_to_proto(response_for(request, ""))
    body.ClearField("request_id")
    obs.cache_hit = SimpleNamespace(
        entry=SimpleNamespace(key=key.SerializeToString(), body=body.SerializeToString()),
        decision_id=decision_id,
        request_id=request_id,
        evaluated_at="2026-03-01T12:00:00+00:00",
    )
    return obs


def test_cache_hits_cross_as_the_entry_and_their_own_ids() -> None:
    first = decode_observation(item_of(hit_obs("dec-a", "req-a")))
    second = decode_observation(item_of(hit_obs("dec-b", "req-b")))
    raw = wire_obs()
    request = request_from_proto(pb.CheckRequest.FromString(raw.wire_request), DEFAULT_LIMITS)
    assert second.request == dataclasses.replace(request, request_id="req-b")
    assert second.response == response_for(second.request, "dec-b")
    assert first.response.decision_id == "dec-a" and first.request.request_id == "req-a"


def test_hit_records_carry_each_hits_ids(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    options = TelemetryOptions(decision_log=(str(log),), otel=False)
    observer = OffloadObserver(options, encode=encode_observation, child=CHILD)
    for i in range(5):
        observer.on_wire(item_of(hit_obs(f"dec-{i}", f"req-{i}")))
    observer.close()
    got = records(log)
    assert [(r["decision_id"], r["request_id"]) for r in got] == [
        (f"dec-{i}", f"req-{i}") for i in range(5)
    ]
    assert TOKEN not in log.read_text()
    assert got[0]["decisions"][0]["actions"]["read"]["effect"] == "allow"


def test_a_dead_writer_never_blocks_or_fails_decisions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = TelemetryOptions(
        decision_log=(str(tmp_path / "decisions.jsonl"),), otel=False, queue_size=50
    )
    observer = OffloadObserver(options, encode=encode_observation, child=CHILD)
    observer._proc.kill()  # the writer process dies under the server
    observer._proc.wait()
    try:
        for i in range(500):
            # Returns whatever happens to the writer: a call that blocked on the dead process
            # would hang the test (pytest-timeout), so returning is the assertion.
            observer.on_wire(item_of(wire_obs(f"dec-{i}")))
            time.sleep(0.0005)
        deadline = time.monotonic() + 10
        while "telemetry writer process is gone" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        assert observer.pending <= 50 and observer.dropped > 0  # bounded, and counted
    finally:
        observer.close()


def test_the_server_sends_exactly_the_keys_the_propagator_reads() -> None:
    from pdp.server import wire
    from pdp.telemetry import tracing

    assert wire.PROPAGATION_KEYS == tracing.PROPAGATION_KEYS


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["traceparent", "tracestate", "baggage", "user-agent", "x-trace"]),
            st.text(max_size=8),
        ),
        max_size=5,
    )
)
def test_only_propagation_entries_cross_in_their_order(metadata: list[tuple[str, str]]) -> None:
    want = tuple((k, v) for k, v in metadata if k in PROPAGATION_KEYS)
    assert propagation(tuple(metadata)) == want
    assert type(propagation(tuple(metadata))) is tuple


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000_000),
    st.floats(min_value=0, max_value=10, allow_nan=False),
    st.integers(min_value=1, max_value=1_000_000),
)
def test_the_feeder_sleeps_as_long_as_a_quarter_of_the_queue_takes_to_fill(
    drained: int, elapsed_s: float, capacity: int
) -> None:
    from pdp.telemetry import offload

    interval = offload.poll_interval(drained, elapsed_s, capacity)
    assert offload.MIN_POLL_INTERVAL_S <= interval <= offload.MAX_POLL_INTERVAL_S
    if drained == 0 or elapsed_s == 0:
        assert interval == offload.MAX_POLL_INTERVAL_S  # nothing seen: the longest sleep
        return
    rate = drained / elapsed_s
    fills = rate * interval  # observations arriving while it sleeps, at the same rate
    if offload.MIN_POLL_INTERVAL_S < interval < offload.MAX_POLL_INTERVAL_S:
        assert fills == pytest.approx(offload.POLL_FILL * capacity)
    elif interval == offload.MAX_POLL_INTERVAL_S:
        assert fills <= offload.POLL_FILL * capacity * (1 + 1e-9)
    else:  # so fast that even the shortest sleep lets more in
        assert fills >= offload.POLL_FILL * capacity * (1 - 1e-9)
    # Twice the rate never earns a longer sleep.
    assert offload.poll_interval(2 * drained, elapsed_s, capacity) <= interval


def test_a_busy_feeder_looks_rarely_but_keeps_the_queue_from_filling() -> None:
    from pdp.telemetry import offload

    # 8,000 calls a second into the default 10,000-call queue: 0.31 s between looks, about
    # 2,500 calls queued at most; idle, half a second.
    assert offload.poll_interval(800, 0.1, 10_000) == pytest.approx(0.3125)
    assert offload.poll_interval(0, 0.5, 10_000) == offload.MAX_POLL_INTERVAL_S
    assert offload.poll_interval(100_000, 0.1, 10_000) == offload.MIN_POLL_INTERVAL_S


def test_the_feeder_never_sleeps_longer_than_the_configured_delay() -> None:
    from pdp.telemetry import offload

    assert offload.poll_interval(0, 0.5, 10_000, 0.05) == 0.05  # idle: the configured longest
    assert offload.poll_interval(800, 0.1, 10_000, 0.05) == 0.05
    assert offload.poll_interval(100_000, 0.1, 10_000, 0.05) == offload.MIN_POLL_INTERVAL_S

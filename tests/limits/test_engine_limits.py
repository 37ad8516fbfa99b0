"""Limits decided with the rest, in process: a deny never takes quota, errors deny, stores fail
as each limit says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.engine.counters import MemoryCounters
from pdp.limits import counters_from_url
from pdp.limits.redis import RedisCounters
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

from ._procs import free_port
from .conftest import LIMITED, write_policies

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy_set(tmp_path_factory: pytest.TempPathFactory):
    root = write_policies(tmp_path_factory.mktemp("limits"), LIMITED)
    return compile_policy_set(load_policy_dir(root))


def request(action: str, pid: str = "ann", *, tenant: str = "acme", at: datetime = T0, **ctx):
    return parse_check_request(
        {
            "principal": {"id": pid, "tenant": tenant, "roles": ["member"]},
            "resources": [{"kind": "note", "id": "n1", "tenant": tenant, "actions": [action]}],
            "context": {"time": at.isoformat(), **ctx},
        }
    )


def decide(engine: Engine, req) -> tuple[str, str, tuple[str, ...]]:
    d = engine.check(req).results[0].actions[req.resources[0].actions[0]]
    return d.effect, d.rule, d.reasons


def test_the_sixth_read_of_a_day_is_rate_limited(policy_set) -> None:
    engine = Engine(policy_set)
    for i in range(5):
        d = engine.check(request("read", at=T0 + timedelta(seconds=i))).results[0].actions["read"]
        assert (d.effect, d.rule, d.reasons) == ("allow", "members", ())
        # An allowed action reports the bucket it took from.
        assert [(s.id, s.remaining, s.exceeded) for s in d.limits] == [
            ("per-user-reads", 4 - i, False)
        ]
    response = engine.check(request("read", at=T0 + timedelta(seconds=5)))
    d = response.results[0].actions["read"]
    assert (d.effect, d.policy, d.rule, d.reasons) == (
        "deny",
        "limits",
        "per-user-reads",
        ("rate_limited",),
    )
    (status,) = d.limits
    # 5 a day: one unit flows back every 17,280 s; five seconds in, 0.0003 units are back.
    assert (status.id, status.policy, status.limit, status.window_s) == (
        "per-user-reads",
        "limits",
        5,
        86400.0,
    )
    assert (status.remaining, status.exceeded, status.retry_after_s) == (0, True, 17275)
    assert status.reset_s == 86400 - 5
    assert d.obligations == {}
    assert response.uses_quota
    # Another principal has a bucket of its own.
    assert decide(engine, request("read", "bob"))[0] == "allow"


def test_a_denied_call_never_takes_quota(policy_set) -> None:
    engine = Engine(policy_set)
    for _ in range(50):
        assert decide(engine, request("read", "mallory")) == ("deny", "blocked", ("blocked",))
    # mallory's own bucket is untouched: were denies counted, this would be rate limited.
    engine2 = Engine(compile_policy_set_without_block(policy_set), counters=engine.counters)
    for _ in range(5):
        assert decide(engine2, request("read", "mallory"))[0] == "allow"


def compile_policy_set_without_block(policy_set):
    """The same limits, with the blocking deny rule gone (a bundle swap that unblocks mallory)."""
    import dataclasses

    kind = policy_set.kinds["note"]
    actions = {name: dataclasses.replace(a, denies=()) for name, a in kind.actions.items()}
    return dataclasses.replace(
        policy_set, kinds={"note": dataclasses.replace(kind, actions=actions)}
    )


def test_costs_come_from_the_request_and_are_all_or_nothing(policy_set) -> None:
    engine = Engine(policy_set)
    assert decide(engine, request("write", attr={"units": 7}))[0] == "allow"
    # 7 of 10 used: 4 does not fit, and is not taken, so 3 still does.
    assert decide(engine, request("write", attr={"units": 4}))[2] == ("rate_limited",)
    assert decide(engine, request("write", attr={"units": 3}))[0] == "allow"
    assert decide(engine, request("write", attr={"units": 1}))[2] == ("rate_limited",)
    # Cost 0 takes nothing and is allowed even with an empty bucket.
    assert decide(engine, request("write", attr={"units": 0}))[0] == "allow"


@pytest.mark.parametrize(
    "attr",
    [{}, {"units": -1}, {"units": 1.5}, {"units": "3"}, {"units": True}, {"units": None}],
    ids=["missing", "negative", "fraction", "string", "bool", "null"],
)
def test_a_cost_that_cannot_be_evaluated_denies(policy_set, attr) -> None:
    engine = Engine(policy_set)
    d = engine.check(request("write", attr=attr)).results[0].actions["write"]
    assert (d.effect, d.reasons) == ("deny", ("rate_limit_error",))
    assert d.errors and d.errors[0].startswith("limit `limits/tenant-write-units`: ")


def test_a_key_that_cannot_be_evaluated_denies(tmp_path: Path) -> None:
    files = dict(LIMITED)
    files["limits.yaml"] = files["limits.yaml"].replace("key: P.id", "key: P.attr.team")
    engine = Engine(compile_policy_set(load_policy_dir(write_policies(tmp_path, files))))
    d = engine.check(request("read")).results[0].actions["read"]
    assert (d.effect, d.reasons) == ("deny", ("rate_limit_error",))


def test_an_unreachable_store_denies_unless_the_limit_fails_open(policy_set) -> None:
    dead = RedisCounters.from_url(f"redis://127.0.0.1:{free_port()}/0")
    engine = Engine(policy_set, counters=dead)
    d = engine.check(request("read")).results[0].actions["read"]
    assert (d.effect, d.rule, d.reasons) == ("deny", "per-user-reads", ("rate_limit_unavailable",))
    assert d.errors[0].startswith("counter store: redis: ")
    # per-ip-archive says `onStoreError: allow`.
    d = engine.check(request("archive", ip="10.0.0.1")).results[0].actions["archive"]
    assert (d.effect, d.rule) == ("allow", "members")


def test_redis_counters_enforce_the_same_limits(policy_set, redis_url: str) -> None:
    engine = Engine(policy_set, counters=counters_from_url(redis_url))
    outcomes = [decide(engine, request("read", "rita"))[0] for _ in range(7)]
    assert outcomes == ["allow"] * 5 + ["deny"] * 2


def test_quota_outlives_a_bundle_swap(policy_set) -> None:
    holder = EngineHolder(counters=MemoryCounters())
    holder.swap(Engine(policy_set))
    for _ in range(5):
        assert decide(holder.require(), request("read", "sam"))[0] == "allow"
    holder.swap(Engine(policy_set))  # a new bundle: the same counters
    assert decide(holder.require(), request("read", "sam"))[2] == ("rate_limited",)


def test_batches_count_every_allowed_action(policy_set) -> None:
    engine = Engine(policy_set)
    req = parse_check_request(
        {
            "principal": {"id": "ann", "tenant": "acme", "roles": ["member"]},
            "resources": [
                {"kind": "note", "id": f"n{i}", "tenant": "acme", "actions": ["read"]}
                for i in range(7)
            ],
            "context": {"time": T0.isoformat()},
        }
    )
    effects = [r.actions["read"].effect for r in engine.check(req).results]
    assert effects == ["allow"] * 5 + ["deny"] * 2


def test_limit_statuses_cross_the_wire_unchanged(policy_set) -> None:
    from pdp.server.convert import response_from_proto, response_to_proto

    engine = Engine(policy_set)
    responses = [engine.check(request("read", "wes")) for _ in range(6)]
    for response in (responses[0], responses[-1]):
        back = response_from_proto(response_to_proto(response))
        assert back.results[0].actions["read"].limits == response.results[0].actions["read"].limits
    assert responses[-1].results[0].actions["read"].limits[0].exceeded


def test_an_unreachable_store_logs_one_line_not_one_per_call(
    policy_set, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from pdp.engine import limits
    from pdp.ratelog import RateLimitedLog

    fresh = RateLimitedLog(logging.getLogger("pdp.limits"), interval=3600)
    monkeypatch.setattr(limits, "LIMITS_LOG", fresh)
    dead = RedisCounters.from_url(f"redis://127.0.0.1:{free_port()}/0")
    engine = Engine(policy_set, counters=dead)
    with caplog.at_level(logging.WARNING, logger="pdp.limits"):
        effects = {decide(engine, request("read"))[0] for _ in range(20)}
    assert effects == {"deny"}
    lines = [r.getMessage() for r in caplog.records if r.name == "pdp.limits"]
    assert len(lines) == 1 and lines[0].startswith("rate-limit counters unavailable: redis: ")
    assert not any(r.exc_info for r in caplog.records)

"""Bucket names are unambiguous: no `/`, `:` or `#` in a policy id, a limit id or a key value,
and no choice between a list and a string, lets two limits or two keys share a bucket (in
memory, in the supervisor, in Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from pdp.engine import Engine, compile_policy_set
from pdp.engine.counters import Counters, MemoryCounters
from pdp.engine.limits import CompiledLimit, bucket_key
from pdp.limits import counters_from_url
from pdp.limits.redis import KEY_PREFIX
from pdp.limits.supervised import CounterServer, SupervisedCounters
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

from .conftest import write_policies

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).isoformat()

NOTES = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: []}
    write: {scopes: []}
  rules:
    - {id: members, actions: ["*"], effect: allow, roles: [member]}
"""


def limit_policy(policy: str, limit: str, action: str, key: str) -> str:
    return f"""
apiVersion: pdp/v1
kind: LimitPolicy
metadata: {{id: "{policy}"}}
spec:
  limits:
    - {{id: "{limit}", resources: [note], actions: [{action}], key: '{key}', limit: 1, per: 1d}}
"""


# Pairs of (policy, limit, value) whose old names `policy/limit:value` were one string.
COLLIDING = [
    pytest.param(("a/b", "c", "x"), ("a", "b/c", "x"), id="slash-in-ids"),
    pytest.param(("a", "b:x", "y"), ("a", "b", "x:y"), id="colon-in-limit-and-value"),
    pytest.param(("p", "l", ["a", "b"]), ("p", "l", '["a","b"]'), id="list-vs-its-json-text"),
    pytest.param(("p", "l#x", "v"), ("p", "l", "#x:v"), id="hash-in-ids"),
]


def _limit(policy: str, limit: str) -> CompiledLimit:
    return CompiledLimit(policy, limit, lambda _: None, 1, 1.0, 1)


@pytest.mark.parametrize(("one", "two"), COLLIDING)
def test_ambiguous_parts_name_different_buckets(one, two) -> None:
    assert bucket_key(_limit(*one[:2]), one[2]) != bucket_key(_limit(*two[:2]), two[2])


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (["a:b", "c"], ["a", "b:c"]),
        (["a,b"], ["a", "b"]),
        (["a"], "a"),
        ([], ""),
        ("x" * 100, "x" * 99 + "y"),  # past the shown length: distinct digests
    ],
)
def test_key_values_of_one_limit_never_share_a_bucket(one, two) -> None:
    assert bucket_key(_limit("p", "l"), one) != bucket_key(_limit("p", "l"), two)


def test_an_int_and_its_text_share_a_bucket() -> None:
    # On purpose: a caller must not get a second quota by sending 5 instead of "5".
    limit = _limit("p", "l")
    assert bucket_key(limit, 5) == bucket_key(limit, "5")
    assert bucket_key(limit, [5, "a"]) == bucket_key(limit, ["5", "a"])


def test_names_stay_bounded_and_ascii() -> None:
    name = bucket_key(_limit("p", "l"), "\udc80é/" * 1000)
    assert name.isascii() and len(name) < 100


def _engine(root: Path, counters: Counters) -> Engine:
    return Engine(compile_policy_set(load_policy_dir(root)), counters=counters)


def _effect(engine: Engine, action: str, attr: dict) -> str:
    req = parse_check_request(
        {
            "principal": {"id": "ann", "tenant": "t", "roles": ["member"], "attr": attr},
            "resources": [{"kind": "note", "id": "n1", "tenant": "t", "actions": [action]}],
            "context": {"time": T0},
        }
    )
    return engine.check(req).results[0].actions[action].effect


def _colliding_ids(root: Path) -> Path:
    # Policy `a/b` limit `c` counts reads; policy `a` limit `b/c` counts writes. One read must
    # not spend the writes' quota.
    return write_policies(
        root,
        {
            "notes.yaml": NOTES,
            "one.yaml": limit_policy("a/b", "c", "read", "P.id"),
            "two.yaml": limit_policy("a", "b/c", "write", "P.id"),
        },
    )


def _list_or_text(root: Path) -> Path:
    # One limit keyed by an attribute a caller may send as a list or as that list's JSON text.
    return write_policies(
        root, {"notes.yaml": NOTES, "l.yaml": limit_policy("p", "l", "read", "P.attr.k")}
    )


@pytest.fixture(params=["memory", "supervised", "redis"])
def counters(request: pytest.FixtureRequest) -> Iterator[Counters]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    if request.param == "supervised":
        # `--workers N`: a worker's takes, answered by the supervisor's buckets.
        worker = SupervisedCounters(CounterServer().connect().detach())
        yield worker
        worker.close()
        return
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    yield counters_from_url(url)


def test_limits_with_slashes_in_their_ids_count_apart(tmp_path: Path, counters) -> None:
    engine = _engine(_colliding_ids(tmp_path), counters)
    assert _effect(engine, "read", {}) == "allow"
    assert _effect(engine, "write", {}) == "allow"  # its own bucket, still full
    assert _effect(engine, "read", {}) == "deny"
    assert _effect(engine, "write", {}) == "deny"


def test_a_list_key_and_its_json_text_count_apart(tmp_path: Path, counters) -> None:
    engine = _engine(_list_or_text(tmp_path), counters)
    assert _effect(engine, "read", {"k": ["a", "b"]}) == "allow"
    assert _effect(engine, "read", {"k": '["a","b"]'}) == "allow"
    assert _effect(engine, "read", {"k": ["a", "b"]}) == "deny"


def test_redis_keys_are_the_escaped_names(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    engine = _engine(_colliding_ids(tmp_path), counters_from_url(redis_url))
    assert _effect(engine, "read", {}) == "allow"
    assert _effect(engine, "write", {}) == "allow"
    assert sorted(client.keys(KEY_PREFIX + "*")) == [
        KEY_PREFIX + "a%2Fb/c:ann",
        KEY_PREFIX + "a/b%2Fc:ann",
    ]

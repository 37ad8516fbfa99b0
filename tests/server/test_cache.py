"""The decision cache: hits answer with fresh ids, swaps and the clock invalidate."""

from __future__ import annotations

import dataclasses
import gc
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pdp.client import Client
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.decision import BundleInfo
from pdp.model.loader import load_policy_dir
from pdp.server import ServerConfig
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server.cache import split_request_id

from .conftest import ALICE, DOC, OTHER_DOC, running

TIMED = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: clock}
spec:
  resource: document
  actions:
    read: {}
  rules:
    - id: business-hours
      actions: [read]
      effect: allow
      condition: now.getHours() >= 0
"""


def _engine(tmp_path: Path, text: str, version: str) -> Engine:
    (tmp_path / version).mkdir()
    (tmp_path / version / "p.yaml").write_text(textwrap.dedent(text).lstrip())
    policy_set = compile_policy_set(load_policy_dir(tmp_path / version))
    return Engine(policy_set, BundleInfo("cache-test", version, version))


def test_repeated_request_is_served_from_cache_with_fresh_ids(engine: Engine) -> None:
    with running(EngineHolder(engine)) as server, Client(f"127.0.0.1:{server.port}") as c:
        cache = server.decision_cache
        assert cache is not None
        answers = [
            c.check(ALICE, [{**DOC, "actions": ["read"]}], request_id=f"r{i}") for i in range(5)
        ]
        assert cache.hits == 4 and cache.misses == 1
        assert len({a.decision_id for a in answers}) == 5
        assert [a.request_id for a in answers] == [f"r{i}" for i in range(5)]
        for a in answers:
            d = a.results[0].actions["read"]
            assert (d.effect, d.rule, dict(d.obligations)) == (
                "allow",
                "owner-all",
                {"mask_fields": ["email"], "max_rows": 10},
            )
            assert a.bundle.revision == "abc123"
        # A different resource is a different key.
        other = c.check(ALICE, [{**OTHER_DOC, "actions": ["read"]}])
        assert other.results[0].actions["read"].effect == "deny"
        assert cache.misses == 2


def test_swap_empties_the_cache(engine: Engine, tmp_path: Path) -> None:
    holder = EngineHolder(engine)
    with running(holder) as server, Client(f"127.0.0.1:{server.port}") as c:
        first = c.check(ALICE, [{**OTHER_DOC, "actions": ["read"]}])
        c.check(ALICE, [{**OTHER_DOC, "actions": ["read"]}])
        assert first.results[0].actions["read"].effect == "deny"
        holder.swap(_engine(tmp_path, TIMED, "2"))
        after = c.check(ALICE, [{**OTHER_DOC, "actions": ["read"]}])
        assert after.bundle.version == "2"
        assert after.results[0].actions["read"].effect == "allow"


def test_clock_dependent_decisions_are_cached_only_with_a_fixed_time(tmp_path: Path) -> None:
    holder = EngineHolder(_engine(tmp_path, TIMED, "1"))
    with running(holder) as server, Client(f"127.0.0.1:{server.port}") as c:
        cache = server.decision_cache
        assert cache is not None
        for _ in range(3):
            assert c.is_allowed(ALICE, DOC, "read")
        assert cache.hits == 0 and len(cache) == 0
        fixed = {"time": "2026-01-01T09:00:00Z"}
        answers = [c.check(ALICE, [{**DOC, "actions": ["read"]}], fixed) for _ in range(3)]
        assert cache.hits == 2
        assert {a.evaluated_at for a in answers} == {"2026-01-01T09:00:00+00:00"}


def test_cache_can_be_disabled(engine: Engine) -> None:
    config = ServerConfig(listen=("127.0.0.1:0",), decision_cache=0)
    with running(EngineHolder(engine), config) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert server.decision_cache is None
        assert c.is_allowed(ALICE, DOC, "read") and c.is_allowed(ALICE, DOC, "read")


@pytest.mark.parametrize("request_id", ["", "r", "x" * 200, "ünïcode"])
def test_split_request_id(request_id: str) -> None:
    msg = pb.CheckRequest(request_id=request_id, explain=True)
    msg.principal.id = "alice"
    split = split_request_id(msg.SerializeToString())
    assert split is not None
    key, rid = split
    assert rid == request_id
    rest = pb.CheckRequest.FromString(key)
    assert rest.request_id == "" and rest.principal.id == "alice" and rest.explain


def test_truncated_request_id_is_not_a_key() -> None:
    data = pb.CheckRequest(request_id="abcdef").SerializeToString()[:4]
    assert split_request_id(data) is None


def _observations() -> tuple[list[Any], Any]:
    seen: list[Any] = []

    class Observer:
        def on_check(self, record: Any) -> None:
            seen.append(record)

        def close(self) -> None:
            pass

    return seen, Observer()


def test_hits_are_logged_with_the_ids_they_answered(engine: Engine) -> None:
    seen, observer = _observations()
    with (
        running(EngineHolder(engine), observer=observer) as server,
        Client(f"127.0.0.1:{server.port}") as c,
    ):
        answers = [
            c.check(ALICE, [{**DOC, "actions": ["read"]}], request_id=f"q{i}") for i in range(3)
        ]
        assert server.decision_cache is not None and server.decision_cache.hits == 2
    assert [r.response.decision_id for r in seen] == [a.decision_id for a in answers]
    assert [r.request.request_id for r in seen] == ["q0", "q1", "q2"]
    assert all(r.response.results[0].actions["read"].effect == "allow" for r in seen)
    # A hit's record is decoded from the entry's bytes: the miss's record but for its ids.
    miss, hit = seen[0], seen[1]
    assert dataclasses.replace(hit.request, request_id="q0") == miss.request
    ids = {"decision_id": miss.response.decision_id, "request_id": "q0"}
    assert dataclasses.replace(hit.response, **ids) == dataclasses.replace(
        miss.response, evaluated_at=hit.response.evaluated_at
    )


def _tracked_in(entry: object) -> list[object]:
    return [x for x in gc.get_referents(entry) if gc.is_tracked(x) and not isinstance(x, type)]


class _WireObserver:
    wire_only = True  # as the default writer process's observer

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def on_wire(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("kind", ["unobserved", "wire-only", "objects"])
def test_entries_hold_no_decoded_objects(engine: Engine, kind: str) -> None:
    # The cyclic collector walks every tracked object an entry holds, entry after entry: an
    # entry is bytes only, whoever observes (the writer process gets a hit's bytes; an
    # observer of objects, the thread writer, a hit decoded from them).
    wire, (seen, objects) = _WireObserver(), _observations()
    observer = {"unobserved": None, "wire-only": wire, "objects": objects}[kind]
    with (
        running(EngineHolder(engine), observer=observer) as server,
        Client(f"127.0.0.1:{server.port}") as c,
    ):
        answers = [
            c.check(ALICE, [{**DOC, "actions": ["read"]}], request_id=f"w{i}") for i in (0, 1)
        ]
        cache = server.decision_cache
        assert cache is not None and len(cache) == 1 and cache.hits == 1
        (entry,) = cache._lru.values()
        assert _tracked_in(entry) == []
    if kind == "wire-only":  # the hit is still logged, with the ids it answered
        assert len(wire.items) == 2
        assert answers[1].decision_id in wire.items[1]
    if kind == "objects":
        assert [r.response.decision_id for r in seen] == [a.decision_id for a in answers]

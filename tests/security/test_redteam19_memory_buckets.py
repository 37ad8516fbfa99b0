"""Red-team sweep 19: flooding one limit's buckets cannot refill another's.

The in-memory counters (`--limits-store memory`, the default) keep at most `max_buckets`
buckets, the least recently used forgotten, and a forgotten bucket comes back full. The LRU
spanned every limit: a caller whose per-user read quota was spent made `max_buckets` calls
under a limit keyed by something it chooses (here a resource id; an IPv6 address or a
document id does as well), its own emptied bucket was pushed out, and its reads were allowed
again. Eviction now takes from the limit holding the most buckets: the flood pushes out only
its own.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.engine import Engine, compile_policy_set
from pdp.engine.counters import MemoryCounters, Take
from pdp.model.loader import load_policy_files
from pdp.model.request import parse_check_request

POLICIES = {
    "note.yaml": b"""
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: []}
    list: {scopes: []}
  rules:
    - {id: members, actions: ["*"], effect: allow, roles: [member]}
""",
    "limits.yaml": b"""
apiVersion: pdp/v1
kind: LimitPolicy
metadata: {id: limits}
spec:
  limits:
    - {id: per-user-reads, resources: [note], actions: [read], key: P.id, limit: 5, per: 1d}
    - {id: per-note-lists, resources: [note], actions: [list], key: R.id, limit: 100, per: 1d}
""",
}
CAP = 50  # buckets kept; production keeps 100,000


def _call(engine: Engine, action: str, note: str) -> tuple[str, tuple[str, ...]]:
    request = parse_check_request(
        {
            "principal": {"id": "mallory", "tenant": "acme", "roles": ["member"]},
            "resources": [{"kind": "note", "id": note, "tenant": "acme", "actions": [action]}],
        }
    )
    decision = engine.check(request).results[0].actions[action]
    return decision.effect, decision.reasons


def test_a_flood_under_one_limit_does_not_refill_another() -> None:
    engine = Engine(compile_policy_set(load_policy_files(POLICIES)))
    engine.counters = MemoryCounters(max_buckets=CAP)
    assert [_call(engine, "read", "n")[0] for _ in range(5)] == ["allow"] * 5
    assert _call(engine, "read", "n") == ("deny", ("rate_limited",))
    # Lists of notes whose ids the caller picks: one fresh bucket each, past the cap.
    for i in range(4 * CAP):
        assert _call(engine, "list", f"note-{i}")[0] == "allow"
    assert _call(engine, "read", "n") == ("deny", ("rate_limited",))


@pytest.mark.parametrize("cap", [1, 3, CAP])
def test_the_count_stays_bounded(cap: int) -> None:
    counters = MemoryCounters(max_buckets=cap)
    for i in range(5 * cap + 7):
        limit = "p/a" if i % 3 else "p/b"
        assert counters.take([Take(f"{limit}:{i}", 5, 1.0, 1)], 0.0).granted
    assert sum(len(b) for b in counters._limits.values()) == cap


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["p/a:", "p/b:", "p/c#", "plain"]), st.integers(0, 30),
                  st.integers(0, 3)),
        max_size=60,
    )
)  # fmt: skip
def test_a_bucket_within_the_cap_answers_as_an_unbounded_store(
    takes: list[tuple[str, int, int]],
) -> None:
    # With room for every bucket, the partitioned store is the plain token bucket.
    bounded, reference = MemoryCounters(max_buckets=10_000), _Unbounded()
    for n, (prefix, value, cost) in enumerate(takes):
        take = [Take(f"{prefix}{value}", 3, 0.5, cost)]
        assert bounded.take(take, float(n)) == reference.take(take, float(n))


class _Unbounded:
    def __init__(self) -> None:
        self.levels: dict[str, tuple[float, float]] = {}

    def take(self, takes: list[Take], now: float) -> object:
        from pdp.engine.counters import Outcome, refill

        (t,) = takes
        tokens, last = self.levels.get(t.key, (t.capacity, now))
        level = refill(tokens, last, now, t.capacity, t.rate)
        if level < t.cost:
            return Outcome(False, (level,), 0, (t.cost - level) / t.rate)
        self.levels[t.key] = (level - t.cost, now)
        return Outcome(True, (level - t.cost,))

"""bench/server_instructions.py's arithmetic: instructions per call, less the clock's work."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from . import load_bench

bench = load_bench("server_instructions")


@given(
    start=st.integers(10**6, 10**9),
    per_call=st.integers(1_000, 10**6),
    rate=st.integers(0, 10**6),
    seconds=st.tuples(*(st.floats(1, 100) for _ in range(4))),
)
def test_a_server_of_known_cost_is_recovered(
    start: int, per_call: int, rate: int, seconds: tuple[float, float, float, float]
) -> None:
    """A server that spends `start` to start and stop, `per_call` per call and `rate` per
    second of its life: the count per call comes back whatever the runs' lengths."""
    small_s, extra_s, idle_s, idle_extra_s = seconds

    def life(calls: int, s: float) -> tuple[int, float]:
        return round(start + per_call * calls + rate * s), s

    small, large = life(300, small_s), life(2000, small_s + extra_s)
    short, long = life(0, idle_s), life(0, idle_s + idle_extra_s)
    found, raw, idle_rate = bench.per_call(small, large, short, long, 1700)
    assert abs(idle_rate - rate) <= 1 / idle_extra_s + 1e-6 * rate
    assert abs(found - per_call) <= 1
    assert abs(raw - (per_call + rate * extra_s / 1700)) <= 1

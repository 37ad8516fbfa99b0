"""bench/server.py's confidence interval for a median (the telemetry cost's spread)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from . import load_bench

bench_server = load_bench("server")
median_interval = bench_server.median_interval


def coverage(n: int, k: int) -> float:
    """Chance that [k-th smallest, k-th largest] of n draws holds the median."""
    return 1 - 2 * sum(math.comb(n, j) for j in range(k)) / 2**n


@pytest.mark.parametrize("n", [6, 9, 15, 21, 40])
def test_the_widest_order_statistics_that_still_cover_are_chosen(n: int) -> None:
    values = [float(i) for i in range(1, n + 1)]
    low, high = median_interval(values)
    k = int(low)
    assert high == n + 1 - k  # symmetric
    assert coverage(n, k) >= 0.95 > coverage(n, k + 1)


def test_known_case_and_small_samples() -> None:
    # n = 15: [4th, 12th], covering 96.5%.
    assert median_interval([float(i) for i in range(15, 0, -1)]) == (4.0, 12.0)
    # Too few values for 95%: the whole range.
    assert median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_the_interval_holds_the_sample_median(values: list[float]) -> None:
    low, high = median_interval(values)
    ordered = sorted(values)
    assert low in values and high in values
    assert low <= ordered[(len(values) - 1) // 2] and ordered[len(values) // 2] <= high


def test_it_covers_a_true_median_about_as_often_as_it_claims() -> None:
    rng = random.Random(7)
    trials, hits = 4000, 0
    for _ in range(trials):
        sample = [rng.gauss(0.9, 0.1) for _ in range(15)]
        low, high = median_interval(sample)
        hits += low <= 0.9 <= high
    # 96.5% nominal at n = 15; four standard errors of slack.
    assert 0.95 <= hits / trials <= 0.98


def test_a_control_row_runs_two_identical_off_servers(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    for cache in ("on", "off"):
        off = bench_server.telemetry_flags("off", cache, log, control=False)
        on = bench_server.telemetry_flags("on", cache, log, control=False)
        assert off[-2:] == ("--otel", "off") and str(log) not in off
        assert "--otel" in on and on[on.index("--otel") + 1] == "on"
        assert on[on.index("--decision-log") + 1] == str(log)
        assert ("--decision-cache" in on) == ("--decision-cache" in off) == (cache == "off")
        assert "--telemetry-writer" not in on  # pdp chooses
        control = bench_server.telemetry_flags("on", cache, log, control=True)
        assert control == off
        for writer in ("process", "thread"):
            chosen = bench_server.telemetry_flags("on", cache, log, control=False, writer=writer)
            assert chosen[chosen.index("--telemetry-writer") + 1] == writer
            assert (
                bench_server.telemetry_flags("on", cache, log, control=True, writer=writer) == off
            )


def test_the_bench_waits_for_the_feeders_longest_sleep_before_counting_the_writer() -> None:
    from pdp.telemetry.offload import MAX_POLL_INTERVAL_S

    assert bench_server.DRAIN_S > MAX_POLL_INTERVAL_S

"""The worker balancer: the plan on given loads, and real busy processes moved apart."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pdp.cli._balance import MIN_IMBALANCE, Balancer, cpu_seconds, initial_cpus, plan_moves


def test_two_busy_workers_on_one_core_are_split() -> None:
    moves = plan_moves({1: 0.5, 2: 0.5, 3: 0.1}, {1: 0, 2: 0, 3: 1}, [0, 1])
    assert len(moves) == 1
    ((pid, cpu),) = moves.items()
    assert pid in (1, 2) and cpu == 1


def test_even_cores_stay_put() -> None:
    loads = {1: 0.9, 2: 0.5, 3: 0.4}
    assert plan_moves(loads, {1: 0, 2: 1, 3: 1}, [0, 1]) == {}


def test_a_gap_below_the_threshold_is_noise() -> None:
    gap = MIN_IMBALANCE * 0.9
    assert plan_moves({1: 0.5 + gap, 2: 0.5}, {1: 0, 2: 1}, [0, 1]) == {}


def test_one_hot_worker_cannot_be_split_and_is_left_alone() -> None:
    # Moving the only busy worker just swaps which core is busy.
    assert plan_moves({1: 1.0, 2: 0.0}, {1: 0, 2: 1}, [0, 1]) == {}


def test_largest_useful_worker_moves_first() -> None:
    loads = {1: 0.45, 2: 0.3, 3: 0.25, 4: 0.0}
    moves = plan_moves(loads, {1: 0, 2: 0, 3: 0, 4: 1}, [0, 1])
    # 1.0 vs 0.0: moving 0.45 leaves 0.55 vs 0.45, within the threshold.
    assert moves == {1: 1}


def test_workers_spread_over_several_cores() -> None:
    loads = {pid: 0.25 for pid in range(8)}
    moves = plan_moves(loads, dict.fromkeys(range(8), 0), [0, 1, 2, 3])
    placement = {pid: moves.get(pid, 0) for pid in range(8)}
    per_core = [sum(1 for c in placement.values() if c == core) for core in range(4)]
    assert per_core == [2, 2, 2, 2]


def test_initial_placement_round_robin() -> None:
    assert initial_cpus(5, [3, 1]) == [1, 3, 1, 3, 1]


def test_cpu_seconds_of_a_gone_process_is_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert cpu_seconds(proc.pid) is None
    assert cpu_seconds(os.getpid()) is not None


def _cpus_allowed(pid: int) -> set[int]:
    return os.sched_getaffinity(pid)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_real_busy_processes_on_one_core_are_moved_apart() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    try:
        for p in procs:
            os.sched_setaffinity(p.pid, {cpus[0]})
        balancer = Balancer(cpus)
        placement = {p.pid: cpus[0] for p in procs}
        placement = balancer.step(placement, time.monotonic())  # first interval: baseline
        assert placement == {p.pid: cpus[0] for p in procs}
        time.sleep(0.5)
        placement = balancer.step(placement, time.monotonic())
        assert sorted(placement.values()) == cpus, placement
        assert [_cpus_allowed(p.pid) for p in procs] == [{placement[p.pid]} for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()

"""Keep `pdp serve --workers N` workers spread over the cores by the CPU they actually use.

Workers share one port through SO_REUSEPORT, whose hash hands each new connection to a worker
at random; with the few long-lived connections a gateway keeps, one worker often carries most
of the calls. A worker is one GIL, so it can use at most one core, and it runs best with all
its threads on one core (no GIL hand-off between cores, measured at nearly half the CPU per
call). So the supervisor starts more workers than cores, pins each one whole to a core, and
every interval moves workers from the busiest core to the idlest while that evens them out:
two connections that hashed to one worker no longer share a core with a third.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
# A core this much busier than another (in cores' worth of CPU over the interval) is uneven
# enough to move a worker; below it, moves would chase noise.
MIN_IMBALANCE = 0.15


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` (all its threads); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may itself hold spaces and parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of `pid` to `cpu`; threads it starts later inherit the mask."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), {cpu})


def plan_moves(
    loads: Mapping[int, float], placement: Mapping[int, int], cpus: Sequence[int]
) -> dict[int, int]:
    """Workers to move (pid -> new cpu) so that per-core load evens out.

    `loads`: each worker's CPU share over the last interval (1.0 = a whole core);
    `placement`: each worker's current core. Repeatedly moves, from the busiest core to the
    idlest, the largest worker whose move narrows the gap between the two: few moves, and
    none when the cores are within MIN_IMBALANCE of each other.
    """
    where = {pid: placement[pid] for pid in loads if placement.get(pid) in cpus}
    core_load = {cpu: 0.0 for cpu in cpus}
    for pid, cpu in where.items():
        core_load[cpu] += loads[pid]
    moves: dict[int, int] = {}
    for _ in range(len(where)):
        busiest = max(cpus, key=lambda c: core_load[c])
        idlest = min(cpus, key=lambda c: core_load[c])
        gap = core_load[busiest] - core_load[idlest]
        if gap < MIN_IMBALANCE:
            break
        # Moving load l turns the gap into |gap - 2l|: it narrows while 0 < l < gap.
        candidates = [pid for pid, cpu in where.items() if cpu == busiest and 0 < loads[pid] < gap]
        if not candidates:
            break
        pid = max(candidates, key=lambda p: loads[p])
        where[pid] = idlest
        core_load[busiest] -= loads[pid]
        core_load[idlest] += loads[pid]
        moves[pid] = idlest
    return {pid: cpu for pid, cpu in moves.items() if cpu != placement.get(pid)}


class Balancer:
    """Call `step(workers)` every interval with the live workers' current cores; it re-pins
    the workers worth moving and returns the new placement."""

    def __init__(self, cpus: Sequence[int]) -> None:
        self.cpus = tuple(cpus)
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds, wall clock)

    def step(self, placement: Mapping[int, int], now: float) -> dict[int, int]:
        loads: dict[int, float] = {}
        seen: dict[int, tuple[float, float]] = {}
        for pid in placement:
            used = cpu_seconds(pid)
            if used is None:
                continue
            seen[pid] = (used, now)
            before = self._last.get(pid)
            if before is not None and now > before[1]:
                loads[pid] = (used - before[0]) / (now - before[1])
        self._last = seen
        moved = dict(placement)
        if len(loads) == len(placement):  # a fresh worker has no interval yet: wait for it
            for pid, cpu in plan_moves(loads, placement, self.cpus).items():
                pin(pid, cpu)
                moved[pid] = cpu
        return moved


def initial_cpus(workers: int, cpus: Iterable[int]) -> list[int]:
    """Worker i starts on the (i mod n)-th allowed core."""
    allowed = sorted(cpus)
    return [allowed[i % len(allowed)] for i in range(workers)]

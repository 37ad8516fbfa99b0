"""Compile-time benchmark (not a test): 10,000 policies whose conditions all differ in structure.

Reproduce:  .venv/bin/python bench/compile.py                  (from the repository root)
            .venv/bin/python bench/compile.py --rounds 1 --profile build/compile.prof

What it measures: the worst case for start-up compile time, the set `bench/engine.py --distinct`
times (`UNRELATED_DISTINCT`, imported from there): 10,000 resource policies, 30,000 rules, no two
conditions with the same field names, so no two share generated Python. It prints, per round,
the seconds to load (YAML → policy model: `load_policy_files`) and to compile (policy model →
engine: `compile_policy_set`), then the median of the rounds. The issue's target is load +
compile under 5 s.

How to read it: the machine is shared, so a figure is indicative; compare `compile` with `load`
of the same run (load is code this benchmark does not change, a reference for machine speed),
and read the CPU seconds (the process's own, `time.process_time`) next to the wall-clock ones:
on a loaded machine the wall-clock figure is mostly waiting for a core.
With `--profile FILE`, one more round's compile runs under cProfile (not counted in the
median) and its stats are written to FILE (read with `python -m pstats FILE`, `sort cumtime`, `stats 30`).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from engine import UNRELATED_DISTINCT  # noqa: E402

from pdp.engine import compile_policy_set  # noqa: E402
from pdp.model.loader import load_policy_files  # noqa: E402


class Round(NamedTuple):
    load_s: float  # wall-clock seconds
    compile_s: float
    load_cpu: float  # CPU seconds of this process (less sensitive to a loaded machine)
    compile_cpu: float
    rules: int


def one_round(n: int, profile: str | None) -> Round:
    """Load and compile seconds of `n` distinct policies, and the number of rules compiled."""
    files = {f"unrelated/u{i}.yaml": UNRELATED_DISTINCT.format(i=i).encode() for i in range(n)}
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    source = load_policy_files(files)
    t1, c1 = time.perf_counter(), time.process_time()
    if profile:
        prof = cProfile.Profile()
        policy_set = prof.runcall(compile_policy_set, source)
        prof.dump_stats(profile)
    else:
        policy_set = compile_policy_set(source)
    t2, c2 = time.perf_counter(), time.process_time()
    return Round(t1 - t0, t2 - t1, c1 - c0, c2 - c1, policy_set.rule_count)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-n", type=int, default=10_000, help="policies (default 10,000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each in fresh data (default 3)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile one more round's compile")
    args = ap.parse_args()
    rounds = []
    for r in range(args.rounds):
        one = one_round(args.n, None)
        rounds.append(one)
        print(
            f"round {r + 1}: {args.n:,} policies ({one.rules:,} rules), every condition of its "
            f"own structure: load {one.load_s:.2f} s + compile {one.compile_s:.2f} s = "
            f"{one.load_s + one.compile_s:.2f} s wall-clock; CPU {one.load_cpu:.2f} + "
            f"{one.compile_cpu:.2f} s"
        )
    load_m, compile_m = (statistics.median(x) for x in zip(*(r[:2] for r in rounds)))
    load_c, compile_c = (statistics.median(x) for x in zip(*(r[2:4] for r in rounds)))
    print(
        f"median of {args.rounds}: load {load_m:.2f} s + compile {compile_m:.2f} s = "
        f"{load_m + compile_m:.2f} s wall-clock (target < 5 s); CPU load {load_c:.2f} s + "
        f"compile {compile_c:.2f} s = {load_c + compile_c:.2f} s"
    )
    if args.profile:
        compile_s = one_round(args.n, args.profile).compile_s
        print(f"profiled round: compile {compile_s:.2f} s under cProfile, stats in {args.profile}")


if __name__ == "__main__":
    main()

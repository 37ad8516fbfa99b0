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
of the same run (load is code this benchmark does not change, a reference for machine speed).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from engine import UNRELATED_DISTINCT  # noqa: E402

from pdp.engine import compile_policy_set  # noqa: E402
from pdp.model.loader import load_policy_files  # noqa: E402


def one_round(n: int, profile: str | None) -> tuple[float, float, int]:
    """Load and compile seconds of `n` distinct policies, and the number of rules compiled."""
    files = {f"unrelated/u{i}.yaml": UNRELATED_DISTINCT.format(i=i).encode() for i in range(n)}
    gc.collect()
    t0 = time.perf_counter()
    source = load_policy_files(files)
    t1 = time.perf_counter()
    if profile:
        prof = cProfile.Profile()
        policy_set = prof.runcall(compile_policy_set, source)
        prof.dump_stats(profile)
    else:
        policy_set = compile_policy_set(source)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, policy_set.rule_count


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-n", type=int, default=10_000, help="policies (default 10,000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each in fresh data (default 3)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile one more round's compile")
    args = ap.parse_args()
    loads, compiles = [], []
    for r in range(args.rounds):
        load_s, compile_s, rules = one_round(args.n, None)
        loads.append(load_s)
        compiles.append(compile_s)
        print(
            f"round {r + 1}: {args.n:,} policies ({rules:,} rules), every condition of its own "
            f"structure: load {load_s:.2f} s + compile {compile_s:.2f} s = "
            f"{load_s + compile_s:.2f} s"
        )
    load_m, compile_m = statistics.median(loads), statistics.median(compiles)
    print(
        f"median of {args.rounds}: load {load_m:.2f} s + compile {compile_m:.2f} s = "
        f"{load_m + compile_m:.2f} s (target < 5 s)"
    )
    if args.profile:
        _, compile_s, _ = one_round(args.n, args.profile)
        print(f"profiled round: compile {compile_s:.2f} s under cProfile, stats in {args.profile}")


if __name__ == "__main__":
    main()

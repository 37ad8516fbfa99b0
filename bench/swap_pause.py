"""What a later policy swap costs `pdp serve` in one pause of every thread. Not a test: a
measurement.

Reproduce:  .venv/bin/python bench/swap_pause.py                 (100, 2,000 and 10,000 policies)
            .venv/bin/python bench/swap_pause.py --policies 500

`pdp serve` freezes its heap at each engine swap (`pdp.cli.serve._HeapSettler`): the first
swap freezes the imports and the policies, so the cyclic collector never walks them again.
Until session 24 a later swap first unfroze and collected, so the engine it replaced was
freed: that collection walks every object of the process holding the GIL, and decisions wait
for it. A compiled policy set now holds no reference cycles, so a later swap only freezes:
the replaced engine goes by reference counts when its last user drops it (here, inside the
swap). This builds the set `bench/compile.py` uses (`UNRELATED_DISTINCT`: policies whose
conditions all differ) at each size, swaps it in twice through an `EngineHolder` with the
settler, and prints how long the second swap held the GIL, and what a full collection (the
old settler's) takes then.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import gc, sys, time
sys.path.insert(0, BENCH)
from engine import UNRELATED_DISTINCT
from pdp.cli.serve import _HeapSettler
from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.model.loader import load_policy_files

def build():
    files = {f"u/u{i}.yaml": UNRELATED_DISTINCT.format(i=i).encode() for i in range(N)}
    return Engine(compile_policy_set(load_policy_files(files)))

gc.collect()
gc.freeze()  # as pdp serve's start-up does (pdp.cli.main.resume_gc)
holder = EngineHolder()
holder.on_swap(_HeapSettler())
holder.swap(build())  # the first swap: freezes
later = build()
t0 = time.perf_counter()
holder.swap(later)  # unfreeze, collect (the first engine freed), freeze
t1 = time.perf_counter()
gc.unfreeze(); gc.collect(); gc.freeze()
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, gc.get_freeze_count())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", type=int, action="append")
    args = parser.parse_args()
    for n in args.policies or [100, 2_000, 10_000]:
        code = CHILD.replace("BENCH", repr(str(ROOT / "bench"))).replace("N)", f"{n})")
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout.split()
        swap, again, frozen = float(out[0]), float(out[1]), int(out[2])
        print(
            f"{n:>6} policies: a later swap held the GIL {swap * 1000:7.1f} ms "
            f"(a full collection, as the settler did before: {again * 1000:7.1f} ms; {frozen:,} objects)"
        )
    return 0


if __name__ == "__main__":
    gc.disable()  # this process only starts the children
    sys.exit(main())

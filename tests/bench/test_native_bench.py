"""bench/native/: the bench server (serve.py) still drives pdp's extension, decides like `pdp serve`
and the hand-written floor, and refuses the hostile probe (probe.py), in one short run of
compare_native.py. No figure is asserted: the run exits 1 on any disagreement or unrefused
probe, and serve.py once broke (a change to the items `take()` hands out) with the suite green.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_native_bench_agrees_with_pdp_serve_and_the_floor() -> None:
    done = subprocess.run(
        [sys.executable, "bench/native/compare_native.py", "--quick", "--no-cerbos",
         "--seconds", "1", "--sample", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "agreement: native = pdp serve = floor on 60 decisions" in done.stdout, done.stdout

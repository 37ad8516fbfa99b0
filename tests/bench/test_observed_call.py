"""bench/observed_call.py runs and prints both rows (a bench, not a timing assertion)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_it_times_hits_and_misses_off_and_on() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench/observed_call.py"), "--calls", "300", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines()[3:]}
    assert set(rows) == {"hits", "misses"}
    for off, on, delta, ratio in rows.values():
        assert float(off) > 0 and float(on) > 0
        assert abs(float(on) - float(off) - float(delta)) < 0.011
        assert abs(float(on) / float(off) - float(ratio)) < 0.01

"""The telemetry writer's CPU instructions per call, counted by valgrind (not a test).

Reproduce:  .venv/bin/python bench/writer_instructions.py [--miss] [--traced] [--root DIR]

`bench/writer.py` times the writer process's code, and on a shared virtual machine its figure
moves by a third between runs. Instructions do not: this replays one batch of 512 calls
through the same code (`decode_observation`, then `TelemetryObserver.write_now`, with a
rotating file and spans and metrics exported over OTLP/gRPC to a receiver in a child process)
under `valgrind --tool=callgrind`, once 2 times and once 6 times, and prints the difference
per call: start-up, imports and the first batch's one-off work cancel out. Every thread of the
writer counts (the span exporter's included); the receiver process does not.

`--root DIR` measures the pdp package of another checkout (say a `git worktree` of an older
commit) with this script, so two commits are compared by the same measurement. Needs
valgrind (Debian `valgrind`); takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMALL, LARGE = 2, 6  # replays of the batch in the two counted runs
BATCH = 512


def child(repeats: int, miss: bool, traced: bool) -> None:
    """Replay one batch `repeats` times through the writer's code (runs under valgrind)."""
    import pdp  # first, from PYTHONPATH: writer.py puts this checkout on sys.path

    print(f"pdp from {Path(pdp.__file__).parent}")
    sys.path.insert(0, str(HERE))
    from writer import items, start_receiver

    receiver, port_queue, stop = start_receiver(timeout=300)  # slow under valgrind
    from pdp.server.wire import decode_observation
    from pdp.telemetry.config import TelemetryOptions
    from pdp.telemetry.setup import build_observer

    blob = items(BATCH, miss=miss, traced=traced, size=BATCH)[0]
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-instructions-"))
    observer = build_observer(
        TelemetryOptions(decision_log=(str(tmp / "decisions.jsonl"),), backups=1000),
        writer_thread=False,
    )
    for _ in range(repeats):
        _, _, batch = pickle.loads(blob)
        observer.write_now([decode_observation(item) for item in batch])
    assert observer.otel is not None and observer.otel.tracer_provider is not None
    observer.otel.tracer_provider.force_flush()
    observer.close()
    stop.set()
    spans = port_queue.get(timeout=300)
    receiver.join(60)
    shutil.rmtree(tmp, ignore_errors=True)
    if spans != repeats * BATCH:
        raise SystemExit(f"the receiver got {spans} spans, not {repeats * BATCH}")


def count(repeats: int, args: argparse.Namespace, root: Path) -> subprocess.Popen[str]:
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--child", str(repeats),
        *(["--miss"] if args.miss else []), *(["--traced"] if args.traced else []),
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(root)}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=root
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--miss", action="store_true", help="decided replies instead of cache hits")
    ap.add_argument("--traced", action="store_true", help="callers send a traceparent")
    ap.add_argument("--root", type=Path, default=HERE.parent, help="checkout whose pdp to count")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.miss, args.traced)
        return 0
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind (apt-get install -y valgrind)")
    root = args.root.resolve()
    started = time.monotonic()
    runs = {n: count(n, args, root) for n in (SMALL, LARGE)}  # side by side: counts are exact
    refs = {}
    for n, proc in runs.items():
        out, _ = proc.communicate()
        found = re.search(r"I\s+refs:\s+([\d,]+)", out)
        if proc.returncode or found is None:
            print(out[-3000:])
            raise SystemExit(f"the run of {n} batches failed")
        refs[n] = int(found.group(1).replace(",", ""))
        if f"pdp from {root / 'pdp'}\n" not in out:
            raise SystemExit(f"the run did not import pdp from {root}")
    per_call = (refs[LARGE] - refs[SMALL]) / ((LARGE - SMALL) * BATCH)
    kind = "decided replies" if args.miss else "cache hits"
    print(f"pdp from {root / 'pdp'}")
    print(
        f"{kind}{', traced' if args.traced else ''}: {per_call:,.0f} instructions per call"
        f" ({time.monotonic() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

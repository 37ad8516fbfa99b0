"""CPU per decision-log record on the serving threads' side of the queue: `Intake.on_check` plus
the feeder's `_popleft`, for wire items (what `--telemetry-writer process` queues) of a usual
size and of a mid size, for each `--root` (a pdp source tree; default: this one). Not a test.

Reproduce:  .venv/bin/python bench/intake.py
            .venv/bin/python bench/intake.py --root /path/to/older/checkout --root .

Each root's `pdp/telemetry/intake.py` is loaded on its own (it imports the standard library
only); the wire items are this tree's `pdp.server.wire.check_item`. Rounds interleave the roots
and sizes; the best round is printed, in CPU time of this process (`time.process_time`: a
shared machine's scheduling waits are not counted; its cache contention still is).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import timeit
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdp.server.wire import check_item  # noqa: E402

SIZES = {"usual (0.5 KB request, 0.3 KB reply)": 500, "mid (6 KiB request)": 6 * 1024}
BATCH = 100  # records appended, then taken, per timed loop


def _intake(root: Path, i: int) -> ModuleType:
    name = f"_bench_intake_{i}"
    spec = importlib.util.spec_from_file_location(name, root / "pdp/telemetry/intake.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _item(size: int) -> tuple:
    return check_item("/pdp.v1.DecisionService/Check", b"r" * size, b"a" * 300, "", "",
                      "ipv4:127.0.0.1:5555", "", (), 0.0, 0.0)  # fmt: skip


def _loop(queue, record: tuple):  # -> the timed function
    on, take = queue.on_check, queue._popleft

    def loop() -> None:
        for _ in range(BATCH):
            on(record)
        for _ in range(BATCH):
            take()

    return loop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", action="append", type=Path, help="pdp source tree (repeatable)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--records", type=int, default=50_000, help="records per round")
    args = p.parse_args()
    roots = args.root or [ROOT]
    modules = [_intake(root, i) for i, root in enumerate(roots)]
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for label, size in SIZES.items():
            record = _item(size)
            for i, module in enumerate(modules):
                n = max(args.records // BATCH, 1)
                timer = timeit.Timer(_loop(module.Intake(10_000), record), timer=time.process_time)
                took = timer.timeit(n)
                ns = took / (n * BATCH) * 1e9
                best[label, i] = min(best.get((label, i), float("inf")), ns)
    for label in SIZES:
        for i, root in enumerate(roots):
            print(f"{label:40} root {i + 1} ({root}): {best[label, i]:6.0f} ns per record")


if __name__ == "__main__":
    main()

"""The cyclic garbage collector's passes in a serving `pdp serve`, next to the latency they cost
(issue 21: the p99 at one call in flight). Not a test: a benchmark.

Reproduce:  .venv/bin/python bench/gc_pauses.py                     (this checkout, 3 rounds)
            .venv/bin/python bench/gc_pauses.py --baseline DIR        (and DIR, interleaved)
            .venv/bin/python bench/gc_pauses.py -c 4 -m 8 --seconds 10
            .venv/bin/python bench/gc_pauses.py --pdp-flags "--telemetry-writer thread --decision-log {tmp}/d.jsonl"

Each round starts default `pdp serve` on bench/compare.py's policies (bench/peers/pdp) with a
`sitecustomize` on PYTHONPATH that records every collection pass of every pdp process
(`gc.callbacks`: generation and duration), warms it up with 2,000 calls, then drives it with
compare.py's varied 1x3 body file (50,000 distinct requests, bench/driver/grpcload.c) for
--seconds. Printed per checkout: the driver's req/s, p50 and p99, the server CPU per call, and
for each generation the passes that ran while the driver did, their mean and longest duration
(summed over the server's processes: only the worker that holds the connection collects).
Rounds interleave the checkouts (the order flips each round); figures are medians of rounds,
pass counts and durations pooled.

A baseline is another checkout of pdp (a `git worktree` or `git archive` export) run with this
checkout's Python (`python -m pdp.cli.main` from its directory imports its own `pdp`); it must
contain the native extension (`make native` there, or a copy of the built `.so`).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from peers import driver, grpcload, workload  # noqa: E402

WARMUP = 2000

# Written into a temporary directory put on the server's PYTHONPATH: every process it starts
# (the supervisor and the workers it forks) appends "pid monotonic generation µs" per pass.
SITECUSTOMIZE = """
import gc, os, time
_log = os.environ.get("PDP_GC_LOG")
if _log:
    _t = [0.0]
    def _pass(phase, info):
        if phase == "start":
            _t[0] = time.perf_counter()
            return
        with open(_log, "a") as f:
            f.write(f"{os.getpid()} {time.monotonic():.6f} {info['generation']} "
                    f"{(time.perf_counter() - _t[0]) * 1e6:.0f}\\n")
    gc.callbacks.append(_pass)
"""


def one_round(checkout: Path, bodies: Path, first: bytes, args: argparse.Namespace, tmp: Path):
    log = tmp / f"gc-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(tmp), "PDP_GC_LOG": str(log)}
    port = grpcload.free_port()
    cmd = [sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(grpcload.PEERS / "pdp")]
    flags = [f.replace("{tmp}", str(tmp)) for f in args.pdp_flags.split()]
    proc = subprocess.Popen(
        [*cmd, "--listen", f"127.0.0.1:{port}", *flags],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            try:
                grpcload.call_raw(port, grpcload.PDP_CHECK, first, timeout=1.0)
                break
            except Exception:  # not listening yet
                time.sleep(0.1)
        time.sleep(1.5)  # every worker up
        run = dict(port=port, method=grpcload.PDP_CHECK, bodies=bodies)
        shape = dict(connections=args.c, streams=args.m)
        driver.run(**run, **shape, requests=WARMUP)
        begin = time.monotonic()
        r = driver.run(**run, **shape, duration=args.seconds, start=WARMUP, server_session=proc.pid)
        end = time.monotonic()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    passes: dict[int, list[float]] = defaultdict(list)
    for line in log.read_text().splitlines() if log.exists() else []:
        _pid, at, generation, us = line.split()
        if begin <= float(at) <= end:
            passes[int(generation)].append(float(us))
    return r, passes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, help="another pdp checkout, run interleaved")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("-c", type=int, default=1, help="connections (default 1)")
    ap.add_argument("-m", type=int, default=1, help="calls in flight per connection (default 1)")
    ap.add_argument(
        "--pdp-flags",
        default="",
        help="more `pdp serve` flags, e.g. '--telemetry-writer thread --decision-log "
        "{tmp}/d.jsonl' ({tmp}: this run's temporary directory)",
    )
    args = ap.parse_args()
    checkouts = {"this checkout": ROOT}
    if args.baseline:
        checkouts["baseline"] = args.baseline.resolve()
    reqs = workload.generate(driver.DISTINCT, resources=1)
    bodies = driver.body_file("pdp-varied-1x3", grpcload.pdp_payload, reqs)
    first = grpcload.pdp_payload(reqs[0])
    runs: dict[str, list] = defaultdict(list)
    passes: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        for rnd in range(args.rounds):
            order = list(checkouts.items())
            for name, path in order if rnd % 2 == 0 else order[::-1]:
                r, seen = one_round(path, bodies, first, args, Path(tmp))
                runs[name].append(r)
                for generation, durations in seen.items():
                    passes[name][generation].extend(durations)
                print(f"  {name}: {r.rps:,.0f} req/s, p99 {r.p99_us:,.0f} µs", file=sys.stderr)
    print(
        f"varied 1x3, c{args.c}/m{args.m}, {args.rounds} rounds of {args.seconds:g} s, "
        f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print("checkout        req/s   p50 µs   p99 µs  CPU µs/call  GC passes: gen n, mean/max µs")
    for name, rs in runs.items():
        rps, p50, p99, cpu = (
            statistics.median(getattr(r, field) for r in rs)
            for field in ("rps", "p50_us", "p99_us", "server_cpu_us")
        )
        gens = "; ".join(
            f"gen {g} {len(d)}, {statistics.mean(d):,.0f}/{max(d):,.0f}"
            for g, d in sorted(passes[name].items())
        )
        print(f"{name:<14}{rps:>7,.0f}{p50:>9,.0f}{p99:>9,.0f}{cpu:>13,.0f}  {gens or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Default `pdp serve` (the native transport) from two source trees, interleaved: this checkout
against references (other commits' trees with their extension built in place), on
compare.py's varied workloads (session 23, replies per call). Ratios are against the last.

    git archive main | tar -x -C /tmp/ref && (cd /tmp/ref && ../path/.venv/bin/python \\
        setup.py -q build_ext --inplace)
    .venv/bin/python bench/native/replies_ab.py --ref main=/tmp/ref [--rounds 5] [--seconds 6]

Each server is started as `python -m pdp.cli.main serve` with its tree as the working
directory (so that tree's pdp and extension are imported), with only --policies and --listen:
a worker per CPU, the default decision threads and cache. Per round and tree, one server runs
varied 1x3 and 20x3 at 4 connections x 8 calls and varied 1x3 at one call in flight, each after
1,000 calls of warm-up on other requests; the order of the trees flips each round. Printed: each
run, then per workload the medians of req/s, p50, p99 and server CPU µs per call (the server's
processes, from /proc), and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from peers import driver, grpcload, workload  # noqa: E402

WORKLOADS = (  # name, resources per request, connections, calls in flight per connection
    ("varied 1x3 c4/m8", 1, 4, 8),
    ("varied 20x3 c4/m8", 20, 4, 8),
    ("varied 1x3 c1/m1", 1, 1, 1),
)
WARMUP = 1000


def serve(tree: Path, tmp: Path, first: bytes) -> grpcload.Server:
    port = grpcload.free_port()
    log = tmp / f"{tree.name}-{port}.log"
    cmd = [sys.executable, "-m", "pdp.cli.main", "serve", "--policies",
           str(ROOT / "bench/peers/pdp"), "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tree, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = grpcload.Server(tree.name, port, grpcload.PDP_CHECK, proc, log)
    grpcload._wait_ready(server, first, 60)
    time.sleep(1.5)  # every worker up
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--ref", action="append", required=True, metavar="[NAME=]PATH",
        help="a reference tree (repeatable; NAME defaults to ref, ref2, ...)",
    )  # fmt: skip
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--only", default="", help="the workloads whose name contains this")
    args = ap.parse_args()
    workloads = [w for w in WORKLOADS if args.only in w[0]]
    trees = {"this": ROOT}
    for i, ref in enumerate(args.ref):
        name, _, path = ref.rpartition("=")
        trees[name or ("ref" if i == 0 else f"ref{i + 1}")] = Path(path).resolve()
    files = {}
    for name, resources, _c, _m in workloads:
        reqs = workload.generate(driver.DISTINCT, resources=resources)
        files[name] = driver.body_file(f"pdp-varied-{resources}x3", grpcload.pdp_payload, reqs)
    first = driver.read_bodies(files[workloads[0][0]])[0]
    print(f"load average before: {os.getloadavg()}", flush=True)
    runs: dict[tuple[str, str], list[driver.DriverResult]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            order = list(trees.items()) if rnd % 2 == 0 else list(trees.items())[::-1]
            for tree_name, tree in order:
                server = serve(tree, Path(tmp), first)
                try:
                    for name, _r, conns, streams in workloads:
                        kw = {"connections": conns, "streams": streams}
                        driver.run(server.port, server.method, files[name], requests=WARMUP, **kw)
                        r = driver.run(server.port, server.method, files[name],
                                       duration=args.seconds, start=WARMUP,
                                       server_session=server.proc.pid, **kw)  # fmt: skip
                        if not r.ok:
                            sys.exit(f"{tree_name} {name}: {r.successes}/{r.requests}: {r.errors}")
                        runs.setdefault((tree_name, name), []).append(r)
                        print(f"round {rnd + 1} {tree_name:4} {name:18} {r.rps:8,.0f} req/s  "
                              f"p50 {r.p50_us:6.0f}  p99 {r.p99_us:6.0f} µs  "
                              f"cpu {r.server_cpu_us:5.0f} µs/call  "
                              f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
                finally:
                    grpcload.stop(server)
    print(f"load average after: {os.getloadavg()}")
    names = list(trees)
    print(
        f"\nmedians | {' | '.join(names)} | " + " | ".join(f"{n} ÷ {names[-1]}" for n in names[:-1])
    )
    for name, *_ in workloads:
        for field, unit in (("rps", "req/s"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"),
                            ("server_cpu_us", "CPU µs/call")):  # fmt: skip
            m = [statistics.median(getattr(r, field) for r in runs[(n, name)]) for n in names]
            print(f"{name} {unit} | " + " | ".join(f"{v:,.0f}" for v in m) + " | "
                  + " | ".join(f"{v / m[-1]:.2f}x" for v in m[:-1]))  # fmt: skip


if __name__ == "__main__":
    main()

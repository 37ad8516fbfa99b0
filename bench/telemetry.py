"""What telemetry costs a real server: `pdp serve` throughput with the decision log, traces and
metrics on vs all of it off, on served gRPC traffic (not a test).

Reproduce:  .venv/bin/python bench/telemetry.py
            .venv/bin/python bench/telemetry.py --workers 1 --root /path/to/other/checkout --root .

For each `--root` (a pdp source tree; default: this one), two `pdp serve` servers (`--workers`,
default `auto` as `pdp serve`'s own: one per usable CPU, so the writer process competes with
them for the cores; `--workers 1` pins the lone worker to one core and leaves the writer the
others, which hides the writer's CPU) run side by side, started from that tree: **off** (`--otel off`, no decision log) and **on**
(`--decision-log FILE --otel on`: traces and metrics over OTLP/gRPC to a receiver this script
runs on 127.0.0.1, the default sampler, the default writer — a separate process on a multi-core
machine). h2load (Debian `nghttp2-client`) drives 64 connections of one unary Check each, for
`--duration` seconds a run. Every round runs each server once, interleaved across the roots and
in an order that flips every round (a shared machine drifts); per round and root the on/off
throughput ratio is taken, and the median over `--rounds` rounds is printed, with the cost
(one minus it). Traffic: one request of 1 resource x 3 actions with a fixed `context.time`,
with the decision cache on (every repeated call is a hit) and off (`--decision-cache 0`: every
call is decided); the cost printed last is the mean over the two.

The off server is the same code in every root (no telemetry is loaded), so with two roots the
direct figure is the last line: the second root's on server's throughput over the first's,
the median of the rounds' own ratios.

With two roots the last lines compare them: the second root's telemetry cost against the
first's, measured in the same run. The on servers must have logged every call they answered
— a writer that fell behind and dropped records would look cheap — so every on server's
stderr is read for the writer's "dropped" warnings, and the script prints how many it dropped.

Read the figures as indicative on a shared machine: only ratios measured in the same run mean
anything, and the lead re-measures on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from server import (  # noqa: E402
    OtlpReceiver,
    free_port,
    h2load,
    log_lines,
    policy_dir,
    request_bytes,
    server_envs,
    stop_server,
)

# Calls h2load makes before its measured window, and the writer's drain after an on run.
DRAIN_S = 0.8


def start(
    root: Path,
    port: int,
    flags: tuple[str, ...],
    env: dict[str, str],
    stderr: Any = None,
    workers: str = "auto",
) -> Any:
    """`pdp serve` from the source tree `root` (its `pdp` package first on the path)."""
    from server import CONTEXT, PRINCIPAL, resources

    from pdp.client import Client, Retry

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(policy_dir())),
            *("--listen", f"127.0.0.1:{port}", "--workers", workers, "--log-level", "WARNING"),
            "--allow-client-time",
            *flags,
        ],
        cwd=root,
        env=env | {"PYTHONPATH": str(root)},
        stderr=stderr,
        start_new_session=True,
    )
    # Patient: on a loaded machine a server (and its writer process) can take a minute to start.
    patient = Retry(attempts=1200, max_backoff_s=0.1)
    try:
        with Client(f"127.0.0.1:{port}", timeout=120, retry=patient) as c:
            c.check(PRINCIPAL, resources(1), CONTEXT)
    except BaseException:
        stop_server(proc)
        raise
    return proc


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--root", action="append", type=Path, help="pdp source tree (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=3, help="seconds per h2load run")
    ap.add_argument("--caches", default="on,off", help="decision cache settings to run")
    ap.add_argument("--workers", default="auto", help="`pdp serve --workers` (default: auto)")
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="start the servers with --no-pin-workers (by default a lone server pins itself "
        "to the last core)",
    )
    args = ap.parse_args()
    args.connections, args.streams = 64, 1  # read by server.h2load
    if not shutil.which("h2load"):
        raise SystemExit("needs h2load (apt-get install -y nghttp2-client)")
    roots = [r.resolve() for r in (args.root or [ROOT])]
    import grpc

    receiver = OtlpReceiver()
    off_env, on_env = server_envs(receiver.port)
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-telemetry-"))
    body = request_bytes(1, pinned_time=True)
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores"
    )
    costs: dict[Path, list[float]] = {root: [] for root in roots}
    on_vs_first: list[float] = []  # median per cache setting of (last root's on / first's)
    try:
        for cache in args.caches.split(","):
            flags: tuple[str, ...] = ("--decision-cache", "0") if cache == "off" else ()
            flags += ("--no-pin-workers",) if args.no_pin else ()
            servers: dict[tuple[Path, str], tuple[Any, int, Path]] = {}
            try:
                for i, root in enumerate(roots):
                    log = tmp / f"decisions-{i}-{cache}.jsonl"
                    for name in ("off", "on"):
                        port = free_port()
                        extra: tuple[str, ...] = ("--otel", "off")
                        if name == "on":
                            extra = ("--otel", "on", "--decision-log", str(log))
                            extra += ("--decision-log-backups", "1000")
                        env = off_env if name == "off" else on_env
                        with (tmp / f"stderr-{i}-{cache}-{name}.txt").open("wb") as err:
                            proc = start(root, port, flags + extra, env, err, args.workers)
                        servers[(root, name)] = (proc, port, log)
                with grpc.insecure_channel(f"127.0.0.1:{servers[(roots[0], 'on')][1]}") as ch:
                    reply = ch.unary_unary("/pdp.v1.DecisionService/Check")(body, timeout=10)
                # A first run per server, not counted: its first calls warm it up.
                warm = argparse.Namespace(**{**vars(args), "duration": 1})
                for _, port, _ in servers.values():
                    h2load(port, body, len(reply), warm)
                ratios: dict[Path, list[float]] = {root: [] for root in roots}
                done: dict[Path, int] = {root: 0 for root in roots}
                per_round: list[float] = []
                for rnd in range(args.rounds):
                    order = [(root, name) for root in roots for name in ("off", "on")]
                    if rnd % 2:
                        order.reverse()
                    rps: dict[tuple[Path, str], float] = {}
                    for key in order:
                        result = h2load(servers[key][1], body, len(reply), args)
                        rps[key] = result["rps"]
                        if key[1] == "on":
                            done[key[0]] += int(result["done"])
                            time.sleep(DRAIN_S)
                    per_round.append(rps[(roots[-1], "on")] / rps[(roots[0], "on")])
                    for i, root in enumerate(roots):
                        ratios[root].append(rps[(root, "on")] / rps[(root, "off")])
                        print(
                            f"  cache {cache:<3} round {rnd + 1} root {i + 1}: "
                            f"off {rps[(root, 'off')]:7.0f}/s  on {rps[(root, 'on')]:7.0f}/s  "
                            f"on/off {ratios[root][-1]:.3f}"
                        )
            finally:
                for proc, _, _ in servers.values():
                    stop_server(proc)
            on_vs_first.append(statistics.median(per_round))
            for i, root in enumerate(roots):
                ratio = statistics.median(ratios[root])
                costs[root].append(1 - ratio)
                records = log_lines(servers[(root, "on")][2])
                err = (tmp / f"stderr-{i}-{cache}-on.txt").read_text(errors="replace")
                drops = [int(n) for n in re.findall(r"total dropped (\d+)", err)]
                lost = f"  DROPPED {max(drops)} RECORDS (queue full)" if drops else ""
                print(
                    f"cache {cache:<3} root {i + 1} ({root}): on/off median {ratio:.3f}, cost "
                    f"{100 * (1 - ratio):.1f}%  ({records} records for {done[root]} calls){lost}"
                )
    finally:
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for i, root in enumerate(roots):
        print(f"telemetry cost, root {i + 1}: {100 * statistics.mean(costs[root]):.1f}%  ({root})")
    if len(roots) == 2:
        a, b = (statistics.mean(costs[r]) for r in roots)
        print(
            f"root 2 vs root 1: {100 * (b - a):+.1f} points of cost; root 2's on-throughput is "
            f"{(1 - b) / (1 - a):.3f}x root 1's (relative to its own off server)"
        )
        print(
            "root 2's on server / root 1's, median of the rounds, per cache setting: "
            + ", ".join(f"{r:.3f}" for r in on_vs_first)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What telemetry costs a real server: `pdp serve` throughput with the decision log, traces and
metrics on vs all of it off, on served gRPC traffic (not a test).

Reproduce:  .venv/bin/python bench/telemetry.py
            .venv/bin/python bench/telemetry.py --workers 1 --root /path/to/other/checkout --root .

For each `--root` (a pdp source tree; default: this one), two `pdp serve` servers (`--workers`,
default `auto` as `pdp serve`'s own: one per usable CPU, so the writer process competes with
them for the cores; `--workers 1` pins the lone worker to one core and leaves the writer the
others, which hides the writer's CPU) run side by side, started from that tree: **off** (`--otel
off`, no decision log) and **on** (`--decision-log FILE --otel on`: traces and metrics over
OTLP/gRPC to a receiver this script runs on 127.0.0.1, the default sampler, the default writer
— a separate process on a multi-core machine). 64 connections of one unary Check each, for
`--duration` seconds a run. Every round runs each server once, interleaved across the roots and
in an order that flips every round (a shared machine drifts); per round and root the on/off
throughput ratio is taken, and the median over `--rounds` rounds is printed, with the cost (one
minus it).

Traffic (`--traffic`, both by default):
- **varied** (the headline): the multi-payload driver (bench/driver/grpcload.c, as `make
  bench-compare` uses it) rotating through 50,000 distinct 1 resource x 3 action requests of
  the peers' workload (bench/peers/pdp policies), default server settings: the decision cache
  is on but a request repeats only after 50,000 others, so every counted call is decided and
  logged afresh, as behind a gateway with many users and objects.
- **repeated** (labelled as such): h2load posting one 1x3 request with a fixed `context.time`
  against the example policies, with the decision cache on (every call after the first is a
  hit: telemetry's largest share of a call) and off (`--decision-cache 0`).

The cost printed last per root is the varied traffic's; the repeated figures are printed
before it.

The off server is the same code in every root (no telemetry is loaded), so with two roots the
direct figure is the last line: the second root's on server's throughput over the first's,
the median of the rounds' own ratios. The on servers must have logged every call they answered
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from peers import driver, grpcload, workload  # noqa: E402
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

# The writer's drain after an on run.
DRAIN_S = 0.8
CONNECTIONS, STREAMS = 64, 1


@dataclass
class Traffic:
    """One way of loading the servers: its label, `pdp serve` flags and policies, and `load`,
    which runs it against a port from body `offset` on and returns (req/s, calls made)."""

    name: str
    flags: tuple[str, ...]
    policies: Path
    load: Callable[[int, int, float], tuple[float, int]]


def varied_traffic() -> Traffic:
    reqs = workload.generate(driver.DISTINCT, resources=1)
    bodies = driver.body_file("pdp-varied-1x3", grpcload.pdp_payload, reqs)
    driver.build()

    def load(port: int, offset: int, duration: float) -> tuple[float, int]:
        r = driver.run(
            port,
            grpcload.PDP_CHECK,
            bodies,
            connections=CONNECTIONS,
            streams=STREAMS,
            duration=duration,
            start=offset % len(reqs),
        )
        if not r.ok:
            raise SystemExit(f"varied load: {r.successes}/{r.requests} succeeded: {r.errors}")
        return r.rps, r.requests

    return Traffic("varied 1x3", (), grpcload.PEERS / "pdp", load)


def repeated_traffic(cache: str, args: argparse.Namespace) -> Traffic:
    body = request_bytes(1, pinned_time=True)
    reply_size: list[int] = []

    def load(port: int, offset: int, duration: float) -> tuple[float, int]:
        if not reply_size:  # h2load checks the reply's size: the first answer gives it
            import grpc

            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                reply = ch.unary_unary(grpcload.PDP_CHECK)(body, timeout=10)
            reply_size.append(len(reply))
        run = argparse.Namespace(**{**vars(args), "duration": duration})
        result = h2load(port, body, reply_size[0], run)
        return result["rps"], int(result["done"])

    flags: tuple[str, ...] = ("--decision-cache", "0") if cache == "off" else ()
    return Traffic(f"repeated 1x3, cache {cache}", flags, policy_dir(), load)


def start(
    root: Path,
    port: int,
    flags: tuple[str, ...],
    env: dict[str, str],
    stderr: Any = None,
    workers: str = "auto",
    policies: Path | None = None,
) -> Any:
    """`pdp serve` from the source tree `root` (its `pdp` package first on the path)."""
    from server import CONTEXT, PRINCIPAL, resources

    from pdp.client import Client, Retry

    proc = subprocess.Popen(
        [
            *(
                sys.executable,
                "-m",
                "pdp.cli.main",
                "serve",
                "--policies",
                str(policies or policy_dir()),
            ),
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
    ap.add_argument("--duration", type=int, default=3, help="seconds per run")
    ap.add_argument(
        "--traffic",
        default="varied,repeated",
        help="varied (50,000 distinct requests, the headline) and/or repeated (one request, "
        "cache on and off)",
    )
    ap.add_argument("--caches", default="on,off", help="decision cache settings, repeated traffic")
    ap.add_argument("--workers", default="auto", help="`pdp serve --workers` (default: auto)")
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="start the servers with --no-pin-workers (by default a lone server pins itself "
        "to the last core)",
    )
    args = ap.parse_args()
    args.connections, args.streams = CONNECTIONS, STREAMS  # read by server.h2load
    kinds = args.traffic.split(",")
    if "repeated" in kinds and not shutil.which("h2load"):
        raise SystemExit("needs h2load (apt-get install -y nghttp2-client)")
    roots = [r.resolve() for r in (args.root or [ROOT])]
    receiver = OtlpReceiver()
    off_env, on_env = server_envs(receiver.port)
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-telemetry-"))
    traffics = [varied_traffic()] if "varied" in kinds else []
    if "repeated" in kinds:
        traffics += [repeated_traffic(cache, args) for cache in args.caches.split(",")]
    print(
        f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores"
    )
    costs: dict[tuple[Path, str], float] = {}
    on_vs_first: dict[str, float] = {}  # per traffic: median of (last root's on / first's)
    try:
        for n, t in enumerate(traffics):
            flags = t.flags + (("--no-pin-workers",) if args.no_pin else ())
            servers: dict[tuple[Path, str], tuple[Any, int, Path]] = {}
            offsets: dict[tuple[Path, str], int] = {}
            try:
                for i, root in enumerate(roots):
                    log = tmp / f"decisions-{i}-{n}.jsonl"
                    for name in ("off", "on"):
                        port = free_port()
                        extra: tuple[str, ...] = ("--otel", "off")
                        if name == "on":
                            extra = ("--otel", "on", "--decision-log", str(log))
                            extra += ("--decision-log-backups", "1000")
                        env = off_env if name == "off" else on_env
                        err_path = tmp / f"stderr-{i}-{t.name}-{name}.txt"
                        with err_path.open("wb") as err:
                            proc = start(
                                root, port, flags + extra, env, err, args.workers, t.policies
                            )
                        servers[(root, name)] = (proc, port, log)
                # A first run per server, not counted: its first calls warm it up.
                for key, (_, port, _) in servers.items():
                    offsets[key] = t.load(port, 0, 1)[1]
                ratios: dict[Path, list[float]] = {root: [] for root in roots}
                done: dict[Path, int] = {root: 0 for root in roots}
                per_round: list[float] = []
                for rnd in range(args.rounds):
                    order = [(root, name) for root in roots for name in ("off", "on")]
                    if rnd % 2:
                        order.reverse()
                    rps: dict[tuple[Path, str], float] = {}
                    for key in order:
                        rps[key], calls = t.load(servers[key][1], offsets[key], args.duration)
                        offsets[key] += calls
                        if key[1] == "on":
                            done[key[0]] += calls
                            time.sleep(DRAIN_S)
                    per_round.append(rps[(roots[-1], "on")] / rps[(roots[0], "on")])
                    for i, root in enumerate(roots):
                        ratios[root].append(rps[(root, "on")] / rps[(root, "off")])
                        print(
                            f"  {t.name:<24} round {rnd + 1} root {i + 1}: "
                            f"off {rps[(root, 'off')]:7.0f}/s  on {rps[(root, 'on')]:7.0f}/s  "
                            f"on/off {ratios[root][-1]:.3f}"
                        )
            finally:
                for proc, _, _ in servers.values():
                    stop_server(proc)
            on_vs_first[t.name] = statistics.median(per_round)
            for i, root in enumerate(roots):
                ratio = statistics.median(ratios[root])
                costs[(root, t.name)] = 1 - ratio
                records = log_lines(servers[(root, "on")][2])
                err = (tmp / f"stderr-{i}-{t.name}-on.txt").read_text(errors="replace")
                drops = [int(n) for n in re.findall(r"total dropped (\d+)", err)]
                lost = f"  DROPPED {max(drops)} RECORDS (queue full)" if drops else ""
                print(
                    f"{t.name}, root {i + 1} ({root}): on/off median {ratio:.3f}, cost "
                    f"{100 * (1 - ratio):.1f}%  ({records} records for {done[root]} calls){lost}"
                )
    finally:
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for i, root in enumerate(roots):
        for t in traffics:
            print(
                f"telemetry cost, {t.name}, root {i + 1}: {100 * costs[(root, t.name)]:.1f}%"
                f"  ({root})"
            )
    if len(roots) == 2:
        print(
            "root 2's on server / root 1's, median of the rounds: "
            + ", ".join(f"{name} {r:.3f}" for name, r in on_vs_first.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

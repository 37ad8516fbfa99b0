"""How `pdp serve --workers N` deals client connections to its workers. Not a test: a benchmark.

Reproduce:  .venv/bin/python bench/spread.py                   (2 workers, 4 and 8 connections,
                                                                 50 repetitions per scheme)
            .venv/bin/python bench/spread.py --reps 20 --workers 3 --connections 3,6

For each scheme of pdp.server.balance — `round-robin` (the default: a BPF program, needs
CAP_BPF or root), `cpu` (classic BPF: the worker of the CPU that takes the SYN) and `hash`
(the kernel's SO_REUSEPORT hash) — one `pdp serve --workers N --balance SCHEME` is started, and
each repetition opens K gRPC connections (one channel each, as K gateway threads would), makes
one call on each, counts the connections each worker holds (/proc: bench/server.py's
connection_split), and closes them. Prints, per scheme and K, how often each split occurred and
how many repetitions left a worker with no connection at all (idle while the others work).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import server as bench_server  # noqa: E402  (bench/server.py: connection_split)
from peers import grpcload  # noqa: E402

HEALTH = "/grpc.health.v1.Health/Check"
SERVING = health_pb2.HealthCheckResponse.SERVING
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def start(workers: int, scheme: str) -> tuple[subprocess.Popen[bytes], int]:
    port = grpcload.free_port()
    cmd = [
        sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(ROOT / "policies"),
        "--listen", f"127.0.0.1:{port}", "--workers", str(workers), "--balance", scheme,
        "--log-level", "WARNING", "--otel", "off",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + 120
    while True:  # SERVING: every worker has its policies (pdp.cli.ready)
        try:
            reply = grpcload.call_raw(port, HEALTH, b"", timeout=2)
            if health_pb2.HealthCheckResponse.FromString(reply).status == SERVING:
                return proc, port
        except grpc.RpcError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("pdp serve did not start")
        time.sleep(0.1)


def one_deal(port: int, sid: int, connections: int, workers: int) -> tuple[int, ...]:
    channels = [
        grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION)
        for _ in range(connections)
    ]
    try:
        for ch in channels:
            ch.unary_unary(grpcload.PDP_CHECK)(PAYLOAD, timeout=30)
        split = bench_server.connection_split(port, sid)
    finally:
        for ch in channels:
            ch.close()
    deadline = time.monotonic() + 10
    while bench_server.connection_split(port, sid) and time.monotonic() < deadline:
        time.sleep(0.01)  # closed on the server side too before the next deal
    return tuple(split + [0] * (workers - len(split)))


PAYLOAD = grpcload.pdp_payload(
    {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["member"]},
        "resources": [{"kind": "document", "id": "d1", "tenant": "acme", "actions": ["read"]}],
    }
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", default="4,8")
    parser.add_argument("--schemes", default="round-robin,cpu,hash")
    args = parser.parse_args()
    sizes = [int(c) for c in args.connections.split(",")]
    print(f"{args.workers} workers, {args.reps} repetitions, {os.cpu_count()} CPUs")
    print(f"{'scheme':<12} {'conns':>5}  {'a worker idle':>13}  splits (count)")
    for scheme in args.schemes.split(","):
        proc, port = start(args.workers, scheme)
        try:
            for k in sizes:
                splits = Counter(
                    one_deal(port, proc.pid, k, args.workers) for _ in range(args.reps)
                )
                idle = sum(n for split, n in splits.items() if 0 in split)
                shown = ", ".join(f"{':'.join(map(str, s))} ({n})" for s, n in splits.most_common())
                print(f"{scheme:<12} {k:>5}  {idle:>6} of {args.reps:<3}  {shown}")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())

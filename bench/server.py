"""Load the gRPC decision server on loopback and compare it with the in-process engine.

    .venv/bin/python bench/server.py [--duration 5] [--connections 8] [--streams 8]

For 1-resource x 3-action and 20-resource x 3-action requests, against `pdp serve --workers 1`
and `--workers 2`, prints throughput and p50/p99 latency, and the ratio of the server's
throughput to the in-process engine deciding the same requests on one core (what serving
costs). Load comes from h2load (Debian `nghttp2-client`) when installed, which drives unary
gRPC from C; otherwise from Python client processes (slower: they then compete for the CPU).
Not a test: figures depend on the machine; say which with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRINCIPAL = {
    "id": "alice",
    "tenant": "acme",
    "roles": ["user"],
    "scopes": ["docs:read", "docs:write", "docs:delete"],
    "attr": {"department": "eng", "kbs": ["kb1"]},
}
CONTEXT = {"ip": "10.1.2.3", "attr": {"mfa": True}}


def resources(n: int) -> list[dict[str, Any]]:
    return [
        {
            "kind": "document",
            "id": f"doc-{i}",
            "tenant": "acme",
            "attr": {
                "owner": "alice" if i % 2 else "bob",
                "classification": "internal",
                "kb": "kb1",
            },
            "actions": ["read", "write", "delete"],
        }
        for i in range(n)
    ]


BUILTIN_POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: documents}
spec:
  resource: document
  actions:
    read: {scopes: ["docs:read"]}
    write: {scopes: ["docs:write"]}
    delete: {scopes: ["docs:delete"]}
  rules:
    - id: owner
      actions: ["*"]
      effect: allow
      condition: resource.attr.owner == principal.id
    - id: kb-read
      actions: [read]
      effect: allow
      condition: has(resource.attr.kb) && resource.attr.kb in principal.attr.kbs
"""


def policy_dir() -> Path:
    """The example policies when they load, else a small built-in directory."""
    from pdp.cli._common import load_and_compile

    try:
        load_and_compile(ROOT / "policies")
        return ROOT / "policies"
    except Exception as exc:
        print(f"(example policies unusable: {exc}; using a built-in policy)")
        d = Path(tempfile.mkdtemp(prefix="pdp-bench-"))
        (d / "document.yaml").write_text(BUILTIN_POLICY)
        return d


def in_process_rps(directory: Path, n: int, seconds: float = 2.0) -> float:
    """Requests/s of parse + decide in this process, as the server decides them."""
    from pdp.cli._common import load_and_compile
    from pdp.engine import Engine
    from pdp.model.request import parse_check_request

    engine = Engine(load_and_compile(directory)[1])
    raw = {"principal": PRINCIPAL, "resources": resources(n), "context": CONTEXT}
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(50):
            engine.check(parse_check_request(raw))
        count += 50
    return count / seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_bytes(n: int) -> bytes:
    from pdp.client._convert import request_to_proto

    return request_to_proto(PRINCIPAL, resources(n), CONTEXT).SerializeToString()


def start_server(directory: Path, workers: int, port: int) -> subprocess.Popen[bytes]:
    from pdp.client import Client, Retry

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(directory)),
            *("--listen", f"127.0.0.1:{port}", "--workers", str(workers)),
            *("--log-level", "WARNING"),
        ]
    )
    # Every worker must be up: new connections land on workers at random.
    patient = Retry(attempts=200, max_backoff_s=0.1)
    for _ in range(10 * workers):
        with Client(f"127.0.0.1:{port}", timeout=60, retry=patient) as c:
            c.check(PRINCIPAL, resources(1), CONTEXT)
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def h2load(port: int, body: bytes, reply_size: int, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "body"
        data.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
        log = Path(tmp) / "log"
        cmd = [
            "h2load", f"http://127.0.0.1:{port}/pdp.v1.DecisionService/Check",
            "-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-c", str(args.connections), "-m", str(args.streams), "-t", "1",
            "-D", str(round(args.duration)), "--warm-up-time", "1", "--log-file", str(log),
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        times = sorted(
            int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()
        )
    done = int(out.split("requests:")[1].split("succeeded,")[0].split(",")[-1].split()[0])
    rps = float(out.split("finished in")[1].split(",")[1].split("req/s")[0])
    received = int(out.split("traffic:")[1].split("(")[1].split(")")[0])
    # h2load judges HTTP status only; a gRPC error reply has no body, so only full reply
    # bytes for every request prove every call was answered.
    framed = reply_size + 5
    if received < done * (framed - 4):
        raise SystemExit(f"h2load: {received} bytes for {done} replies of ~{framed}: errors")
    return {
        "rps": rps,
        "p50_ms": times[len(times) // 2] / 1000,
        "p99_ms": times[int(len(times) * 0.99)] / 1000,
    }


def _py_client(job: tuple[int, bytes, float]) -> list[float]:
    import grpc

    port, body, seconds = job
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/pdp.v1.DecisionService/Check")
        lat, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            call(body, timeout=10)
            lat.append(time.perf_counter() - t)
    return lat


def python_load(port: int, body: bytes, args: argparse.Namespace) -> dict[str, float]:
    jobs = [(port, body, args.duration)] * args.connections
    with Pool(args.connections) as pool:
        lat = sorted(x for part in pool.map(_py_client, jobs) for x in part)
    return {
        "rps": len(lat) / args.duration,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=8, help="client connections")
    parser.add_argument("--streams", type=int, default=8, help="concurrent calls per connection")
    parser.add_argument("--sizes", default="1,20", help="resources per request (3 actions each)")
    parser.add_argument("--workers", default="1,2", help="server worker counts to run")
    parser.add_argument("--json", action="store_true", help="also print results as JSON")
    args = parser.parse_args()

    import grpc

    from pdp.server._gen.pdp.v1 import decision_pb2

    directory = policy_dir()
    tool = "h2load" if shutil.which("h2load") else "python"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"policies: {directory}; load: {tool} -c{args.connections} -m{args.streams}")
    print(f"reproduce: .venv/bin/python bench/server.py --duration {args.duration}")
    sizes = [int(s) for s in args.sizes.split(",")]
    baseline = {n: in_process_rps(directory, n) for n in sizes}
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        port = free_port()
        proc = start_server(directory, workers, port)
        try:
            for n in sizes:
                body = request_bytes(n)
                # One real reply: proves the request decides, and sizes the h2load check.
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    raw = ch.unary_unary("/pdp.v1.DecisionService/Check")(body, timeout=10)
                reply = decision_pb2.CheckResponse.FromString(raw)
                assert len(reply.results) == n
                if tool == "h2load":
                    result = h2load(port, body, len(raw), args)
                else:
                    result = python_load(port, body, args)
                result |= {
                    "workers": workers,
                    "resources": n,
                    "in_process_rps": baseline[n],
                    "ratio": result["rps"] / baseline[n],
                }
                rows.append(result)
        finally:
            stop_server(proc)
    print(
        f"{'request':<10} {'workers':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'in-proc req/s':>14} {'server/in-proc':>15}"
    )
    for r in rows:
        print(
            f"{r['resources']:>2}x3{'':<6} {r['workers']:>7} {r['rps']:>9.0f} {r['p50_ms']:>8.2f}"
            f" {r['p99_ms']:>8.2f} {r['in_process_rps']:>14.0f} {r['ratio']:>15.2f}"
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

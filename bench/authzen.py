"""AuthZEN over HTTP: pdp and Cerbos side by side on the same requests, in one run.

    make bench-compare ARGS=--help     # once: installs the `bench` extra; npm fetches Cerbos
    apt-get install wrk
    .venv/bin/python bench/authzen.py [--duration 10] [--rounds 3] [--connections 16]

Workload: bench/peers/workload.py's generated documents (three tenants, roles, scopes, owners,
classifications, client IPs inside and outside the corporate CIDRs), decided by the same
policy written for each engine (bench/peers/pdp, bench/peers/cerbos). Every request is one
AuthZEN body both servers read the same way: `subject.properties` carries `tenant`, `roles`,
`scopes` (pdp's mapping, docs/AUTHZEN.md) and `cerbos.roles` and `ip` (what Cerbos's AuthZEN
endpoint and its policy read), `context.ip` the client address (pdp's). Two shapes:

- `1 eval`: `POST /access/v1/evaluation`, one document x one action; 50,000 distinct bodies.
- `20 evals`: `POST /access/v1/evaluations`, one subject and context as defaults, 20
  document x action evaluations; 5,000 distinct bodies.

Before loading, a sample of bodies is posted to both servers and their decisions compared
(the count of agreements is printed; a disagreement stops the run). Load: `wrk` (Debian), one
thread pinned to the first core, keep-alive connections, a Lua script that rotates through the
bodies (each connection takes the next body), `--duration` seconds per run; rounds alternate
the order of the servers. Servers: `pdp serve --http-listen` (one process, pinned to the last
core, no decision log) and Cerbos 0.55 (npm `@cerbos/cerbos-linux-x64`, disk store, audit and
telemetry off, `GOMAXPROCS=1` and pinned to the last core). Printed: median req/s and p99 of
each, and pdp's req/s over Cerbos's. Not a test: figures depend on the machine; say which.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from peers import grpcload, workload  # noqa: E402

PDP_POLICIES = ROOT / "bench/peers/pdp"

LUA = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = math.random(#bodies)
local headers = {["Content-Type"] = "application/json"}
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "%(path)s", headers, bodies[i])
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%f %%f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def subject(p: dict[str, Any], ip: str) -> dict[str, Any]:
    return {
        "type": "user",
        "id": p["id"],
        "properties": {
            "tenant": p["tenant"],
            "roles": p["roles"],
            "scopes": p["scopes"],
            "cerbos.roles": p["roles"],
            "ip": ip,
        },
    }


def resource(r: dict[str, Any]) -> dict[str, Any]:
    return {"type": r["kind"], "id": r["id"], "properties": {"tenant": r["tenant"], **r["attr"]}}


def single_bodies(n: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    out = []
    for raw in workload.generate(n, 1, seed=5):
        ip = raw["context"]["ip"]
        r = raw["resources"][0]
        out.append(
            {
                "subject": subject(raw["principal"], ip),
                "action": {"name": rng.choice(workload.ACTIONS)},
                "resource": resource(r),
                "context": {"ip": ip},
            }
        )
    return out


def batch_bodies(n: int, size: int) -> list[dict[str, Any]]:
    rng = random.Random(13)
    out = []
    for raw in workload.generate(n, size, seed=6):
        ip = raw["context"]["ip"]
        out.append(
            {
                "subject": subject(raw["principal"], ip),
                "context": {"ip": ip},
                "evaluations": [
                    {"action": {"name": rng.choice(workload.ACTIONS)}, "resource": resource(r)}
                    for r in raw["resources"]
                ],
            }
        )
    return out


def post(port: int, path: str, body: dict[str, Any]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{port}{path}: {resp.status} {data[:300]!r}")
        return json.loads(data)
    finally:
        conn.close()


def decisions(answer: Any) -> list[bool]:
    if "evaluations" in answer:
        return [e["decision"] for e in answer["evaluations"]]
    return [answer["decision"]]


def wait_ready(port: int, path: str, body: dict[str, Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            post(port, path, body)
            return
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def pdp_server(cpu: str, body: dict[str, Any]) -> Iterator[int]:
    port, grpc_port = grpcload.free_port(), grpcload.free_port()
    cmd = [sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(PDP_POLICIES)]
    cmd += ["--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{port}"]
    cmd += ["--log-level", "WARNING", "--no-pin-workers"]
    proc = subprocess.Popen(
        [*grpcload.taskset(cpu), *cmd], start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(port, "/access/v1/evaluation", body)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


@contextmanager
def cerbos_server(binary: Path, cpu: str, body: dict[str, Any]) -> Iterator[int]:
    port, grpc_port, debug_port = grpcload.free_port(), grpcload.free_port(), grpcload.free_port()
    cmd = [
        str(binary),
        "server",
        f"--config={ROOT / 'bench/peers/cerbos/config.yaml'}",
        f"--debug-listen-addr=127.0.0.1:{debug_port}",
        "--log-level=error",
        f"--set=server.grpcListenAddr=127.0.0.1:{grpc_port}",
        f"--set=server.httpListenAddr=127.0.0.1:{port}",
        f"--set=storage.disk.directory={ROOT / 'bench/peers/cerbos/policies'}",
    ]
    proc = subprocess.Popen(
        [*grpcload.taskset(cpu), *cmd],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GOMAXPROCS": "1"},
    )
    try:
        wait_ready(port, "/access/v1/evaluation", body)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def run_wrk(
    port: int, path: str, bodies_file: Path, args: argparse.Namespace, cpu: str, tmp: Path
) -> tuple[float, float]:
    script = tmp / "rotate.lua"
    script.write_text(LUA % {"bodies": bodies_file, "path": path})
    cmd = [*grpcload.taskset(cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s"]
    cmd += ["--latency", "-s", str(script), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out)
    # A wrong status or a broken connection invalidates the run; a request still unanswered
    # after wrk's 2 s timeout is counted and printed (it is what an overloaded server does).
    if m is None or int(m.group(2)) or "Non-2xx" in out:
        raise RuntimeError(f"wrk reported errors:\n{out}")
    return int(m.group(1)) / args.duration, float(m.group(5)) / 1000, int(m.group(3))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--singles", type=int, default=50_000)
    ap.add_argument("--batches", type=int, default=5_000)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--verify", type=int, default=300, help="bodies compared before loading")
    args = ap.parse_args()
    binary = grpcload.cerbos_binary()
    if binary is None:
        print("Cerbos is not installed (npm @cerbos/cerbos-linux-x64)", file=sys.stderr)
        return 1
    cpus = sorted(os.sched_getaffinity(0))
    client_cpu, server_cpu = str(cpus[0]), str(cpus[-1])
    shapes = {
        "1 eval": ("/access/v1/evaluation", single_bodies(args.singles)),
        f"{args.batch_size} evals": (
            "/access/v1/evaluations",
            batch_bodies(args.batches, args.batch_size),
        ),
    }
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = {}
        for shape, (_path, bodies) in shapes.items():
            files[shape] = tmp / f"{shape.replace(' ', '_')}.jsonl"
            files[shape].write_text("\n".join(json.dumps(b, separators=(",", ":")) for b in bodies))
        first = shapes["1 eval"][1][0]
        servers = {
            "pdp": lambda: pdp_server(server_cpu, first),
            "cerbos": lambda: cerbos_server(binary, server_cpu, first),
        }
        # The same decisions, or the figures compare different work.
        agreed = 0
        with servers["pdp"]() as pdp_port, servers["cerbos"]() as cerbos_port:
            for shape, (path, bodies) in shapes.items():
                for body in bodies[: args.verify]:
                    a, b = (
                        decisions(post(pdp_port, path, body)),
                        decisions(post(cerbos_port, path, body)),
                    )
                    if a != b:
                        print(f"disagreement on {shape}: pdp {a} cerbos {b}\n{json.dumps(body)}")
                        return 1
                    agreed += len(a)
        print(f"verified: {agreed} decisions identical on pdp and Cerbos before loading")
        for r in range(args.rounds):
            order = ["pdp", "cerbos"] if r % 2 == 0 else ["cerbos", "pdp"]
            for name in order:
                with servers[name]() as port:
                    for shape, (path, _bodies) in shapes.items():
                        got = run_wrk(port, path, files[shape], args, client_cpu, tmp)
                        results.setdefault((name, shape), []).append(got)
                        print(
                            f"round {r + 1} {name:<6} {shape:<9} {got[0]:>8.0f} req/s  "
                            f"p99 {got[1]:.2f} ms  timeouts {got[2]}",
                            flush=True,
                        )
    print()
    print(
        f"AuthZEN over HTTP/1.1, wrk -t1 -c{args.connections} -d{args.duration}s rotating "
        f"{args.singles} / {args.batches} distinct bodies; server on cpu {server_cpu}, wrk on "
        f"cpu {client_cpu}; {os.cpu_count()} cpus; median of {args.rounds} rounds"
    )
    print(
        f"{'shape':<10} {'pdp req/s':>10} {'p99 ms':>8} {'cerbos req/s':>13} {'p99 ms':>8} {'pdp/cerbos':>11}"
    )
    for shape in shapes:
        p = results[("pdp", shape)]
        c = results[("cerbos", shape)]
        p_rps, c_rps = statistics.median(x[0] for x in p), statistics.median(x[0] for x in c)
        p_p99, c_p99 = statistics.median(x[1] for x in p), statistics.median(x[1] for x in c)
        print(
            f"{shape:<10} {p_rps:>10.0f} {p_p99:>8.2f} {c_rps:>13.0f} {c_p99:>8.2f} {p_rps / c_rps:>11.2f}"
        )
    timeouts = {
        name: sum(x[2] for (n, _), runs in results.items() if n == name for x in runs)
        for name in ("pdp", "cerbos")
    }
    print(f"requests timed out (wrk, 2 s): pdp {timeouts['pdp']}, cerbos {timeouts['cerbos']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

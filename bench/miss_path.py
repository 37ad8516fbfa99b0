"""Server CPU per uncached Check: `pdp serve --workers 1` answering varied requests.

    .venv/bin/python bench/miss_path.py [--calls 6000] [--clients 3] [--in-flight 8]
                                        [--rounds 3] [--profile DIR]

Real gateways send many principals, many objects and per-request context, so most calls miss
the decision cache. This bench builds thousands of distinct requests on the example policies
(`policies/`: documents of two tenants, principals with varied roles, scopes, knowledge bases,
client IPs and MFA) for two shapes, 1 resource x 3 actions and 20 resources x 3 actions,
serializes them beforehand, and sends each exactly once (so every call is a miss, with the
decision cache on as by default) from `--clients` Python processes with `--in-flight` calls
each. It prints the server's CPU per call: the delta of the server process's user + system
time (/proc/PID/stat) over the measured calls, divided by their number (a warm-up pass of
other distinct requests precedes each measurement). CPU per call moves much less with other
load on the machine than throughput does; the spread over `--rounds` is printed as min-max.

References in the same run: **grpcio floor**, a bare grpcio server with pdp's thread pool (8
RPC threads) whose Check answers an empty reply without reading the request, loaded the same
way, its rounds interleaved with pdp's: what any Python sync-gRPC servicer pays per call before
doing anything. And the in-process thread CPU per call of `engine.check` alone and of the
server's own path without gRPC (parse the bytes, convert, decide, serialize the reply), on other
distinct requests of the same shape. Server minus floor is what pdp's code costs served.

`--profile DIR` also records the server under py-spy (`--native`, speedscope format) during
one extra pass per shape, into DIR/miss_1x3.speedscope.json etc. On a loaded 2-core machine
py-spy counts RPC threads waiting for the GIL or a condition as busy; `perf record -g -p PID`
(Debian `linux-perf`) splits the on-CPU time by library instead (interpreter, grpc, kernel).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Process, Queue
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECK = "/pdp.v1.DecisionService/Check"
TENANTS = ("acme", "globex")
ROLES = ("user", "user", "user", "developer", "admin")
SCOPES = ("docs:read", "docs:write", "docs:delete", "docs:share")
CLASSES = ("public", "internal", "internal", "confidential")
KBS = ("kb-eng", "kb-sales", "kb-ops", "kb-legal")


def _principal(rng: random.Random, n: int) -> dict[str, Any]:
    scopes = [s for s in SCOPES if rng.random() < 0.75] or ["docs:read"]
    return {
        "id": f"user-{n}",
        "tenant": rng.choice(TENANTS),
        "roles": [rng.choice(ROLES)],
        "scopes": scopes,
        "attr": {"kbs": rng.sample(KBS, rng.randint(1, 2))},
    }


def _document(rng: random.Random, n: int, principal: dict[str, Any]) -> dict[str, Any]:
    owner = principal["id"] if rng.random() < 0.3 else f"user-{rng.randrange(100_000)}"
    shared = [principal["id"]] if rng.random() < 0.2 else []
    return {
        "kind": "document",
        "id": f"doc-{n}",
        "tenant": principal["tenant"] if rng.random() < 0.9 else rng.choice(TENANTS),
        "attr": {
            "owner": owner,
            "shared_with": shared,
            "classification": rng.choice(CLASSES),
            "kb": rng.choice(KBS),
        },
        "actions": ["read", "write", "delete"],
    }


def _context(rng: random.Random) -> dict[str, Any]:
    ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    if rng.random() < 0.2:
        ip = f"81.2.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return {"ip": ip, "attr": {"mfa": rng.random() < 0.7}}


def make_requests(count: int, resources: int, seed: int) -> list[bytes]:
    """`count` distinct serialized CheckRequests (distinct principal and resource ids)."""
    from pdp.client._convert import request_to_proto

    rng = random.Random(seed)
    out = []
    for i in range(count):
        principal = _principal(rng, seed * 10_000_000 + i)
        docs = [
            _document(rng, (seed * 10_000_000 + i) * 32 + j, principal) for j in range(resources)
        ]
        msg = request_to_proto(principal, docs, _context(rng), request_id=f"req-{seed}-{i}")
        out.append(msg.SerializeToString())
    return out


def _client(address: str, bodies: list[bytes], in_flight: int, done: Queue) -> None:
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(CHECK, _registered_method=True)
        slots = threading.Semaphore(in_flight)
        errors: list[str] = []
        finished = threading.Event()
        left = [len(bodies)]
        lock = threading.Lock()

        def on_done(f: grpc.Future) -> None:
            if f.exception() is not None:
                errors.append(str(f.exception())[:200])
            slots.release()
            with lock:
                left[0] -= 1
                if not left[0]:
                    finished.set()

        for body in bodies:
            slots.acquire()
            call.future(body, timeout=60).add_done_callback(on_done)
        finished.wait()
    done.put(errors)


def drive(address: str, bodies: list[bytes], clients: int, in_flight: int) -> None:
    """Send every body once, spread over `clients` processes; raise on any failed call."""
    done: Queue = Queue()
    procs = [
        Process(target=_client, args=(address, bodies[i::clients], in_flight, done))
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    errors = [e for _ in procs for e in done.get()]
    for p in procs:
        p.join()
    if errors:
        raise SystemExit(f"{len(errors)} calls failed, e.g. {errors[0]}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen[bytes]:
    from pdp.client import Client, Retry

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(ROOT / "policies")),
            *("--listen", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "WARNING"),
        ],
        start_new_session=True,
    )
    # Until the policies are active (ServerInfo answers before they are).
    with Client(f"127.0.0.1:{port}", timeout=60, retry=Retry(attempts=300, max_backoff_s=0.1)) as c:
        for _ in range(300):
            try:
                c.check(
                    {"id": "u", "tenant": "acme"},
                    [{"kind": "document", "id": "d", "actions": ["read"]}],
                )
                break
            except Exception:
                time.sleep(0.1)
    return proc


def in_process(n: int, count: int, seed: int) -> tuple[float, float]:
    """(engine.check alone, parse + convert + decide + serialize) CPU seconds per call, each
    over its own distinct requests (the IP and other caches see new values, as the server)."""
    from pdp.cli._common import load_and_compile
    from pdp.engine import Engine
    from pdp.model.request import DEFAULT_LIMITS
    from pdp.server._gen.pdp.v1 import decision_pb2 as pb
    from pdp.server.convert import request_from_proto, response_to_proto

    engine = Engine(load_and_compile(ROOT / "policies")[1])
    bodies = make_requests(count, n, seed)
    requests = [request_from_proto(pb.CheckRequest.FromString(b), DEFAULT_LIMITS) for b in bodies]
    bodies = make_requests(count, n, seed + 1)
    t0 = time.thread_time()
    for r in requests:
        engine.check(r)
    t1 = time.thread_time()
    for b in bodies:
        req = request_from_proto(pb.CheckRequest.FromString(b), DEFAULT_LIMITS)
        response_to_proto(engine.check(req)).SerializeToString()
    t2 = time.thread_time()
    return (t1 - t0) / count, (t2 - t1) / count


def serve_floor(port: int) -> None:
    """grpcio's own per-call cost: a server with pdp's thread pool (8 RPC threads) whose Check
    answers an empty reply without reading the request."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.unary_unary_rpc_method_handler(lambda _data, _context: b"")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("pdp.v1.DecisionService", {"Check": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def start_floor(port: int) -> subprocess.Popen[bytes]:
    import grpc

    proc = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(port)])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        channel.unary_unary(CHECK, _registered_method=True)(b"", timeout=60, wait_for_ready=True)
    return proc


def _us(x: float) -> str:
    return f"{x * 1e6:.0f}"


def _spread(xs: list[float]) -> str:
    return f"{_us(statistics.median(xs))} us (rounds {_us(min(xs))}-{_us(max(xs))})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=6000, help="measured 1x3 calls per round")
    ap.add_argument("--clients", type=int, default=3, help="client processes")
    ap.add_argument("--in-flight", type=int, default=8, help="calls in flight per client")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-floor", action="store_true", help="skip the grpcio floor server")
    ap.add_argument("--profile", metavar="DIR", help="py-spy speedscope profiles into DIR")
    ap.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0

    shapes = {"1x3": (1, args.calls), "20x3": (20, max(args.calls // 12, 100))}
    servers = {"pdp": start_server(port := free_port())}
    addresses = {"pdp": f"127.0.0.1:{port}"}
    if not args.no_floor:
        servers["floor"] = start_floor(port := free_port())
        addresses["floor"] = f"127.0.0.1:{port}"
    try:
        seed = 1
        print(
            f"pdp serve --workers 1 (decision cache on; every request distinct: all misses); "
            f"{args.clients} client processes x {args.in_flight} in flight; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        for name, (n, calls) in shapes.items():
            for address in addresses.values():  # warm-up
                drive(address, make_requests(calls // 3, n, seed), args.clients, args.in_flight)
                seed += 1
            per_call: dict[str, list[float]] = {k: [] for k in servers}
            for _ in range(args.rounds):  # rounds interleave the servers
                for key, server in servers.items():
                    bodies = make_requests(calls, n, seed)
                    seed += 1
                    c0 = cpu_seconds(server.pid)
                    drive(addresses[key], bodies, args.clients, args.in_flight)
                    per_call[key].append((cpu_seconds(server.pid) - c0) / calls)
            engine, path = in_process(n, min(calls, 2000), seed)
            seed += 2
            line = f"{name}: server CPU/call {_spread(per_call['pdp'])}, {calls} calls each"
            if "floor" in per_call:
                line += f"; grpcio floor (empty Check) {_spread(per_call['floor'])}"
            print(line)
            print(
                f"     in process (thread CPU): engine.check {_us(engine)} us, "
                f"parse+convert+decide+serialize {_us(path)} us"
            )
            if args.profile:
                out = Path(args.profile) / f"miss_{name}.speedscope.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                bodies = make_requests(calls, n, seed)
                seed += 1
                spy = subprocess.Popen(
                    [str(Path(sys.executable).with_name("py-spy")), "record", "--native",
                     "--format", "speedscope", "--rate", "250", "-o", str(out),
                     "--pid", str(servers["pdp"].pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)
                drive(addresses["pdp"], bodies, args.clients, args.in_flight)
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
                print(f"     profile: {out}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        for server in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

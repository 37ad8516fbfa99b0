"""What a Python gRPC server costs per call before it does anything: the transport floor.

    make bench-compare ARGS=--help     # once: the driver and the `bench` extra (grpclib)
    .venv/bin/python bench/transport_floor.py [--rounds 3] [--seconds 4]

Issue 21 asks for at most 200 µs of server CPU per uncached 1x3 call; pdp's own work on such a
call (parse, convert, decide, serialize) is ~110 µs (bench/miss_path.py). This bench measures
what is left for the transport: each candidate serves `/pdp.v1.DecisionService/Check` with a
handler that answers an empty message without reading the request, pinned to the last core,
loaded by the multi-payload driver (bench/driver/grpcload.c, 4 connections x 8 calls, pinned
to the first core) with pdp's 1x3 request bodies. Printed per candidate: the server's CPU
(user + system, /proc) per call, req/s and p99, medians over rounds interleaved across the
candidates, with their range.

Candidates: grpcio's sync server with pdp's pool of 8 RPC threads (what `pdp serve` runs),
grpcio's asyncio server (`grpc.aio`), and grpclib (asyncio, pure-Python HTTP/2 on h2; skipped
when not installed). A transport whose floor is above 200 µs cannot meet the target whatever
the decision costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from peers import driver, grpcload, workload  # noqa: E402

SERVICE, METHOD = "pdp.v1.DecisionService", "Check"
PATH = f"/{SERVICE}/{METHOD}"
CANDIDATES = ("grpcio sync, 8 threads", "grpcio asyncio", "grpclib")


def serve(candidate: str, port: int) -> None:
    """Run one candidate's empty Check on 127.0.0.1:`port` until killed."""
    if candidate == "grpclib":
        _serve_grpclib(port)
        return
    address = f"127.0.0.1:{port}"
    if candidate == "grpcio asyncio":

        async def empty_async(_request: bytes, _context: object) -> bytes:
            return b""

        async def main() -> None:
            server = grpc.aio.server()
            server.add_generic_rpc_handlers((_handlers(empty_async),))
            server.add_insecure_port(address)
            await server.start()
            await server.wait_for_termination()

        asyncio.run(main())
        return
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((_handlers(lambda _request, _context: b""),))
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()


def _handlers(handler: Callable[..., object]) -> grpc.GenericRpcHandler:
    # Bytes in, bytes out: no (de)serializer, so nothing but the transport runs.
    method = grpc.unary_unary_rpc_method_handler(handler)
    return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})


def _serve_grpclib(port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.encoding.base import CodecBase
    from grpclib.server import Server

    class Raw(CodecBase):
        __content_subtype__ = "proto"

        def encode(self, message: bytes, message_type: object) -> bytes:
            return message

        def decode(self, data: bytes, message_type: object) -> bytes:
            return data

    class Empty:
        async def check(self, stream: object) -> None:
            await stream.recv_message()  # type: ignore[attr-defined]
            await stream.send_message(b"")  # type: ignore[attr-defined]

        def __mapping__(self) -> dict[str, Handler]:
            return {PATH: Handler(self.check, Cardinality.UNARY_UNARY, bytes, bytes)}

    async def main() -> None:
        server = Server([Empty()], codec=Raw())
        await server.start("127.0.0.1", port)
        await server.wait_closed()

    asyncio.run(main())


def available() -> list[str]:
    try:
        import grpclib  # noqa: F401
    except ImportError:
        print("grpclib skipped: not installed (pip install '.[bench]')")
        return list(CANDIDATES[:2])
    return list(CANDIDATES)


def measure(candidate: str, bodies: Path, seconds: float, cpus: list[int]) -> driver.DriverResult:
    port = grpcload.free_port()
    cmd = [*grpcload.taskset(str(cpus[-1])), sys.executable, __file__, "--serve", candidate]
    proc = subprocess.Popen([*cmd, str(port)], start_new_session=True)
    try:
        end = time.monotonic() + 30
        while True:  # ready: the first calls succeed
            try:
                warm = driver.run(port, PATH, bodies, connections=1, streams=1, requests=50)
                if warm.ok:
                    break
            except RuntimeError:
                pass
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"{candidate} never answered")
            time.sleep(0.1)
        load = {"connections": 4, "streams": 8, "cpus": str(cpus[0])}
        driver.run(port, PATH, bodies, requests=3000, **load)  # warm-up
        return driver.run(port, PATH, bodies, duration=seconds, server_session=proc.pid, **load)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--serve", nargs=2, metavar=("CANDIDATE", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    bodies = driver.body_file("pdp-1x3-floor", grpcload.pdp_payload, workload.generate(5_000))
    candidates = available()
    results: dict[str, list[driver.DriverResult]] = {c: [] for c in candidates}
    for r in range(args.rounds):
        for c in candidates if r % 2 == 0 else reversed(candidates):
            res = measure(c, bodies, args.seconds, cpus)
            if not res.ok:
                raise RuntimeError(f"{c}: {res.errors}")
            results[c].append(res)
    print(
        f"\nempty Check, 4 connections x 8 calls, {args.rounds} rounds of {args.seconds:g} s, "
        f"{len(cpus)} CPUs; medians (range)"
    )
    print(f"{'transport':24} {'CPU µs/call':>22} {'req/s':>8} {'p99 ms':>8}")
    for c, rs in results.items():
        cpu = [r.server_cpu_us for r in rs]
        print(
            f"{c:24} {statistics.median(cpu):8.0f} ({min(cpu):.0f}-{max(cpu):.0f})"
            f"{statistics.median(r.rps for r in rs):>11,.0f}"
            f"{statistics.median(r.p99_us for r in rs) / 1000:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

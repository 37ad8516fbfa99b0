"""Why bench/startup.py waits for the port with a plain TCP connect. Not a test: a measurement.

Reproduce:  .venv/bin/python bench/grpc_backoff.py            (5 tries)

A gRPC client that polls a port before anything listens there (a fresh call every 2 ms, no
wait_for_ready, reconnect backoff options at 10 ms) is answered some time after a server
starts listening: grpc's channel is in a connect backoff when the listener appears. This starts
pdp's grpcio server on a free port 250 ms after such a client begins, and prints when it
listened and when the client was answered; then the same with a TCP-connect poll first, as
bench/startup.py now does. Until session 24 bench/startup.py polled the first way, which
charged the delay to whichever server listens late (pdp's supervisor; Cerbos).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

import grpc

from pdp.engine import EngineHolder
from pdp.server import build_server
from pdp.server.config import ServerConfig

OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 10),
]
POLL_S = 0.002
DELAY_S = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one(tcp_first: bool) -> tuple[float, float]:
    """(ms when the server listened, ms when the client was answered), from the client's start."""
    port, listening = free_port(), threading.Event()
    started = time.perf_counter()
    listened_at = [0.0]

    def serve() -> None:
        time.sleep(DELAY_S)
        server = build_server(EngineHolder(), ServerConfig(listen=(f"127.0.0.1:{port}",)))
        server.start()
        listened_at[0] = time.perf_counter()
        listening.set()
        time.sleep(2.0)
        server.stop(0)

    threading.Thread(target=serve, daemon=True).start()
    if tcp_first:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                time.sleep(POLL_S)
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        while True:
            try:
                call(b"", timeout=1.0)
                break
            except grpc.RpcError:
                time.sleep(POLL_S)
    answered = time.perf_counter()
    listening.wait(5)
    return (listened_at[0] - started) * 1000, (answered - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    for tcp_first, label in ((False, "gRPC channel polls"), (True, "TCP connect, then gRPC")):
        for _ in range(args.tries):
            listened, answered = one(tcp_first)
            print(
                f"{label:<24} listening at {listened:4.0f} ms, answered at {answered:4.0f} ms"
                f" (+{answered - listened:.0f} ms)"
            )
            time.sleep(2.2)  # the server of this try stops before the next starts
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench/server.py's count of a run's connections per server process, read from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import load_bench

bench_server = load_bench("server")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# N processes listening on one port with SO_REUSEPORT, each accepting and holding connections;
# one of them also holds a connection it made to another port, which must not count. Used for
# that negative case only; the split across workers is tested on a real `pdp serve --workers`.
LISTENERS = textwrap.dedent(
    """
    import os, socket, sys
    workers, elsewhere = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    for _ in range(workers - 1):
        if os.fork() == 0:  # each worker its own listening socket on the port
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(128)
            os.write(ready_w, b".")
            break
    else:
        listener.listen(128)
        for _ in range(workers - 1):
            os.read(ready_r, 1)
        outgoing = socket.create_connection(("127.0.0.1", elsewhere))
        print(port, flush=True)  # every worker listens: the deal can start
    held = []
    while True:
        held.append(listener.accept()[0])
    """
)


@contextmanager
def listeners(workers: int) -> Iterator[tuple[int, int]]:
    """(port, session id) of `workers` processes listening on one port."""
    other = socket.create_server(("127.0.0.1", 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENERS, str(workers), str(other.getsockname()[1])],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        other.accept()
        yield port, proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):  # its own session: the leader's group
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        other.close()


def wait_for_split(port: int, sid: int, total: int) -> list[int]:
    """The split once all `total` connections are accepted."""
    deadline = time.monotonic() + 10
    while sum(split := bench_server.connection_split(port, sid)) < total:
        assert time.monotonic() < deadline, split
        time.sleep(0.02)
    return split


def test_one_process_holds_every_connection_to_its_port_and_no_other() -> None:
    with listeners(1) as (port, sid):
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            assert wait_for_split(port, sid, 3) == [3]
            # This process holds the client ends: their local ports are not `port`.
            assert bench_server.connection_split(port, os.getsid(0)) == []
        finally:
            for c in clients:
                c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def pdp_serve_workers(workers: int) -> Iterator[tuple[int, int]]:
    """(port, session id) of a real `pdp serve --workers N`, in its own session, SERVING."""
    port = _free_port()
    policies = Path(__file__).resolve().parents[2] / "policies"
    argv = [sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(policies)]
    argv += ["--listen", f"127.0.0.1:{port}", "--workers", str(workers), "--no-pin-workers"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60  # a cap: workers compile the policies on start
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert proc.poll() is None, "pdp serve exited"
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "pdp serve never became SERVING"
                time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_pdp_serve_workers_share_the_connections_most_first() -> None:
    """The real `pdp serve --workers 2`: the supervisor holds none, each worker some."""
    with pdp_serve_workers(2) as (port, sid):
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        try:
            split = wait_for_split(port, sid, 40)
            # Both get some (a 40:0 deal has odds of 2 in 2**40), listed most first.
            assert len(split) == 2 and sum(split) == 40
            assert split == sorted(split, reverse=True)
        finally:
            for c in clients:
                c.close()

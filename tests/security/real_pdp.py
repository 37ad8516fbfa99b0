"""A real `pdp serve --policies DIR` on a free loopback port, for the request-path attack tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

START_TIMEOUT_S = 60.0  # a loaded CI machine compiles the example policies slowly


@dataclass
class Served:
    proc: subprocess.Popen[str]
    address: str
    channel: grpc.Channel
    stub: pb_grpc.DecisionServiceStub
    log: list[str] = field(default_factory=list)

    def check(self, msg: pb.CheckRequest, timeout: float = 10.0) -> pb.CheckResponse:
        return self.stub.Check(msg, timeout=timeout)


def _drain(proc: subprocess.Popen[str], log: list[str], address: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        log.append(line)
        m = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if m and not address:
            address.append(m.group(1))


@contextmanager
def pdp_serve(policies: Path, *flags: str) -> Iterator[Served]:
    """`pdp serve` on 127.0.0.1:0, yielded once health says SERVING; stopped with SIGTERM."""
    with _serve(["--policies", str(policies), "--no-ext-authz", *flags], serving=True) as s:
        yield s


@contextmanager
def pdp_serve_bundle(url: str, *flags: str) -> Iterator[Served]:
    """`pdp serve --bundle URL` (one worker, polling every 0.1 s), yielded once it listens:
    it may serve nothing yet, as when the source's first bundle is refused."""
    argv = ["--bundle", url, "--workers", "1", "--poll-interval", "0.1", "--poll-jitter", "0.05"]
    with _serve([*argv, *flags], serving=False) as s:
        yield s


@contextmanager
def _serve(args: list[str], *, serving: bool) -> Iterator[Served]:
    argv = [sys.executable, "-m", "pdp.cli.main", "serve", "--listen", "127.0.0.1:0", *args]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log: list[str] = []
    address: list[str] = []
    reader = threading.Thread(target=_drain, args=(proc, log, address), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not address:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pdp serve did not start:\n{''.join(log)}")
            time.sleep(0.05)
        channel = grpc.insecure_channel(address[0])
        try:
            health = health_pb2_grpc.HealthStub(channel)
            while serving:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"pdp serve never served:\n{''.join(log)}")
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.1)
            yield Served(proc, address[0], channel, pb_grpc.DecisionServiceStub(channel), log)
        finally:
            channel.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)

"""`--workers N` serves HTTP too: each worker binds the HTTP port with SO_REUSEPORT; a lone
server refuses a port already in use."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from authzen.support import POLICIES, Pdp, pdp_serve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(port: int) -> int:
    """LISTEN sockets on 127.0.0.1:port in /proc/net/tcp."""
    want = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for r in rows if r.split()[1] == want and r.split()[3] == "0A")


BODY = {
    "subject": {
        "type": "user",
        "id": "alice",
        "properties": {"tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
    },
    "action": {"name": "read"},
    "resource": {
        "type": "document",
        "id": "d-100",
        "properties": {"tenant": "acme", "owner": "alice", "classification": "internal"},
    },
}


def test_two_workers_share_the_http_port() -> None:
    grpc_port, http_port = _free_port(), _free_port()
    argv = [
        sys.executable,
        "-m",
        "pdp.cli.main",
        "serve",
        "--policies",
        str(POLICIES),
        "--workers",
        "2",
    ]
    argv += ["--listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        probe = Pdp(proc, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}")
        deadline = time.monotonic() + 60
        while _listeners(http_port) < 2:
            assert proc.poll() is None, "supervisor exited"
            assert time.monotonic() < deadline, f"{_listeners(http_port)} HTTP listeners"
            time.sleep(0.1)
        ready_in_a_row = 0  # each worker loads its policies on its own: wait for both
        while ready_in_a_row < 30:
            try:
                ready_in_a_row = ready_in_a_row + 1 if probe.get("/readyz").status == 200 else 0
            except OSError:
                ready_in_a_row = 0
            assert time.monotonic() < deadline, "workers never all ready"
            time.sleep(0.02)
        for _ in range(20):  # a new connection each: the kernel spreads them over the workers
            reply = probe.post("/access/v1/evaluation", BODY)
            assert reply.status == 200
            assert json.loads(reply.body)["decision"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_a_lone_server_refuses_an_http_port_in_use() -> None:
    with pdp_serve() as first:
        port = first.http_address.rsplit(":", 1)[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pdp.cli.main",
                "serve",
                "--policies",
                str(POLICIES),
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2
        assert "cannot listen" in out.stderr
        assert first.get("/healthz").status == 200


def test_workers_need_a_fixed_http_port() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp.cli.main",
            "serve",
            "--policies",
            str(POLICIES),
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:50999",
            "--http-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "fixed ports" in out.stderr

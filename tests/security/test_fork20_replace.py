"""A worker of `pdp serve --workers N --bundle URL` that dies is replaced by a new interpreter,
not a fork of the supervisor, and the supervisor's private hand-off directory does not outlive
it; real processes and a real HTTP bundle source on 127.0.0.1.

The supervisor re-forked a dead worker while its own threads ran: the bundle poller (inside
urllib, OpenSSL, hashlib, the policy compiler), a timer per download, a rate-limit counter
thread per worker. A fork copies every lock those threads hold at that instant, locked, with
no thread left to release it; the replacement could hang on its first use of one. Now the
first workers are forked while the supervisor has no other thread, and a replacement is
started by exec (pdp.cli.worker). The hang is a race; the kills below are repeated while the
poller is inside a download that never ends, so it would show, and each replacement must be
a new interpreter, which shows the fork is gone every time.

A supervisor killed by SIGKILL left its `pdp-bundles-*` directory (a copy of the bundle) in
the temporary directory for good; the next supervisor removes it.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import make_bundle, serve_bundles

from pdp.bundle.signing import generate_keypair, load_private_key
from pdp.cli.serve import _MIN_WORKER_LIFETIME_S

from .serving import children, health, wait_serving
from .test_workers20_one_bundle import (
    FRESH,
    WAIT_CAP_S,
    WORKERS,
    _by_worker,
    _serve,
    _wait_requests,
)

KILLS = 2


def _age(pid: int) -> float:
    """Seconds since the process started (/proc: start time in clock ticks since boot)."""
    start = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start / os.sysconf("SC_CLK_TCK")


def _old_enough(pid: int) -> None:
    """Wait until the supervisor would restart `pid` rather than take its death for a failed
    start (pdp.cli.serve's minimum lifetime; a wait, not a measurement)."""
    while _age(pid) < _MIN_WORKER_LIFETIME_S + 1:
        time.sleep(0.1)


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _exec_cmdline(pid: int) -> list[str]:
    """The command line of a process just started by exec: empty for a moment inside execve
    (the kernel sets the new one up after the old image is gone)."""
    deadline = time.monotonic() + WAIT_CAP_S
    while (line := _cmdline(pid)) == [""]:
        assert time.monotonic() < deadline, f"{pid} has no command line"
        time.sleep(0.01)
    return line


def test_a_worker_killed_while_the_poller_downloads_is_replaced_and_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"  # where the supervisors make their private directories
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    with serve_bundles(make_bundle(2)) as source:
        source.hold(after=1)  # the first download is answered; every later one hangs
        manager, port, _http = _serve(source.url)
        with manager as served:
            supervisor = served.proc.pid
            wait_serving(port, served, timeout=WAIT_CAP_S)
            served.wait_for(f"all {WORKERS} workers serve things@2.0.0")
            (handoff,) = tmp.glob("pdp-bundles-*")
            first = children(supervisor)
            assert len(first) == WORKERS
            # The first workers are forks: the supervisor's own command line.
            assert all(_cmdline(pid) == _cmdline(supervisor) for pid in first)

            asked = source.requests
            source.set(make_bundle(3))
            _wait_requests(source, asked + 1)  # the poller is inside a download from now on
            for kill in range(KILLS):
                victim = children(supervisor)[kill % WORKERS]
                _old_enough(victim)
                os.kill(victim, signal.SIGKILL)
                served.wait_for(f"worker {victim} replaced by worker", timeout=WAIT_CAP_S)
                new = int(re.findall(rf"worker {victim} replaced by worker (\d+)",
                                     served.output())[-1])  # fmt: skip
                assert "pdp.cli.worker" in _exec_cmdline(new)  # a new interpreter, not a fork
                served.wait_for(f"pdp.bundle[{new}]: activated bundle things 2.0.0",
                                timeout=WAIT_CAP_S)  # fmt: skip
                by_worker = _by_worker(port)  # both live workers answer, with 2.0.0
                assert len(by_worker) == WORKERS, by_worker
                assert set().union(*by_worker.values()) == {"2.0.0"}, by_worker
                assert health(port, timeout=30) == health_pb2.HealthCheckResponse.SERVING
                assert source.answered == 1  # the download of 3.0.0 is still in progress
            assert "Traceback" not in served.output()

            # SIGKILL: no exit path runs, the directory stays behind...
            os.kill(supervisor, signal.SIGKILL)
            served.proc.wait(WAIT_CAP_S)
            assert handoff.is_dir()
        # ... until the next supervisor starts: its owner is gone, so it goes.
        source.release()
        manager, port, _http = _serve(source.url)
        with manager as served:
            wait_serving(port, served, timeout=WAIT_CAP_S)
            assert not handoff.exists()
            assert len(list(tmp.glob("pdp-bundles-*"))) == 1  # the live supervisor's own
            served.proc.send_signal(signal.SIGTERM)
            assert served.exit_code(timeout=WAIT_CAP_S) == 0
        assert list(tmp.glob("pdp-bundles-*")) == []


def _statuses(port: int, n: int = 10) -> set[int | None]:
    """Health as `n` fresh connections (dealt round-robin to the workers) report it."""
    seen = set()
    for _ in range(n):
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=FRESH) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=30
                )
                seen.add(reply.status)
            except grpc.RpcError:
                seen.add(None)
    return seen


def test_a_worker_that_refuses_the_supervisors_bundle_holds_readiness(tmp_path: Path) -> None:
    """A worker checks the supervisor's bundle again before it serves it; one that refused it
    kept serving its old bundle while the supervisor stayed ready and said nothing. Here the
    second trust file changes on disk: the worker started since trusts another key than the
    supervisor does, and refuses 3.0.0, signed by the key it no longer trusts. Now it reports
    the refusal, the supervisor logs it, and every worker's health says NOT_SERVING until every
    worker serves the supervisor's bundle (4.0.0, signed by the key all trust)."""
    keys = {}
    for name in ("release", "team", "other"):
        key_path, pub = generate_keypair(tmp_path / name)
        keys[name] = (load_private_key(key_path), pub)
    trust_release, trust_team = tmp_path / "trust-release.pem", tmp_path / "trust-team.pem"
    trust_release.write_bytes(keys["release"][1].read_bytes())
    trust_team.write_bytes(keys["team"][1].read_bytes())
    trusted = ("--require-signature", "--trust", str(trust_release), "--trust", str(trust_team))
    serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)  # fmt: skip

    def wait_health(wanted: int) -> None:
        deadline = time.monotonic() + WAIT_CAP_S
        while (seen := _statuses(port)) != {wanted}:
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)

    with serve_bundles(make_bundle(2, key=keys["release"][0])) as source:
        manager, port, _http = _serve(source.url, *trusted)
        with manager as served:
            supervisor = served.proc.pid
            wait_serving(port, served, timeout=WAIT_CAP_S)
            served.wait_for(f"all {WORKERS} workers serve things@2.0.0")

            # The team's trust file changes on disk; a worker started from now on reads it.
            trust_team.write_bytes(keys["other"][1].read_bytes())
            victim = children(supervisor)[0]
            _old_enough(victim)
            os.kill(victim, signal.SIGKILL)
            served.wait_for(f"worker {victim} replaced by worker", timeout=WAIT_CAP_S)
            new = int(re.findall(rf"worker {victim} replaced by worker (\d+)",
                                 served.output())[-1])  # fmt: skip
            served.wait_for(f"pdp.bundle[{new}]: activated bundle things 2.0.0",
                            timeout=WAIT_CAP_S)  # fmt: skip
            wait_health(serving)

            # 3.0.0, signed by the team's key: the supervisor and the older worker trust it,
            # the new worker does not, and stays on 2.0.0.
            source.set(make_bundle(3, key=keys["team"][0]))
            served.wait_for(f"pdp.bundle[{new}]: refused bundle from", timeout=WAIT_CAP_S)
            wait_health(not_serving)  # every worker, the one serving 3.0.0 included
            served.wait_for(f"worker {new} refused the bundle the supervisor verified",
                            timeout=WAIT_CAP_S)  # fmt: skip
            assert served.count("serves things@2.0.0") == 1  # the log names what it serves

            # 4.0.0, signed by the release key all of them trust: ready again.
            source.set(make_bundle(4, key=keys["release"][0]))
            served.wait_for(f"all {WORKERS} workers serve things@4.0.0", timeout=WAIT_CAP_S)
            wait_health(serving)
            assert set().union(*_by_worker(port).values()) == {"4.0.0"}
    assert "Traceback" not in served.output()

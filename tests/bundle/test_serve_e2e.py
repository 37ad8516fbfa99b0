"""Real `pdp serve --bundle http://...` processes: swaps under load over gRPC, replicas that
converge forward and back, and a restart that serves the persisted bundle."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from bundle_helpers import ACTIONS, make_bundle, serve_bundles

from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

# Short polls: the twenty swaps each wait for one, and a poll of an unchanged bundle is a 304.
POLL = 0.15
JITTER = 0.05
# A cap on every wait, never a duration under test: a swap takes a poll (<= 0.2 s) plus a
# fetch, verify, compile and test run, which a loaded machine can stretch a lot.
START_TIMEOUT = 30.0


@dataclass
class Replica:
    proc: subprocess.Popen[str]
    address: str
    channel: grpc.Channel
    stub: pb_grpc.DecisionServiceStub

    def info(self) -> pb.ServerInfoResponse:
        return self.stub.ServerInfo(pb.ServerInfoRequest(), timeout=5)


def _read_address(proc: subprocess.Popen[str]) -> str:
    """The port-0 address the server logs at start; stderr keeps draining in a thread."""
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"pdp serve exited early:\n{''.join(lines)}")
        lines.append(line)
        m = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return m.group(1)
    raise AssertionError(f"pdp serve did not start:\n{''.join(lines)}")


@contextmanager
def pdp_serve(url: str, *extra: str) -> Iterator[Replica]:
    argv = [sys.executable, "-m", "pdp.cli.main", "serve", "--bundle", url]
    argv += ["--listen", "127.0.0.1:0", "--poll-interval", str(POLL), "--poll-jitter", str(JITTER)]
    proc = subprocess.Popen(
        [*argv, *extra],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        address = _read_address(proc)
        channel = grpc.insecure_channel(address)
        try:
            yield Replica(proc, address, channel, pb_grpc.DecisionServiceStub(channel))
        finally:
            channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until(condition: Callable[[], bool], what: str, cap: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + cap
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _wait_version(replicas: list[Replica], version: str, cap: float = START_TIMEOUT) -> None:
    """Wait (up to a generous cap) until every replica serves `version`."""
    _wait_until(
        lambda: all(r.info().active_bundle.version == version for r in replicas),
        f"every replica on {version}",
        cap,
    )


CHECK = request_to_proto(
    {"id": "u1", "tenant": "t1", "roles": ["user"]},
    [{"kind": "thing", "id": "r1", "tenant": "t1", "actions": ACTIONS}],
)


def test_twenty_swaps_over_grpc_without_a_failed_or_mixed_call() -> None:
    with serve_bundles(make_bundle(1)) as http, pdp_serve(http.url) as server:
        _wait_version([server], "1.0.0", START_TIMEOUT)
        stop = threading.Event()
        failures: list[str] = []
        versions: set[str] = set()
        calls = [0, 0, 0]

        def client(i: int) -> None:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                while not stop.is_set():
                    try:
                        response = stub.Check(CHECK, timeout=5)
                    except grpc.RpcError as exc:
                        failures.append(f"{exc.code()}: {exc.details()}")
                        continue
                    n = int(response.bundle.version.split(".")[0])
                    actions = response.results[0].actions
                    allowed = {a for a, d in actions.items() if d.effect == pb.EFFECT_ALLOW}
                    if allowed != {f"a{n}"} or response.bundle.revision != f"rev{n:04d}":
                        failures.append(f"{response.bundle.version} allowed {sorted(allowed)}")
                    versions.add(response.bundle.version)
                    calls[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        try:
            for n in range(2, 22):
                http.set(make_bundle(n))
                _wait_version([server], f"{n}.0.0")
                # Once active, version n decides: an exact check from here, whatever the
                # client threads happened to catch of it.
                response = server.stub.Check(CHECK, timeout=5)
                actions = response.results[0].actions
                allowed = {a for a, d in actions.items() if d.effect == pb.EFFECT_ALLOW}
                assert (response.bundle.version, allowed) == (f"{n}.0.0", {f"a{n}"})
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert failures == []
        assert all(c > 0 for c in calls), calls
        assert versions <= {f"{n}.0.0" for n in range(1, 22)}, sorted(versions)
        info = server.info()
        assert info.active_bundle.version == "21.0.0"
        assert info.last_error == ""
        # An unchanged bundle costs a 304, not a download.
        _wait_until(lambda: http.not_modified > 0, "a 304 for the unchanged bundle")


def test_three_replicas_converge_forward_and_back() -> None:
    v1, v2 = make_bundle(1, revision="aaaa1111"), make_bundle(2, revision="bbbb2222")
    with serve_bundles(v1) as http, ExitStack() as stack:
        replicas = [stack.enter_context(pdp_serve(http.url)) for _ in range(3)]
        _wait_version(replicas, "1.0.0")

        http.set(v2)
        _wait_version(replicas, "2.0.0")
        assert {r.info().active_bundle.revision for r in replicas} == {"bbbb2222"}

        http.set(v1)  # rollback
        _wait_version(replicas, "1.0.0")
        for r in replicas:
            info = r.info()
            assert (info.active_bundle.version, info.active_bundle.revision) == (
                "1.0.0",
                "aaaa1111",
            )
            assert info.HasField("activated_at") and info.last_error == ""

        # A bad bundle reaches every replica and is refused by all; they keep serving v1.
        http.set(make_bundle(3, tests_pass=False))
        _wait_until(
            lambda: all("tests fail" in r.info().last_error for r in replicas),
            "every replica to refuse the bad bundle",
        )
        for r in replicas:
            info = r.info()
            assert info.active_bundle.version == "1.0.0"
            assert "tests fail" in info.last_error


def test_restart_with_source_down_serves_the_persisted_bundle(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    with serve_bundles(make_bundle(7)) as http:
        url = http.url
        with pdp_serve(url, "--cache-dir", cache) as server:
            _wait_version([server], "7.0.0")
    # The HTTP server is gone now: nothing listens on its port.
    with pdp_serve(url, "--cache-dir", cache) as server:
        _wait_version([server], "7.0.0")
        response = server.stub.Check(CHECK, timeout=5)
        allowed = {a for a, d in response.results[0].actions.items() if d.effect == pb.EFFECT_ALLOW}
        assert allowed == {"a7"}
        # The persisted bundle is active before the first poll of the dead source (in the
        # background) fails: wait for that failure to be reported.
        _wait_until(
            lambda: "source unavailable" in server.info().last_error,
            "the dead source to be reported",
        )
        assert server.info().active_bundle.version == "7.0.0"

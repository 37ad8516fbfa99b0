"""A restarted `pdp serve --cache-dir` serves its cached last good bundle before the source
answers, through real processes and a real HTTP bundle source on 127.0.0.1 that hangs.

The source was polled first and the cache served only when that poll left nothing serving:
a source that hung (up to `--bundle-fetch-deadline`, 60 s by default) held readiness back on
every restart, and a SIGTERM meanwhile waited for it, though a verified good bundle sat on
disk. Now the cache serves at once (verified, signature and rules as for any bundle), the
source is polled in the background, and a newer good bundle from it replaces the cached one.
A refused cache serves nothing (fail closed) and does not block the source.

The held source sends a byte every half second (its reader's per-read timeout never trips)
until the test releases it; the fetch deadline is 600 s, so nothing here ends the download
but the release.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

# tests/bundle on the path for its bundles and bundle server (real HTTP on 127.0.0.1).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import BundleServer, flip_one_byte, make_bundle, serve_bundles
from server.conftest import free_port
from test_serve_e2e import CHECK

from pdp.bundle.signing import generate_keypair, load_private_key
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from .serving import Served, health, pdp_serve, wait_serving

# Caps on waits, never durations under test.
WAIT_CAP_S = 120.0
HELD_DEADLINE = "600"  # --bundle-fetch-deadline: far beyond every cap here
NOTE = "serving cached bundle; source {url} has not answered yet"


@pytest.fixture
def signer(tmp_path: Path) -> tuple[object, str]:
    key_path, pub_path = generate_keypair(tmp_path / "release")
    return load_private_key(key_path), str(pub_path)


class Pdp:
    """One `pdp serve --bundle URL` on fixed ports (gRPC and HTTP), with its log."""

    def __init__(self, served: Served, port: int, http_port: int) -> None:
        self.served = served
        self.port = port
        self.http_port = http_port

    def stub(self, channel: grpc.Channel) -> pb_grpc.DecisionServiceStub:
        return pb_grpc.DecisionServiceStub(channel)

    def info(self) -> pb.ServerInfoResponse:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            return self.stub(ch).ServerInfo(pb.ServerInfoRequest(), timeout=30)

    def allowed(self) -> set[str]:
        """The actions allowed to the probe, on a fresh connection (any worker's)."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            response = self.stub(ch).Check(CHECK, timeout=30)
        return {a for a, d in response.results[0].actions.items() if d.effect == pb.EFFECT_ALLOW}

    def readyz(self) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait(self, what: str, ok: Callable[[pb.ServerInfoResponse], bool]) -> pb.ServerInfoResponse:
        deadline = time.monotonic() + WAIT_CAP_S
        self.served.wait_for("listening on", timeout=WAIT_CAP_S)
        while True:
            got = self.info()
            if ok(got):
                return got
            assert self.served.proc.poll() is None, self.served.output()
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {got}"
            time.sleep(0.05)


def _serve(source: BundleServer, cache: Path, *flags: str):  # -> context manager of Served
    port, http_port = free_port(), free_port()
    args = [
        "--bundle", source.url, "--cache-dir", str(cache),
        "--listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http_port}",
        "--poll-interval", "0.1", "--poll-jitter", "0.05", "--bundle-fetch-deadline",
        HELD_DEADLINE, "--no-ext-authz", *flags,
    ]  # fmt: skip
    return pdp_serve(*args), port, http_port


def _pdp_health(port: int) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pdp.cli.main", "health", "--address", f"127.0.0.1:{port}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_CAP_S)


def _stop(pdp: Pdp) -> int:
    pdp.served.proc.send_signal(signal.SIGTERM)
    return pdp.served.exit_code(timeout=WAIT_CAP_S)


def test_a_restart_serves_the_cache_while_the_source_hangs_then_its_newer_bundle(
    tmp_path: Path, signer: tuple[object, str]
) -> None:
    key, pub = signer
    signed = ("--require-signature", "--trust", pub)
    cache = tmp_path / "cache"
    with serve_bundles(make_bundle(2, key=key)) as source:
        manager, port, http_port = _serve(source, cache, *signed)
        with manager as served:
            pdp = Pdp(served, port, http_port)
            pdp.wait("2.0.0 from the source", lambda i: i.active_bundle.version == "2.0.0")
            assert _stop(pdp) == 0
        assert (cache / "last-good.pdpb").read_bytes() == make_bundle(2, key=key)

        # The restart: the source has 3.0.0 now, and hangs.
        source.set(make_bundle(3, key=key))
        source.hold()
        asked = source.requests
        manager, port, http_port = _serve(source, cache, *signed)
        with manager as served:
            pdp = Pdp(served, port, http_port)
            wait_serving(port, served, timeout=WAIT_CAP_S)
            # Each worker shows the supervisor's note once it has read the status written
            # beside the bundle, which may be just after it serves: wait until fresh
            # connections (dealt to every worker) all show it.
            deadline, shown = time.monotonic() + WAIT_CAP_S, 0
            while shown < 6:
                assert time.monotonic() < deadline, pdp.info()
                noted = pdp.info().last_error == NOTE.format(url=source.url)
                shown = shown + 1 if noted and "note" in pdp.readyz()[1] else 0
                time.sleep(0 if noted else 0.02)
            got = pdp.info()
            assert got.active_bundle.version == "2.0.0"
            assert got.last_error == NOTE.format(url=source.url)
            assert pdp.allowed() == {"a2"}
            assert pdp.readyz() == (
                200,
                {
                    "ready": True,
                    "bundle": {"name": "things", "version": "2.0.0", "revision": "rev0002"},
                    "note": NOTE.format(url=source.url),
                },
            )
            done = _pdp_health(port)
            assert (done.returncode, done.stdout) == (0, f"127.0.0.1:{port}: SERVING\n")
            # All of it while the first poll is still held at the source.
            served.wait_for("serving the cached bundle until bundle source")
            deadline = time.monotonic() + WAIT_CAP_S
            while source.requests == asked:
                assert time.monotonic() < deadline, "the source was never polled"
                time.sleep(0.02)
            assert source.answered == 1  # the first run's download only
            assert pdp.info().active_bundle.version == "2.0.0"

            source.release()
            got = pdp.wait("3.0.0 from the source", lambda i: i.active_bundle.version == "3.0.0")
            assert got.last_error == ""
            assert pdp.allowed() == {"a3"}
            ready = pdp.readyz()[1]
            assert ready["bundle"]["version"] == "3.0.0" and "note" not in ready
            assert _stop(pdp) == 0
        assert (cache / "last-good.pdpb").read_bytes() == make_bundle(3, key=key)
        assert "Traceback" not in served.output()


def test_a_tampered_cache_is_refused_and_nothing_is_served_until_the_source_answers(
    tmp_path: Path, signer: tuple[object, str]
) -> None:
    key, pub = signer
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "last-good.pdpb").write_bytes(flip_one_byte(make_bundle(5, key=key)))
    with serve_bundles(make_bundle(3, key=key)) as source:
        source.hold()
        manager, port, http_port = _serve(source, cache, "--require-signature", "--trust", pub)
        with manager as served:
            pdp = Pdp(served, port, http_port)
            served.wait_for("refused bundle from cache ")
            served.wait_for("nothing is served until bundle source")
            deadline = time.monotonic() + WAIT_CAP_S
            while source.requests == 0:  # the source is polled all the same
                assert time.monotonic() < deadline, "the source was never polled"
                time.sleep(0.02)
            got = pdp.info()
            assert got.active_bundle.version == ""
            assert got.last_error.startswith("refused bundle from cache "), got.last_error
            assert health(port, timeout=30) == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:
                pdp.allowed()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "no policies are active yet" in (err.value.details() or "")
            assert pdp.readyz() == (503, {"ready": False, "reason": "no bundle is active"})
            assert _pdp_health(port).returncode == 1

            source.release()
            got = pdp.wait("3.0.0 from the source", lambda i: i.active_bundle.version == "3.0.0")
            assert got.last_error == ""
            wait_serving(port, served, timeout=WAIT_CAP_S)
            assert pdp.allowed() == {"a3"}
            assert _stop(pdp) == 0
        assert "Traceback" not in served.output()


def test_a_rollback_below_the_cached_version_is_refused(
    tmp_path: Path, signer: tuple[object, str]
) -> None:
    key, pub = signer
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "last-good.pdpb").write_bytes(make_bundle(3, key=key))
    with serve_bundles(make_bundle(2, key=key)) as source:
        source.hold()
        manager, port, http_port = _serve(source, cache, "--require-signature", "--trust", pub)
        with manager as served:
            pdp = Pdp(served, port, http_port)
            wait_serving(port, served, timeout=WAIT_CAP_S)
            assert pdp.allowed() == {"a3"}

            source.release()  # whoever controls the source serves 2.0.0, validly signed
            got = pdp.wait("the rollback refusal", lambda i: "rollback refused" in i.last_error)
            assert got.last_error.startswith(
                f"serving cached bundle; refused bundle from {source.url}"
            )
            assert "version `2.0.0` ranks below the cached 3.0.0" in got.last_error
            assert got.active_bundle.version == "3.0.0"
            assert pdp.allowed() == {"a3"}
            assert health(port, timeout=30) == health_pb2.HealthCheckResponse.SERVING
            assert _stop(pdp) == 0
    assert (cache / "last-good.pdpb").read_bytes() == make_bundle(3, key=key)


@pytest.mark.parametrize("cached", [True, False], ids=["cache", "no-cache"])
def test_sigterm_while_the_first_poll_hangs_stops_the_server(tmp_path: Path, cached: bool) -> None:
    """The first poll was made by the main thread before it waited for signals: a SIGTERM then
    waited for the download (up to the fetch deadline). Now it runs in the poller's thread and
    the server stops within its documented bound, the source still hanging."""
    cache = tmp_path / "cache"
    if cached:
        cache.mkdir()
        (cache / "last-good.pdpb").write_bytes(make_bundle(2))
    with serve_bundles(make_bundle(3)) as source:
        source.hold()
        manager, port, http_port = _serve(source, cache)
        with manager as served:
            pdp = Pdp(served, port, http_port)
            served.wait_for("listening on")
            if cached:
                wait_serving(port, served, timeout=WAIT_CAP_S)
            deadline = time.monotonic() + WAIT_CAP_S
            while source.requests == 0:
                assert time.monotonic() < deadline, "the source was never polled"
                time.sleep(0.02)
            assert _stop(pdp) == 0, served.output()
            assert source.answered == 0  # it stopped while the download still hung
            served.wait_for("stopped")


def test_every_worker_serves_the_cache_while_the_source_hangs(tmp_path: Path) -> None:
    """`--workers 2`: health says SERVING once both workers serve the same bundle, the cached
    one, while the supervisor polls the hanging source in the background (the workers do not:
    one download, pdp.bundle.handoff); then both move to the newer one."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "last-good.pdpb").write_bytes(make_bundle(2))
    with serve_bundles(make_bundle(3)) as source:
        source.hold()
        manager, port, http_port = _serve(source, cache, "--workers", "2")
        with manager as served:
            pdp = Pdp(served, port, http_port)
            wait_serving(port, served, timeout=WAIT_CAP_S)
            served.wait_for("all 2 workers serve things@2.0.0")
            deadline = time.monotonic() + WAIT_CAP_S
            while source.requests < 1:
                assert time.monotonic() < deadline, "the supervisor never polled the source"
                time.sleep(0.02)
            # Fresh connections, dealt to either worker: each decides from the cache.
            assert {frozenset(pdp.allowed()) for _ in range(20)} == {frozenset({"a2"})}
            assert (source.requests, source.answered) == (1, 0)  # one download, still held

            source.release()
            deadline = time.monotonic() + WAIT_CAP_S
            while {frozenset(pdp.allowed()) for _ in range(20)} != {frozenset({"a3"})}:
                assert time.monotonic() < deadline, "the workers never moved to 3.0.0"
                time.sleep(0.05)
            assert _stop(pdp) == 0, served.output()
        assert "Traceback" not in served.output()

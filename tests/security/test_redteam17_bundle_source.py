"""Whoever controls the bundle source, but not the signing key, through a real `pdp serve`.

Rollback (TUF's rollback attack): a compromised CDN or bucket served an older bundle, validly
signed when it was published (say one with a since-fixed over-permissive rule), and pdp
activated it — the active bundle was whatever the source offered. With `--require-signature`
a bundle ranking below the active one, or of the same version with other content, is now
refused (logged, `last_error`, the active bundle keeps serving); `--bundle-allow-rollback` is
the operator's escape hatch and `--bundle-min-version` a floor that also holds from the start.

Slow drip: the HTTP source's timeout was per read, so a server sending a byte every fraction
of a second held the poll thread for as long as it liked, and no update (a fix included) ever
landed. A download now has an overall deadline (`--bundle-fetch-deadline`): on expiry the
poll is abandoned as a source error and retried at the next poll.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

# tests/bundle on the path for its bundles and bundle server (real HTTP on 127.0.0.1).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import make_bundle, serve_bundles
from test_serve_e2e import CHECK

from pdp.bundle.signing import generate_keypair, load_private_key
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from .real_pdp import pdp_serve_bundle

# Caps on waits, never durations under test.
START_CAP_S = 60.0
WAIT_CAP_S = 60.0
# Small so the tests are quick; the drip below outlasts it by orders of magnitude.
FETCH_DEADLINE_S = "1"
DRIP_EVERY_S = 0.2


@dataclass
class Served:
    stub: pb_grpc.DecisionServiceStub
    log: list[str] = field(default_factory=list)

    def info(self) -> pb.ServerInfoResponse:
        return self.stub.ServerInfo(pb.ServerInfoRequest(), timeout=10)

    def allowed(self) -> set[str]:
        response = self.stub.Check(CHECK, timeout=10)
        return {a for a, d in response.results[0].actions.items() if d.effect == pb.EFFECT_ALLOW}

    def wait(self, what: str, ok: Callable[[pb.ServerInfoResponse], bool]) -> pb.ServerInfoResponse:
        deadline = time.monotonic() + WAIT_CAP_S
        while True:
            got = self.info()
            if ok(got):
                return got
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {got}"
            time.sleep(0.05)

    def wait_log(self, needle: str) -> None:
        # The status can change before the test's reader thread has read the line the server
        # logged just before it: under load the pipe lags.
        deadline = time.monotonic() + WAIT_CAP_S
        while not any(needle in line for line in self.log):
            assert time.monotonic() < deadline, f"no log line with {needle!r}:\n{''.join(self.log)}"
            time.sleep(0.05)


@contextmanager
def pdp_serve(url: str, *flags: str) -> Iterator[Served]:
    with pdp_serve_bundle(url, *flags) as served:
        yield Served(served.stub, served.log)


@pytest.fixture
def signer(tmp_path: Path) -> tuple[object, str]:
    key_path, pub_path = generate_keypair(tmp_path / "release")
    return load_private_key(key_path), str(pub_path)


# -- rollback ---------------------------------------------------------------------------------


def test_an_older_or_reused_signed_version_is_refused_and_the_active_one_keeps_serving(
    signer: tuple[object, str],
) -> None:
    key, pub = signer
    signed = ("--require-signature", "--trust", pub)
    with serve_bundles(make_bundle(2, key=key)) as source, pdp_serve(source.url, *signed) as pdp:
        pdp.wait("2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        assert pdp.allowed() == {"a2"}

        # The attacker serves 1.0.0, validly signed when it was published.
        source.set(make_bundle(1, key=key))
        got = pdp.wait("the rollback refusal", lambda i: "rollback refused" in i.last_error)
        assert "`1.0.0` ranks below the active 2.0.0" in got.last_error
        assert got.active_bundle.version == "2.0.0"
        assert pdp.allowed() == {"a2"}
        assert any(
            "refused bundle from" in line and "rollback refused" in line for line in pdp.log
        ), "".join(pdp.log)

        # Same version, other content (another revision): refused as TUF does.
        source.set(make_bundle(2, key=key, revision="rebuilt"))
        got = pdp.wait("the reuse refusal", lambda i: "has other content" in i.last_error)
        assert (got.active_bundle.version, got.active_bundle.revision) == ("2.0.0", "rev0002")
        assert pdp.allowed() == {"a2"}

        # A higher version is the way forward, and clears the error.
        source.set(make_bundle(3, key=key))
        got = pdp.wait("3.0.0", lambda i: i.active_bundle.version == "3.0.0")
        assert got.last_error == ""
        assert pdp.allowed() == {"a3"}
        assert not any("Traceback" in line for line in pdp.log)


@pytest.mark.parametrize("mode", ["allow-rollback", "unsigned"])
def test_a_deliberate_or_unsigned_rollback_is_served(mode: str, signer: tuple[object, str]) -> None:
    """The escape hatch, and the unsigned case (whoever controls an unsigned source serves
    anything anyway): the older bundle is activated, as before."""
    key, pub = signer
    if mode == "allow-rollback":
        flags: tuple[str, ...] = ("--require-signature", "--trust", pub, "--bundle-allow-rollback")
        old, new = make_bundle(1, key=key), make_bundle(2, key=key)
    else:
        flags, old, new = (), make_bundle(1), make_bundle(2)
    with serve_bundles(new) as source, pdp_serve(source.url, *flags) as pdp:
        pdp.wait("2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        source.set(old)
        got = pdp.wait("1.0.0", lambda i: i.active_bundle.version == "1.0.0")
        assert got.last_error == ""
        assert pdp.allowed() == {"a1"}


def test_a_minimum_version_holds_from_the_start() -> None:
    """After a restart nothing remembers the version served before: the floor does."""
    flags = ("--bundle-min-version", "2.0.0")
    with serve_bundles(make_bundle(1)) as source, pdp_serve(source.url, *flags) as pdp:
        got = pdp.wait("the floor refusal", lambda i: "below the minimum" in i.last_error)
        assert "version `1.0.0` is below the minimum version 2.0.0" in got.last_error
        assert got.active_bundle.version == ""
        with pytest.raises(grpc.RpcError) as caught:
            pdp.allowed()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        source.set(make_bundle(2))
        pdp.wait("2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        assert pdp.allowed() == {"a2"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--bundle-min-version", "v2"), "`v2` is not a semantic version"),
        (("--bundle-fetch-deadline", "0"), "--bundle-fetch-deadline: takes 0.1 to 3600 seconds"),
        (("--bundle-fetch-deadline", "nan"), "--bundle-fetch-deadline: takes 0.1 to 3600"),
    ],
)
def test_bad_source_flags_are_startup_errors(flags: tuple[str, ...], message: str) -> None:
    serve = [sys.executable, "-m", "pdp.cli.main", "serve", "--listen", "127.0.0.1:0"]
    done = subprocess.run(
        [*serve, "--bundle", "http://127.0.0.1:9/bundle.pdpb", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# -- slow drip --------------------------------------------------------------------------------


@dataclass
class DripServer:
    """Serves `bundle` at once, or (`drip`) its headers or body a byte every DRIP_EVERY_S."""

    bundle: bytes
    drip: str = ""  # "", "headers" or "body"
    stop: threading.Event = field(default_factory=threading.Event)
    url: str = ""


@contextmanager
def serve_dripping(initial: bytes) -> Iterator[DripServer]:
    state = DripServer(initial)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            body, drip = state.bundle, state.drip
            head = (
                f"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            if drip == "headers":
                self._drip(head + body)
            elif drip == "body":
                self.wfile.write(head)
                self._drip(body)
            else:
                self.wfile.write(head + body)

        def _drip(self, data: bytes) -> None:
            for i in range(len(data)):
                if state.stop.wait(DRIP_EVERY_S):
                    return
                try:
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                except OSError:  # pdp gave up on us
                    return

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/bundle.pdpb"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("drip", ["body", "headers"])
def test_a_dripping_bundle_server_cannot_hold_updates_back(drip: str) -> None:
    flags = ("--bundle-fetch-deadline", FETCH_DEADLINE_S)
    with serve_dripping(make_bundle(1)) as source, pdp_serve(source.url, *flags) as pdp:
        pdp.wait("1.0.0", lambda i: i.active_bundle.version == "1.0.0")
        # A byte every DRIP_EVERY_S: thousands of seconds for the whole bundle, and no read
        # ever waits long enough for the per-read timeout.
        source.bundle, source.drip = make_bundle(2), drip
        got = pdp.wait("the deadline", lambda i: "did not finish sending" in i.last_error)
        assert "source unavailable" in got.last_error
        assert got.active_bundle.version == "1.0.0"
        assert pdp.allowed() == {"a1"}
        pdp.wait_log("did not finish sending")
        # The poll thread is free: the next poll of a well-behaved source lands the update.
        source.drip = ""
        got = pdp.wait("2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        assert got.last_error == ""
        assert pdp.allowed() == {"a2"}
        assert not any("Traceback" in line for line in pdp.log)


def test_a_restart_remembers_the_cached_version(tmp_path: Path, signer: tuple[object, str]) -> None:
    """The rollback waited for a restart: with --cache-dir the cached last good bundle (verified
    again) is the floor, so the older bundle is refused and the cached one served."""
    key, pub = signer
    flags = ("--require-signature", "--trust", pub, "--cache-dir", str(tmp_path / "cache"))
    with serve_bundles(make_bundle(2, key=key)) as source:
        with pdp_serve(source.url, *flags) as pdp:
            pdp.wait("2.0.0", lambda i: i.active_bundle.version == "2.0.0")
        source.set(make_bundle(1, key=key))
        with pdp_serve(source.url, *flags) as pdp:
            # The cached bundle serves first, then the source's is refused: wait for both.
            got = pdp.wait(
                "the rollback refusal and the cached bundle",
                lambda i: "rollback refused" in i.last_error and i.active_bundle.version != "",
            )
            assert "`1.0.0` ranks below the cached 2.0.0" in got.last_error
            assert got.last_error.startswith("serving cached bundle; refused bundle from")
            assert got.active_bundle.version == "2.0.0"
            assert pdp.allowed() == {"a2"}

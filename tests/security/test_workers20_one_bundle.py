"""Every worker of one `pdp serve --workers N --bundle URL` serves the same bundle revision,
through real processes and a real HTTP bundle source on 127.0.0.1.

Each worker polled the source on its own. A source that answered one worker and hung for the
next left the first serving the bundle and the second nothing (or an older revision): the same
request was decided differently depending on the worker its connection was dealt to, and the
supervisor stayed not ready until the hanging download ended (`--bundle-fetch-deadline`, 600 s
here). Now the supervisor alone polls and verifies, and the workers serve what it hands them
(checked again there; pdp.bundle.handoff).

Workers are told apart by the decision id: a random per-process prefix (16 hex digits) and a
counter. The kernel deals fresh connections to the workers round-robin.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import BundleServer, make_bundle, serve_bundles
from server.conftest import ALICE, DOC, free_port, write_policies
from test_serve_e2e import CHECK

from pdp.bundle.signing import generate_keypair, load_private_key
from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb
from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

from .serving import health, pdp_serve, wait_serving

WAIT_CAP_S = 120.0  # caps on waits, never durations under test
HELD_DEADLINE = "600"  # --bundle-fetch-deadline: far beyond every cap here
WORKERS = 2
PROBE_TIMEOUT_S = 1.5  # lets go of a probe dealt to a stopped worker
# A channel of its own connection: grpc shares one per target between channels otherwise.
FRESH = [("grpc.use_local_subchannel_pool", 1)]


def _serve(url: str, *flags: str):  # -> (context manager of Served, gRPC port, HTTP port)
    port, http_port = free_port(), free_port()
    args = [
        "--bundle", url, "--workers", str(WORKERS),
        "--listen", f"127.0.0.1:{port}", "--http-listen", f"127.0.0.1:{http_port}",
        "--poll-interval", "0.1", "--poll-jitter", "0.05",
        "--bundle-fetch-deadline", HELD_DEADLINE, "--no-ext-authz", *flags,
    ]  # fmt: skip
    return pdp_serve(*args), port, http_port


def _by_worker(port: int) -> dict[str, set[str]]:
    """Bundle versions that decided a Check, by worker (decision id prefix), over fresh
    connections until every worker has answered at least a few times."""
    seen: dict[str, set[str]] = {}
    deadline = time.monotonic() + WAIT_CAP_S
    calls = 0
    while len(seen) < WORKERS or calls < 20:
        assert time.monotonic() < deadline, f"not every worker answered: {seen}"
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=FRESH) as ch:
            reply = pb_grpc.DecisionServiceStub(ch).Check(CHECK, timeout=30)
        seen.setdefault(reply.decision_id[:16], set()).add(reply.bundle.version)
        calls += 1
    return seen


def _wait_requests(source: BundleServer, n: int) -> None:
    deadline = time.monotonic() + WAIT_CAP_S
    while source.requests < n:
        assert time.monotonic() < deadline, f"the source was asked {source.requests} times"
        time.sleep(0.02)


def test_a_source_that_answers_once_then_hangs_gives_every_worker_the_same_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path, pub = generate_keypair(tmp_path / "release")
    key = load_private_key(key_path)
    signed = ("--require-signature", "--trust", str(pub))
    tmp = tmp_path / "tmp"  # where the supervisor makes its private directory
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    with serve_bundles(make_bundle(2, key=key)) as source:
        source.hold(after=1)  # the first request is answered; every later one hangs
        manager, port, _http = _serve(source.url, *signed)
        with manager as served:
            # Ready on the one answer: no worker waits for a download of its own.
            wait_serving(port, served, timeout=WAIT_CAP_S)
            served.wait_for(f"all {WORKERS} workers serve things@2.0.0")
            by_worker = _by_worker(port)
            assert len(by_worker) == WORKERS
            assert set().union(*by_worker.values()) == {"2.0.0"}, by_worker
            assert source.answered == 1
            (handoff,) = tmp.glob("pdp-bundles-*")
            assert handoff.stat().st_mode & 0o777 == 0o700
            assert (handoff / "active.pdpb").read_bytes() == make_bundle(2, key=key)

            # A newer revision: the supervisor's download of it hangs. Every worker keeps
            # serving 2.0.0 and health stays SERVING meanwhile.
            asked = source.requests
            source.set(make_bundle(3, key=key))
            _wait_requests(source, asked + 1)
            assert set().union(*_by_worker(port).values()) == {"2.0.0"}
            statuses = {health(port, timeout=30) for _ in range(10)}
            assert statuses == {health_pb2.HealthCheckResponse.SERVING}

            # Once it arrives, verified, it reaches every worker.
            source.release()
            deadline = time.monotonic() + WAIT_CAP_S
            while set().union(*(by_worker := _by_worker(port)).values()) != {"3.0.0"}:
                assert time.monotonic() < deadline, f"not every worker moved: {by_worker}"
                time.sleep(0.05)
            # One download per revision, by the supervisor (the workers do not poll).
            assert source.answered == 2
            served.proc.send_signal(signal.SIGTERM)
            assert served.exit_code(timeout=WAIT_CAP_S) == 0
        assert not handoff.exists()  # removed at exit
    assert "Traceback" not in served.output()


def _readyz(http_port: int) -> dict:
    url = f"http://127.0.0.1:{http_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def test_readyz_carries_the_cached_note_on_every_worker_with_the_url_masked(
    tmp_path: Path,
) -> None:
    """`/readyz` said ready with no word that the bundle came from the cache while the source
    had not answered (ServerInfo said so); the source URL in it hides its query (a presigned
    URL's signature) and user: `/readyz` is open to any client."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "last-good.pdpb").write_bytes(make_bundle(2))
    with serve_bundles(make_bundle(3)) as source:
        source.hold()
        secret_url = source.url + "?X-Amz-Signature=s3cr3t"
        shown = source.url + "?***"
        manager, port, http_port = _serve(secret_url, "--cache-dir", str(cache))
        with manager as served:
            wait_serving(port, served, timeout=WAIT_CAP_S)
            note = f"serving cached bundle; source {shown} has not answered yet"
            for _ in range(10):  # fresh connections: every worker carries the note
                assert _readyz(http_port) == {
                    "ready": True,
                    "bundle": {"name": "things", "version": "2.0.0", "revision": "rev0002"},
                    "note": note,
                }
                with grpc.insecure_channel(f"127.0.0.1:{port}", options=FRESH) as ch:
                    info = pb_grpc.DecisionServiceStub(ch).ServerInfo(
                        pb.ServerInfoRequest(), timeout=30
                    )
                assert info.last_error == note

            source.release()  # the newer bundle: the note goes, on every worker
            deadline = time.monotonic() + WAIT_CAP_S
            while any(
                (r := _readyz(http_port))["bundle"]["version"] != "3.0.0" or "note" in r
                for _ in range(10)
            ):
                assert time.monotonic() < deadline, "the note never went"
                time.sleep(0.05)
    assert "s3cr3t" not in served.output()


def test_workers_number_their_decisions_apart(tmp_path: Path) -> None:
    """Decision ids are a per-process random prefix and a counter, drawn when pdp.engine is
    imported; the supervisor imports it before it forks, so every worker had the same prefix
    and the same counter start: worker A's first decision and worker B's first decision had
    one id (a decision log, an audit trail keyed by it, mixed them up). Each worker draws its
    own now."""
    policies = write_policies(tmp_path)
    port = free_port()
    args = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--workers", "2"]
    request = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None)
    with pdp_serve(*args, "--decision-cache", "0") as served:
        wait_serving(port, served, timeout=WAIT_CAP_S)
        ids = []
        for _ in range(40):  # round-robin: twenty each
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=FRESH) as ch:
                ids.append(pb_grpc.DecisionServiceStub(ch).Check(request, timeout=30).decision_id)
        assert len({i[:16] for i in ids}) == WORKERS, ids
        assert len(set(ids)) == len(ids), sorted(ids)


def _answered_readyz(http_port: int, wanted: int) -> list[tuple[int, dict]]:
    """`wanted` `/readyz` answers over fresh connections; a connection dealt to a stopped
    worker gets none and is let go (its time-out is no measure of anything)."""
    answers: list[tuple[int, dict]] = []
    deadline = time.monotonic() + WAIT_CAP_S
    while len(answers) < wanted:
        assert time.monotonic() < deadline, f"only {len(answers)} answers"
        url = f"http://127.0.0.1:{http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
                answers.append((response.status, json.loads(response.read())))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read())))
        except (TimeoutError, urllib.error.URLError):
            continue
    return answers


def test_readyz_waits_until_every_worker_serves(tmp_path: Path) -> None:
    """A worker's `/readyz` said 200 as soon as that worker had a bundle, while its gRPC health
    stayed NOT_SERVING until every worker served it: a load balancer probing HTTP sent callers
    to the sibling with nothing to serve (`no policies are active yet`). Here one worker is
    stopped (SIGSTOP) before any bundle exists; the other's `/readyz` is 503 until it runs."""
    with serve_bundles(make_bundle(2)) as source:
        source.hold()
        manager, _port, http_port = _serve(source.url)
        with manager as served:
            served.wait_for("http listening on", count=WORKERS)
            line = next(x for x in served.output().splitlines() if "supervising" in x)
            pids = [int(p) for p in re.findall(r"\d+", line.rsplit("[", 1)[1])]
            running, stopped = pids
            os.kill(stopped, signal.SIGSTOP)
            try:
                source.release()
                served.wait_for(f"pdp.bundle[{running}]: activated bundle things 2.0.0")
                answers = _answered_readyz(http_port, 4)
                held = (
                    503,
                    {"ready": False, "reason": "not every worker serves the same bundle yet"},
                )
                assert answers == [held] * 4
            finally:
                os.kill(stopped, signal.SIGCONT)
            served.wait_for(f"all {WORKERS} workers serve things@2.0.0")
            deadline = time.monotonic() + WAIT_CAP_S
            while {a[0] for a in _answered_readyz(http_port, 10)} != {200}:
                assert time.monotonic() < deadline, "never ready on every worker"
                time.sleep(0.05)
    assert "Traceback" not in served.output()

"""The supervisor of `pdp serve --workers N` knows what each worker swapped in, and `--watch`
is the supervisor's alone; real processes, real files, a real HTTP bundle source on 127.0.0.1.

A hand-off file changed on disk between the supervisor's write and the workers' read (here:
replaced by another validly signed bundle, older than the supervisor's) was served by every
worker that read it, while the supervisor, which compared the workers with each other only,
stayed ready. Now each worker reports the hand-off it had been told of and the archive it
serves after every read; one that read the file after the supervisor wrote it and serves
another archive is logged, every worker is held NOT_SERVING, and the bundle is written again.

The order is made certain by stopping the workers (SIGSTOP) before the supervisor hands off,
changing the file while they are stopped, then letting one run: it reads the changed file,
and the other, still stopped, keeps the service unready after the first has recovered.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import make_bundle, serve_bundles

from pdp.bundle.signing import generate_keypair, load_private_key

from .test_workers20_one_bundle import (
    WAIT_CAP_S,
    WORKERS,
    _answered_readyz,
    _by_worker,
    _serve,
)

HELD = (503, {"ready": False, "reason": "not every worker serves the same bundle yet"})


def _worker_pids(output: str) -> list[int]:
    line = next(x for x in output.splitlines() if "supervising" in x)
    return [int(p) for p in re.findall(r"\d+", line.rsplit("[", 1)[1])]


def _wait_file(path: Path, data: bytes) -> None:
    deadline = time.monotonic() + WAIT_CAP_S
    while not path.is_file() or path.read_bytes() != data:
        assert time.monotonic() < deadline, f"{path} never held the bundle"
        time.sleep(0.02)


def test_a_worker_serving_another_bundle_than_the_one_handed_off_holds_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_path, pub = generate_keypair(tmp_path / "release")
    key = load_private_key(key_path)
    tmp = tmp_path / "tmp"  # where the supervisor makes its private directory
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    with serve_bundles(make_bundle(2, key=key)) as source:
        manager, port, http_port = _serve(source.url, "--require-signature", "--trust", str(pub))
        with manager as served:
            served.wait_for(f"all {WORKERS} workers serve things@2.0.0")
            first, second = _worker_pids(served.output())
            (handoff,) = tmp.glob("pdp-bundles-*")
            active = handoff / "active.pdpb"
            for pid in (first, second):
                os.kill(pid, signal.SIGSTOP)
            try:
                # The supervisor hands off 4.0.0; before any worker reads it, the file becomes
                # 3.0.0: validly signed and newer than what the workers serve, so they take it.
                source.set(make_bundle(4, key=key))
                _wait_file(active, make_bundle(4, key=key))
                forged = handoff / "forged"
                forged.write_bytes(make_bundle(3, key=key))
                os.replace(forged, active)
                os.kill(first, signal.SIGCONT)
                served.wait_for(f"worker {first} serves things@3.0.0", timeout=WAIT_CAP_S)
                assert "not the bundle the supervisor handed off" in served.output()
                # Written again: the running worker moves to 4.0.0, and stays held while its
                # stopped sibling has not shown it serves it.
                served.wait_for(f"pdp.bundle[{first}]: activated bundle things 4.0.0")
                assert _answered_readyz(http_port, 4) == [HELD] * 4
            finally:
                for pid in (first, second):
                    os.kill(pid, signal.SIGCONT)
            served.wait_for(f"all {WORKERS} workers serve things@4.0.0")
            assert set().union(*_by_worker(port).values()) == {"4.0.0"}
            deadline = time.monotonic() + WAIT_CAP_S
            while {a[0] for a in _answered_readyz(http_port, 6)} != {200}:
                assert time.monotonic() < deadline, "never ready on every worker"
                time.sleep(0.05)
    assert "Traceback" not in served.output()


NOTES = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: ["notes:read"]}
  rules:
    - id: owner-read
      actions: [read]
      effect: allow
      condition: resource.attr.owner == principal.id
"""
NOTES_SUITE = """
apiVersion: pdp/v1
kind: TestSuite
metadata: {id: notes-tests}
spec:
  principals:
    ann: {id: ann, tenant: t1, roles: [user], scopes: ["notes:read"]}
  resources:
    mine: {kind: note, id: n1, tenant: t1, attr: {owner: ann}}
  cases:
    - name: owner reads
      principal: ann
      resource: mine
      expect: {read: allow}
"""
BOB = {"id": "bob", "tenant": "t1", "roles": ["user"], "scopes": ["notes:read"]}
ANNS_NOTE = {
    "kind": "note",
    "id": "n1",
    "tenant": "t1",
    "attr": {"owner": "ann"},
    "actions": ["read"],
}


def _bob_reads_by_worker(port: int) -> dict[str, set[int]]:
    """Bob's effect on ann's note, by worker (decision id prefix), over fresh connections
    until every worker has answered a few times."""
    import grpc

    from pdp.client._convert import request_to_proto
    from pdp.server._gen.pdp.v1 import decision_pb2_grpc as pb_grpc

    from .test_workers20_one_bundle import FRESH

    request = request_to_proto(BOB, [ANNS_NOTE], None)
    seen: dict[str, set[int]] = {}
    deadline = time.monotonic() + WAIT_CAP_S
    calls = 0
    while len(seen) < WORKERS or calls < 10:
        assert time.monotonic() < deadline, f"not every worker answered: {seen}"
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=FRESH) as ch:
            reply = pb_grpc.DecisionServiceStub(ch).Check(request, timeout=30)
        seen.setdefault(reply.decision_id[:16], set()).add(reply.results[0].actions["read"].effect)
        calls += 1
    return seen


def test_watch_is_the_supervisors_and_every_worker_serves_its_verdict(tmp_path: Path) -> None:
    """`--watch` with several workers: each worker watched the directory, compiled and tested
    every edit itself, and served it when its own poll came round, so for a moment the
    workers decided under different revisions. Now the supervisor alone watches, judges each
    edit once (compile, validator, tests) and hands it to every worker."""
    from server.conftest import free_port

    from .serving import pdp_serve

    d = tmp_path / "policies"
    d.mkdir()
    (d / "notes.yaml").write_text(NOTES)
    (d / "notes_test.yaml").write_text(NOTES_SUITE)
    port = free_port()
    args = ["--policies", str(d), "--watch", "--workers", str(WORKERS),
            "--listen", f"127.0.0.1:{port}", "--no-ext-authz"]  # fmt: skip
    allow, deny = 1, 2  # pdp.v1.Effect
    with pdp_serve(*args) as served:
        supervisor = served.proc.pid
        served.wait_for(f"all {WORKERS} workers serve policies@0.0.0")
        assert served.count(f"pdp.watch[{supervisor}]: activated bundle policies 0.0.0") == 1
        assert served.count("pdp.watch[") == served.count(f"pdp.watch[{supervisor}]")
        assert set().union(*_bob_reads_by_worker(port).values()) == {deny}

        (d / "notes.yaml").write_text(NOTES.replace("resource.attr.owner == principal.id", "true"))
        served.wait_for(f"pdp.watch[{supervisor}]: activated bundle policies 0.0.0", count=2)
        deadline = time.monotonic() + WAIT_CAP_S
        while set().union(*(seen := _bob_reads_by_worker(port)).values()) != {allow}:
            assert time.monotonic() < deadline, f"not every worker took the edit: {seen}"
            time.sleep(0.05)

        (d / "notes.yaml").write_text(NOTES + "  oops: [\n")  # refused once, by the supervisor
        served.wait_for(f"pdp.watch[{supervisor}]: refused policies from {d}")
        assert set().union(*_bob_reads_by_worker(port).values()) == {allow}
        # No worker watches: every line of the watcher is the supervisor's.
        assert served.count("pdp.watch[") == served.count(f"pdp.watch[{supervisor}]")
        served.proc.send_signal(signal.SIGTERM)
        assert served.exit_code(timeout=WAIT_CAP_S) == 0
    assert "Traceback" not in served.output()

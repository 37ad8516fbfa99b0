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

"""The parts of the supervisor-to-worker bundle handoff (pdp.bundle.handoff), in one process;
tests/security/test_workers20_one_bundle.py drives them through real `pdp serve --workers 2`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from bundle_helpers import make_bundle
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdp.bundle import MemorySource, Outcome, Reloader
from pdp.bundle.handoff import BUNDLE_FILE, HandoffSource, Publisher, adopt_status
from pdp.bundle.sources import mask_url
from pdp.engine import EngineHolder


def test_the_worker_serves_what_the_supervisor_verified_and_shows_its_status(
    tmp_path: Path,
) -> None:
    key = Ed25519PrivateKey.generate()
    trust = [key.public_key()]
    publisher = Publisher(tmp_path)
    boss = EngineHolder()
    source = MemorySource(make_bundle(2, key=key))
    supervisor = Reloader(
        source, boss, trust=trust, require_signature=True, publish=publisher.bundle
    )
    worker = EngineHolder()
    handed = HandoffSource(tmp_path / BUNDLE_FILE)
    follower = Reloader(handed, worker, trust=trust, require_signature=True)

    assert follower.poll_once() == Outcome.UNCHANGED  # nothing handed yet: no failure either
    assert worker.current is None and worker.status.last_error == ""

    assert supervisor.poll_once() == Outcome.ACTIVATED
    assert follower.poll_once() == Outcome.ACTIVATED
    assert worker.require().bundle.version == "2.0.0"

    # The supervisor's refusal of a rollback is its status; the worker shows it as its own
    # while it serves the bundle that status is about.
    source.put(make_bundle(1, key=key))
    assert supervisor.poll_once() == Outcome.REFUSED
    assert publisher.status(supervisor.active_sha, boss.status)
    assert not publisher.status(supervisor.active_sha, boss.status)  # unchanged: no poke
    adopt_status(tmp_path, worker, follower.active_sha)
    assert "rollback refused" in worker.status.last_error
    assert worker.status.last_error == boss.status.last_error
    assert follower.poll_once() == Outcome.UNCHANGED
    assert worker.require().bundle.version == "2.0.0"


def test_a_bundle_the_workers_cannot_get_is_refused_by_the_supervisor(tmp_path: Path) -> None:
    """Else the supervisor would count as active a bundle no worker serves."""
    publisher = Publisher(tmp_path / "gone")  # the directory does not exist
    holder = EngineHolder()
    reloader = Reloader(MemorySource(make_bundle(2)), holder, publish=publisher.bundle)
    assert reloader.poll_once() == Outcome.REFUSED
    assert holder.current is None and reloader.active_sha == ""
    assert "cannot hand the bundle to the workers" in holder.status.last_error
    assert not (tmp_path / "gone").exists()  # a late poll does not recreate the directory


def test_the_note_outlives_failures_and_goes_with_the_next_bundle() -> None:
    holder = EngineHolder()
    holder.note("serving cached bundle; source S has not answered yet")
    holder.record_failure("serving cached bundle; source unavailable: down")
    assert holder.status.note == "serving cached bundle; source S has not answered yet"
    assert holder.status.last_error == "serving cached bundle; source unavailable: down"


def test_source_urls_are_shown_masked() -> None:
    assert mask_url("https://h.example/b.pdpb") == "https://h.example/b.pdpb"
    assert mask_url("https://u:pw@h.example:8443/b?sig=x#f") == "https://***@h.example:8443/b?***"
    assert mask_url("http://token@h/b") == "http://***@h/b"


def test_directories_of_dead_supervisors_are_removed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor killed by SIGKILL (or the OOM killer) cannot remove its hand-off
    directory; each one left a `pdp-bundles-*` with a copy of the bundle in the temporary
    directory for good. The next supervisor to start removes those whose owner is gone (the
    pid written inside, with its start time: a reused pid is not its owner), and no other."""
    import subprocess
    import sys
    import tempfile

    from pdp.bundle import handoff

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    dead = tmp_path / "pdp-bundles-dead"
    dead.mkdir()
    (dead / handoff.BUNDLE_FILE).write_bytes(make_bundle(2))
    (dead / handoff.OWNER_FILE).write_text(f"{ended.pid} {handoff._start_time(os.getpid())}\n")
    reused = tmp_path / "pdp-bundles-reused"  # a live pid, but not the process that wrote it
    reused.mkdir()
    (reused / handoff.OWNER_FILE).write_text(f"{os.getpid()} 1\n")
    garbled = tmp_path / "pdp-bundles-garbled"
    garbled.mkdir()
    (garbled / handoff.OWNER_FILE).write_text("not a pid")
    alive = handoff.make_handoff_dir()  # this process: alive
    assert alive.parent == tmp_path and (alive / handoff.OWNER_FILE).is_file()
    fresh = tmp_path / "pdp-bundles-fresh"  # no owner file yet: another one's mkdtemp
    fresh.mkdir()
    other = tmp_path / "pdp-cache"  # not ours by name
    other.mkdir()
    assert not dead.exists() and not reused.exists() and not garbled.exists()
    assert handoff.remove_stale_handoff_dirs() == []
    assert alive.is_dir() and fresh.is_dir() and other.is_dir()
    old = time.time() - 3600  # an owner-less one long past any mkdtemp
    os.utime(fresh, (old, old))
    assert handoff.remove_stale_handoff_dirs() == [fresh]
    assert alive.is_dir() and other.is_dir()


def test_the_supervisor_keeps_no_engine_of_the_bundles_it_judges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor compiles each bundle to verify it (its tests run on the engine) but
    decides nothing: it kept the engine in its holder and its reloader, one policy set more in
    memory than its workers hold (bench/RESULTS.md: 127 MiB against 89 with 2,000 policies).
    After a judgement no engine holding rules is left alive, the name of what it verified is."""
    import argparse
    import gc
    import tempfile

    from pdp.cli.serve_bundle import SupervisorBundles
    from pdp.engine import Engine

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its hand-off directory
    bundle = tmp_path / "b.pdpb"
    bundle.write_bytes(make_bundle(2))
    from pdp.cli.main import build_parser

    argv = ["serve", "--bundle", str(bundle)]
    args: argparse.Namespace = build_parser(argv).parse_args(argv)

    def engines() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, Engine) and o.policy_set.rules)

    before = engines()
    supervisor = SupervisorBundles(args)
    try:
        assert supervisor._source.poll_once() == Outcome.ACTIVATED
        assert supervisor.holder.require().bundle.version == "2.0.0"
        assert supervisor.publisher.handed.generation == 1
        assert engines() == before
    finally:
        supervisor.stop(1.0)

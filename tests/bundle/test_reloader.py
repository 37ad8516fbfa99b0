"""The reloader swaps in good bundles only; a bad one is refused while the old one serves."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from bundle_helpers import allowed_actions, flip_one_byte, make_bundle, probe_request
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdp.bundle import DirectorySource, FileSource, MemorySource, Outcome, Reloader
from pdp.engine import EngineHolder


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _serving(holder: EngineHolder) -> tuple[str, set[str]]:
    engine = holder.require()
    response = engine.check(probe_request())
    effects = {a: d.effect for a, d in response.results[0].actions.items()}
    return response.bundle.version, allowed_actions(effects)


# A cap on waits for the background poll, never a duration under test.
WAIT_CAP_S = 60.0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("flipped", "archive|digest|signature"),
        ("unsigned", "signature check failed: unsigned"),
        ("compile_error", "does not compile"),
        ("tests_fail", "tests fail"),
        ("wrong_key", "signature check failed: untrusted"),
    ],
)
def test_bad_bundle_is_refused_and_the_old_one_keeps_serving(
    bad: str, reason: str, key: Ed25519PrivateKey
) -> None:
    candidates = {
        "flipped": lambda: flip_one_byte(make_bundle(2, key=key)),
        "unsigned": lambda: make_bundle(2),
        "compile_error": lambda: make_bundle(2, key=key, compile_ok=False),
        "tests_fail": lambda: make_bundle(2, key=key, tests_pass=False),
        "wrong_key": lambda: make_bundle(2, key=Ed25519PrivateKey.generate()),
    }
    source = MemorySource(make_bundle(1, key=key))
    holder = EngineHolder()
    reloader = Reloader(source, holder, trust=[key.public_key()], require_signature=True)
    assert reloader.poll_once() is Outcome.ACTIVATED
    assert _serving(holder) == ("1.0.0", {"a1"})
    activated_at = holder.status.activated_at

    source.put(candidates[bad]())
    assert reloader.poll_once() is Outcome.REFUSED
    assert _serving(holder) == ("1.0.0", {"a1"})
    info = holder.require().bundle
    assert (info.name, info.version, info.revision) == ("things", "1.0.0", "rev0001")
    status = holder.status
    assert status.activated_at == activated_at
    assert status.last_attempt_at is not None and status.last_attempt_at >= activated_at
    assert re.search(reason, status.last_error), status.last_error

    # The same bad bytes are not retried on every poll; a good bundle clears the error.
    assert reloader.poll_once() is Outcome.UNCHANGED
    source.put(make_bundle(3, key=key))
    assert reloader.poll_once() is Outcome.ACTIVATED
    assert _serving(holder) == ("3.0.0", {"a3"})
    assert holder.status.last_error == ""


def test_unsigned_bundles_load_when_no_signature_is_required() -> None:
    holder = EngineHolder()
    reloader = Reloader(MemorySource(make_bundle(4)), holder)
    assert reloader.poll_once() is Outcome.ACTIVATED
    assert _serving(holder) == ("4.0.0", {"a4"})


def test_restart_with_source_unreachable_serves_the_persisted_bundle(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    cache = tmp_path / "cache"
    source = MemorySource(make_bundle(5, key=key))
    first = EngineHolder()
    trust = [key.public_key()]
    r1 = Reloader(
        source, first, trust=trust, require_signature=True, cache_dir=cache, poll_interval=60
    )
    r1.start()
    r1.stop()
    assert _serving(first) == ("5.0.0", {"a5"})
    assert (cache / "last-good.pdpb").is_file()

    # A refused bundle never replaces the persisted one.
    source.put(make_bundle(6))  # unsigned
    assert r1.poll_once() is Outcome.REFUSED

    source.unavailable = True
    second = EngineHolder()
    r2 = Reloader(
        source, second, trust=trust, require_signature=True, cache_dir=cache, poll_interval=60
    )
    r2.start()
    try:
        # The cache serves before the source is polled (in the background): wait for the poll.
        assert _serving(second) == ("5.0.0", {"a5"})
        assert r2.wait_first_poll(WAIT_CAP_S)
        assert _serving(second) == ("5.0.0", {"a5"})
        assert second.status.last_error.startswith("serving cached bundle; source unavailable")
    finally:
        r2.stop()


def test_a_tampered_cache_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "last-good.pdpb").write_bytes(make_bundle(5))  # unsigned: someone wrote it
    source = MemorySource()
    holder = EngineHolder()
    reloader = Reloader(
        source, holder, trust=[key.public_key()], require_signature=True, cache_dir=cache
    )
    assert reloader.load_cached() is False
    assert holder.current is None
    assert "unsigned" in holder.status.last_error


def test_directory_source_serves_the_highest_version(tmp_path: Path) -> None:
    for n in (2, 10, 9):
        (tmp_path / f"things-{n}.0.0.pdpb").write_bytes(make_bundle(n))
    (tmp_path / "things-11.0.0-rc.1.pdpb").write_bytes(make_bundle(11))  # pre-release < 11.0.0
    (tmp_path / "README.txt").write_text("not a bundle")
    holder = EngineHolder()
    reloader = Reloader(DirectorySource(tmp_path), holder)
    assert reloader.poll_once() is Outcome.ACTIVATED
    assert _serving(holder) == ("11.0.0", {"a11"})
    (tmp_path / "things-11.0.0.pdpb").write_bytes(make_bundle(12))
    assert reloader.poll_once() is Outcome.ACTIVATED
    assert _serving(holder)[1] == {"a12"}
    assert reloader.poll_once() is Outcome.UNCHANGED


def test_file_source_reloads_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "b.pdpb"
    path.write_bytes(make_bundle(1))
    holder = EngineHolder()
    reloader = Reloader(FileSource(path), holder, poll_interval=0.05, jitter=0.01)
    reloader.start()
    try:
        assert _serving(holder)[1] == {"a1"}
        tmp = tmp_path / "b.tmp"
        tmp.write_bytes(make_bundle(2))
        tmp.replace(path)
        deadline = time.monotonic() + 5
        while _serving(holder)[1] != {"a2"} and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _serving(holder) == ("2.0.0", {"a2"})
    finally:
        reloader.stop()

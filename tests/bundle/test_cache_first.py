"""A restart serves the cached last good bundle before the source answers (as OPA serves its
persisted bundles), then polls the source in the background.

The source was polled first and the cache used only when that left nothing serving, so a
source that hung (up to its fetch deadline, 60 s by default) held readiness back on every
restart, though a verified good bundle sat on disk. The cache is judged by the same rules as
any bundle (signature, name, minimum version); one refused serves nothing (fail closed) and the
source is polled as before. The source here is a real HTTP server on 127.0.0.1 that hangs,
sending a byte every half second, until the test releases it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bundle_helpers import allowed_actions, flip_one_byte, make_bundle, probe_request, serve_bundles
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdp.bundle import HttpSource, Reloader
from pdp.engine import EngineHolder

# Caps on waits, never durations under test; the held download outlasts them (600 s deadline).
WAIT_CAP_S = 60.0
FETCH_DEADLINE_S = 600.0


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _serving(holder: EngineHolder) -> tuple[str, set[str]]:
    response = holder.require().check(probe_request())
    effects = {a: d.effect for a, d in response.results[0].actions.items()}
    return response.bundle.version, allowed_actions(effects)


def _cache(tmp_path: Path, data: bytes) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    (cache / "last-good.pdpb").write_bytes(data)
    return cache


def _wait(what: str, ok: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_CAP_S
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _reloader(
    url: str, holder: EngineHolder, cache: Path, key: Ed25519PrivateKey, **kw
) -> Reloader:
    return Reloader(
        HttpSource(url, fetch_deadline=FETCH_DEADLINE_S),
        holder,
        trust=[key.public_key()],
        require_signature=True,
        cache_dir=cache,
        poll_interval=60,
        **kw,
    )


def test_the_cache_serves_while_the_source_hangs_then_the_newer_bundle_replaces_it(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    cache = _cache(tmp_path, make_bundle(2, key=key))
    with serve_bundles(make_bundle(3, key=key)) as source:
        source.hold()
        holder = EngineHolder()
        reloader = _reloader(source.url, holder, cache, key)
        reloader.start()  # returns with the cache serving: the poll is in the background
        try:
            assert _serving(holder) == ("2.0.0", {"a2"})
            note = f"serving cached bundle; source {source.url} has not answered yet"
            assert holder.status.last_error == note
            _wait("the first poll to reach the source", lambda: source.requests == 1)
            assert source.answered == 0 and not reloader.wait_first_poll(0)
            assert _serving(holder) == ("2.0.0", {"a2"})

            source.release()
            assert reloader.wait_first_poll(WAIT_CAP_S)
            assert _serving(holder) == ("3.0.0", {"a3"})
            assert holder.status.last_error == ""
            assert (cache / "last-good.pdpb").read_bytes() == make_bundle(3, key=key)
        finally:
            reloader.stop()


def test_a_source_offering_the_cached_bundle_clears_the_note(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    cached = make_bundle(2, key=key)
    cache = _cache(tmp_path, cached)
    with serve_bundles(cached) as source:
        holder = EngineHolder()
        reloader = _reloader(source.url, holder, cache, key)
        reloader.start()
        try:
            activated_at = holder.status.activated_at
            assert reloader.wait_first_poll(WAIT_CAP_S)
            assert holder.status.last_error == ""
            assert holder.status.activated_at == activated_at  # the same bundle: no swap
            assert _serving(holder) == ("2.0.0", {"a2"})
        finally:
            reloader.stop()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("tampered", "archive|digest|signature|manifest"),
        ("unsigned", "signature check failed: unsigned"),
        ("other name", "bundle name `sandbox` is not `things` \\(--bundle-name\\)"),
        ("below the minimum", "below the minimum version 2.0.0"),
    ],
)
def test_a_refused_cache_serves_nothing_and_does_not_block_the_source(
    tmp_path: Path, key: Ed25519PrivateKey, bad: str, reason: str
) -> None:
    cached = {
        "tampered": lambda: flip_one_byte(make_bundle(5, key=key)),
        "unsigned": lambda: make_bundle(5),
        "other name": lambda: make_bundle(5, key=key, name="sandbox"),
        "below the minimum": lambda: make_bundle(1, key=key),
    }[bad]()
    cache = _cache(tmp_path, cached)
    with serve_bundles(make_bundle(3, key=key)) as source:
        source.hold()
        holder = EngineHolder()
        reloader = _reloader(source.url, holder, cache, key, name="things", min_version="2.0.0")
        reloader.start(wait=False)  # as `pdp serve` starts it
        try:
            assert holder.current is None  # fail closed: nothing from a refused cache
            error = holder.status.last_error
            assert error.startswith("refused bundle from cache "), error
            assert re.search(reason, error), error
            _wait("the first poll to reach the source", lambda: source.requests == 1)
            assert holder.current is None

            source.release()
            assert reloader.wait_first_poll(WAIT_CAP_S)
            assert _serving(holder) == ("3.0.0", {"a3"})
            assert holder.status.last_error == ""
        finally:
            reloader.stop()


def test_a_source_bundle_below_the_cached_one_is_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    cache = _cache(tmp_path, make_bundle(3, key=key))
    with serve_bundles(make_bundle(2, key=key)) as source:
        holder = EngineHolder()
        reloader = _reloader(source.url, holder, cache, key)
        reloader.start()
        try:
            assert reloader.wait_first_poll(WAIT_CAP_S)
            assert _serving(holder) == ("3.0.0", {"a3"})
            error = holder.status.last_error
            assert error.startswith(f"serving cached bundle; refused bundle from {source.url}")
            assert "version `2.0.0` ranks below the cached 3.0.0" in error
            assert (cache / "last-good.pdpb").read_bytes() == make_bundle(3, key=key)
        finally:
            reloader.stop()


def test_a_cache_of_another_name_than_bundle_name_is_no_rollback_floor(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    """Switching names with `--bundle-name NEW` while the cache holds the old name: the cache
    is refused for its name, and must not stand as a floor that refuses every NEW bundle."""
    cache = _cache(tmp_path, make_bundle(5, key=key, name="prod"))
    with serve_bundles(make_bundle(1, key=key, name="staging")) as source:
        holder = EngineHolder()
        reloader = _reloader(source.url, holder, cache, key, name="staging")
        reloader.start()
        try:
            assert reloader.wait_first_poll(WAIT_CAP_S)
            assert holder.require().bundle.name == "staging", holder.status.last_error
            assert _serving(holder) == ("1.0.0", {"a1"})
        finally:
            reloader.stop()

"""Which versions may follow which under `require_signature`, and the HTTP source's deadline.

The end-to-end tests (a real `pdp serve --bundle URL`) are in
tests/security/test_redteam17_bundle_source.py; these drive the reloader and source directly.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bundle_helpers import make_bundle, policy_files
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdp.bundle import HttpSource, MemorySource, Outcome, Reloader, SourceUnavailable
from pdp.bundle.archive import pack
from pdp.bundle.manifest import FileEntry, Manifest, sha256_hex
from pdp.bundle.verify import sign_bundle
from pdp.engine import EngineHolder


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def versioned(version: str, key: Ed25519PrivateKey, *, n: int = 1, revision: str = "r") -> bytes:
    """A signed bundle of any version string (policy tree `n`)."""
    files = policy_files(n)
    manifest = Manifest(
        name="things",
        version=version,
        revision=revision,
        dirty=False,
        build_time="2026-01-01T00:00:00Z",
        builder="pdp test",
        files={p: FileEntry(sha256_hex(c), len(c)) for p, c in files.items()},
    )
    return sign_bundle(pack(manifest.canonical_bytes(), files, None, 1767225600), key)


def _reloader(
    key: Ed25519PrivateKey, first: bytes, **kwargs: object
) -> tuple[Reloader, MemorySource]:
    source = MemorySource(first)
    reloader = Reloader(
        source, EngineHolder(), trust=[key.public_key()], require_signature=True, **kwargs
    )
    assert reloader.poll_once() is Outcome.ACTIVATED
    return reloader, source


@pytest.mark.parametrize(
    ("active", "offered", "outcome"),
    [
        ("2.0.0", "1.9.9", Outcome.REFUSED),
        ("2.0.0", "2.0.0-rc.1", Outcome.REFUSED),  # a pre-release ranks below its release
        ("2.0.0-rc.1", "2.0.0-beta.9", Outcome.REFUSED),  # alphanumeric: beta < rc
        ("2.0.0-rc.2", "2.0.0-rc.10", Outcome.ACTIVATED),  # numeric identifiers: 2 < 10
        ("2.0.0-rc.1", "2.0.0", Outcome.ACTIVATED),
        ("2.0.0", "10.0.0", Outcome.ACTIVATED),  # numbers, not strings
        ("2.0.0+b1", "2.0.0+b2", Outcome.REFUSED),  # build metadata does not rank: same version
    ],
)
def test_versions_are_ranked_as_semver(
    key: Ed25519PrivateKey, active: str, offered: str, outcome: Outcome
) -> None:
    reloader, source = _reloader(key, versioned(active, key, n=1))
    source.put(versioned(offered, key, n=2))
    assert reloader.poll_once() is outcome
    served = reloader.holder.require().bundle.version
    assert served == (offered if outcome is Outcome.ACTIVATED else active)
    if outcome is Outcome.REFUSED:
        assert "rollback refused" in reloader.holder.status.last_error


def test_the_same_manifest_re_signed_is_accepted(key: Ed25519PrivateKey) -> None:
    """Key rotation adds a signature: other archive bytes, the same manifest (and digest)."""
    first = versioned("3.0.0", key)
    reloader, source = _reloader(key, first)
    rotated = sign_bundle(first, Ed25519PrivateKey.generate())
    assert rotated != first
    source.put(rotated)
    assert reloader.poll_once() is Outcome.ACTIVATED
    assert reloader.holder.status.last_error == ""


def test_the_same_version_with_other_content_is_refused(key: Ed25519PrivateKey) -> None:
    reloader, source = _reloader(key, versioned("3.0.0", key, n=3))
    source.put(versioned("3.0.0", key, n=4))
    assert reloader.poll_once() is Outcome.REFUSED
    assert "has other content than the active 3.0.0" in reloader.holder.status.last_error
    assert reloader.holder.require().bundle.version == "3.0.0"


def test_allow_rollback_and_unsigned_sources_accept_older_bundles(key: Ed25519PrivateKey) -> None:
    reloader, source = _reloader(key, make_bundle(2, key=key), allow_rollback=True)
    source.put(make_bundle(1, key=key))
    assert reloader.poll_once() is Outcome.ACTIVATED

    unsigned = MemorySource(make_bundle(2))
    plain = Reloader(unsigned, EngineHolder())
    assert plain.poll_once() is Outcome.ACTIVATED
    unsigned.put(make_bundle(1))
    assert plain.poll_once() is Outcome.ACTIVATED


def test_min_version_applies_to_unsigned_bundles_and_the_cache_too(tmp_path: Path) -> None:
    holder = EngineHolder()
    reloader = Reloader(
        MemorySource(make_bundle(1)), holder, min_version="1.0.1", cache_dir=tmp_path
    )
    assert reloader.poll_once() is Outcome.REFUSED
    assert holder.current is None
    assert "below the minimum version 1.0.1" in holder.status.last_error
    (tmp_path / "last-good.pdpb").write_bytes(make_bundle(1))  # cached before the floor rose
    assert reloader.load_cached() is False
    assert holder.current is None


# -- the HTTP source's deadline -----------------------------------------------------------------


@contextmanager
def raw_server(reply: bytes, *, hold: bool) -> Iterator[str]:
    """A loopback server answering every connection with `reply`, then holding it open (never
    finishing) or closing it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # closing a listener does not wake accept(): look at `stop`
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            conn.recv(65536)
            conn.sendall(reply)
            if not hold:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/bundle.pdpb"
    finally:
        stop.set()
        listener.close()
        for conn in conns:
            conn.close()
        thread.join(5)


def test_a_body_that_never_ends_is_abandoned_at_the_deadline() -> None:
    """The per-read timeout is long (60 s); only the overall deadline can end this fetch."""
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\npartial"
    with raw_server(head, hold=True) as url:
        source = HttpSource(url, timeout=60, fetch_deadline=0.5)
        with pytest.raises(SourceUnavailable, match=r"did not finish sending within 0\.5s"):
            source.fetch()


def test_a_body_cut_short_is_a_source_error_not_a_crash() -> None:
    """http.client hands back a truncated body as if whole: it was refused as a bad archive
    (and not fetched again until the bytes changed) rather than reported as a source error."""
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\npartial"
    with raw_server(head, hold=False) as url:
        holder = EngineHolder()
        reloader = Reloader(HttpSource(url, timeout=10), holder)
        assert reloader.poll_once() is Outcome.UNAVAILABLE
        assert "ended after 7 of 100000 bytes" in holder.status.last_error


@pytest.mark.parametrize("length", ["1\u00b2", "9" * 5000, "-1", " 7"])
def test_a_strange_content_length_is_no_crash(length: str) -> None:
    """Not a declared length to hold the body to (`int("²")` and 5000 digits raise)."""
    head = f"HTTP/1.0 200 OK\r\nContent-Length: {length}\r\n\r\npartial".encode("latin-1")
    with raw_server(head, hold=False) as url:
        holder = EngineHolder()
        reloader = Reloader(HttpSource(url, timeout=10), holder)
        assert reloader.poll_once() in (Outcome.REFUSED, Outcome.UNAVAILABLE)
        assert holder.current is None
        assert holder.status.last_error


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",  # BadStatusLine
        b"HTTP/1.0 200 OK\r\nX-Pad: " + b"a" * 70000 + b"\r\n\r\n",  # LineTooLong
        b"HTTP/1.0 200 OK\r\n" + b"X-Pad: a\r\n" * 101 + b"\r\n",  # more than 100 headers
    ],
)
def test_a_malformed_response_is_a_source_error(reply: bytes) -> None:
    """http.client's own exceptions are no OSError: they escaped the source, and the poller
    logged a traceback instead of recording `last_error`."""
    with raw_server(reply, hold=False) as url:
        holder = EngineHolder()
        reloader = Reloader(HttpSource(url, timeout=10), holder)
        assert reloader.poll_once() is Outcome.UNAVAILABLE
        assert "cannot fetch" in holder.status.last_error

"""A real HTTP server serves bundles with ETags; the reloader polls it and swaps atomically
while clients decide without pause."""

from __future__ import annotations

import threading
import time

from bundle_helpers import allowed_actions, make_bundle, probe_request, serve_bundles

from pdp.bundle import HttpSource, Outcome, Reloader, SourceUnavailable
from pdp.engine import EngineHolder

SWAPS = 20
CLIENTS = 4


def test_http_source_uses_if_none_match() -> None:
    with serve_bundles(make_bundle(1)) as server:
        source = HttpSource(server.url)
        first = source.fetch()
        assert first is not None and first.etag == server.etag()
        assert source.fetch() is None
        assert source.fetch() is None
        assert server.not_modified == 2
        server.set(make_bundle(2))
        second = source.fetch()
        assert second is not None and second.data == make_bundle(2)
        server.available = False
        try:
            source.fetch()
        except SourceUnavailable as exc:
            assert "HTTP 503" in str(exc)
        else:
            raise AssertionError("a 503 must raise SourceUnavailable")


def test_unreachable_url_is_reported_not_raised() -> None:
    with serve_bundles(make_bundle(1)) as server:
        url = server.url
    holder = EngineHolder()
    reloader = Reloader(HttpSource(url, timeout=1), holder)
    assert reloader.poll_once() is Outcome.UNAVAILABLE
    assert holder.current is None
    assert "source unavailable" in holder.status.last_error


def test_twenty_swaps_under_load_without_a_failed_or_mixed_decision() -> None:
    with serve_bundles(make_bundle(1)) as server:
        holder = EngineHolder()
        reloader = Reloader(HttpSource(server.url), holder, poll_interval=0.05, jitter=0.02)
        reloader.start()
        stop = threading.Event()
        failures: list[str] = []
        seen_versions: set[str] = set()
        calls = [0] * CLIENTS
        request = probe_request()

        def client(i: int) -> None:
            while not stop.is_set():
                try:
                    response = holder.require().check(request)
                    version = response.bundle.version
                    effects = {a: d.effect for a, d in response.results[0].actions.items()}
                    n = version.split(".")[0]
                    # Consistent with exactly the bundle it names: N allows aN and nothing else.
                    if (
                        allowed_actions(effects) != {f"a{n}"}
                        or response.bundle.revision != f"rev{int(n):04d}"
                    ):
                        failures.append(f"{version}: {sorted(allowed_actions(effects))}")
                    seen_versions.add(version)
                    calls[i] += 1
                except Exception as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            for n in range(2, SWAPS + 2):
                server.set(make_bundle(n))
                deadline = time.monotonic() + 30  # a cap, not a duration under test
                while holder.require().bundle.version != f"{n}.0.0":
                    assert time.monotonic() < deadline, f"bundle {n} never activated"
                    time.sleep(0.01)
                # Active now: version n decides, whatever the client threads caught of it.
                response = holder.require().check(request)
                effects = {a: d.effect for a, d in response.results[0].actions.items()}
                assert (response.bundle.version, allowed_actions(effects)) == (
                    f"{n}.0.0",
                    {f"a{n}"},
                )
            # A few polls of the unchanged last bundle: 304s, waited for, not slept for.
            deadline = time.monotonic() + 30
            while server.not_modified == 0:
                assert time.monotonic() < deadline, "no 304 for the unchanged bundle"
                time.sleep(0.01)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
            reloader.stop()
        assert failures == []
        assert all(c > 0 for c in calls)
        # Which versions the client threads caught depends on scheduling; each is a real one.
        assert seen_versions <= {f"{n}.0.0" for n in range(1, SWAPS + 2)}, sorted(seen_versions)
        assert holder.require().bundle.version == f"{SWAPS + 1}.0.0"
        assert server.not_modified > 0  # unchanged polls cost a 304, not a download

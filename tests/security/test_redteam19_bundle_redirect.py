"""Red-team sweep 19: a bundle server cannot send pdp elsewhere than HTTP(S).

The HTTP bundle source used urllib's `build_opener`, which adds FTP, file and data handlers,
and whose redirect handler follows `Location: ftp://...`. Whoever answers for the bundle URL
(the bucket, a CDN, anyone on the path of a plain-HTTP URL) could send pdp to any host and port
over FTP, on a connection the download deadline (`--bundle-fetch-deadline`) did not watch: an
FTP server dripping its greeting held the poller, and every bundle update, for hours. The
opener now speaks HTTP(S) only, and refuses a redirect to another scheme or from HTTPS down to
HTTP; redirects within HTTP(S) are followed as before.
"""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundle"))

from bundle_helpers import make_bundle

from pdp.bundle import sources
from pdp.bundle.sources import HttpSource, SourceUnavailable

from .test_redteam17_bundle_source import pdp_serve

WAIT_CAP_S = 60.0  # a cap on waiting, never a duration under test


@contextmanager
def ftp_dripper() -> Iterator[tuple[int, list[float]]]:
    """A TCP server that sends an FTP greeting a byte every 0.2 s; yields (port, accepts)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    accepted: list[float] = []
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"2")
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(time.monotonic())
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@contextmanager
def redirecting(routes: dict[str, tuple[int, str | bytes]]) -> Iterator[str]:
    """An HTTP server answering each path with (302, location) or (200, body); its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, what = routes.get(self.path, (404, b""))
            self.send_response(status)
            if status == 302:
                assert isinstance(what, str)
                self.send_header("Location", what)
                what = b""
            assert isinstance(what, bytes)
            self.send_header("Content-Length", str(len(what)))
            self.end_headers()
            self.wfile.write(what)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _fetch_in_thread(source: HttpSource) -> list[object]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(source.fetch())
        except Exception as e:
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT_CAP_S)
    assert not thread.is_alive(), "the fetch is still held past the cap"
    return out


def test_a_redirect_to_ftp_is_refused_without_connecting() -> None:
    with (
        ftp_dripper() as (port, accepted),
        redirecting({"/b": (302, f"ftp://127.0.0.1:{port}/bundle.pdpb")}) as base,
    ):
        (got,) = _fetch_in_thread(HttpSource(f"{base}/b", fetch_deadline=2, timeout=3))
        assert isinstance(got, SourceUnavailable), got
        assert "redirect to `ftp://" in str(got) and "refused" in str(got)
        assert accepted == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "data:,hello"])
def test_redirects_to_other_schemes_are_refused(target: str) -> None:
    with redirecting({"/b": (302, target)}) as base:
        (got,) = _fetch_in_thread(HttpSource(f"{base}/b", fetch_deadline=2, timeout=3))
        assert isinstance(got, SourceUnavailable), got


def test_https_is_never_redirected_down_to_http() -> None:
    opener = sources._opener(sources._Deadline(5))
    (redirects,) = [h for h in opener.handlers if isinstance(h, urllib.request.HTTPRedirectHandler)]
    request = urllib.request.Request("https://bundles.example/b.pdpb")
    with pytest.raises(urllib.error.URLError, match="never from HTTPS down to HTTP"):
        redirects.redirect_request(request, None, 302, "Found", {}, "http://bundles.example/b")
    follow = redirects.redirect_request(request, None, 302, "Found", {}, "https://cdn.example/b")
    assert follow.full_url == "https://cdn.example/b"


def test_no_handler_but_http_and_https_opens_anything() -> None:
    opener = sources._opener(sources._Deadline(5))
    for url in ("ftp://127.0.0.1:9/x", "file:///etc/passwd", "data:,x"):
        with pytest.raises(urllib.error.URLError, match="unknown url type"):
            opener.open(url, timeout=1)


def test_pdp_serve_keeps_serving_and_follows_an_http_redirect() -> None:
    with ftp_dripper() as (port, accepted):
        routes: dict[str, tuple[int, str | bytes]] = {"/b": (200, make_bundle(1))}
        with redirecting(routes) as base, pdp_serve(f"{base}/b") as pdp:
            pdp.wait("1.0.0", lambda i: i.active_bundle.version == "1.0.0")
            routes["/b"] = (302, f"ftp://127.0.0.1:{port}/bundle.pdpb")
            got = pdp.wait("the refusal", lambda i: "refused" in i.last_error)
            assert "redirect to `ftp://" in got.last_error
            assert got.active_bundle.version == "1.0.0"
            assert accepted == []
            # A redirect within HTTP is followed, and the poller was never held.
            routes["/v2"] = (200, make_bundle(2))
            routes["/b"] = (302, f"{base}/v2")
            got = pdp.wait("2.0.0", lambda i: i.active_bundle.version == "2.0.0")
            assert got.last_error == ""
            assert not any("Traceback" in line for line in pdp.log)

"""Where bundles come from: a file, a directory of versioned bundles, an HTTP(S) URL.

A source only fetches bytes; it never verifies or compiles (the reloader does). `fetch()`
returns None when the source knows nothing changed since its last answer (same file, or an
HTTP 304 to If-None-Match), so polling an unchanged source costs a stat or a tiny request.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pdp import __version__
from pdp.errors import BundleError

from .archive import MAX_ARCHIVE_BYTES, read_archive_file
from .defaults import HTTP_FETCH_DEADLINE_SECONDS
from .manifest import SemVer

# A poll must not hang the reloader thread on a stalled server.
# Per read: a whole download is bounded by HTTP_FETCH_DEADLINE_SECONDS (pdp.bundle.defaults).
HTTP_TIMEOUT_SECONDS = 10.0
# Bundle files in a directory source: `<name>-<semver>.pdpb` (or `.tar.gz`).
_BUNDLE_FILE = re.compile(
    r"^(?P<name>.+?)-(?P<version>\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)"
    r"\.(?:pdpb|tar\.gz)$"
)


class SourceUnavailable(BundleError):
    """The source could not be read (unreachable, missing, HTTP error); nothing was judged."""


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    origin: str  # the file or URL it came from, for logs and status
    etag: str = ""


class BundleSource(Protocol):
    def fetch(self) -> Fetched | None:
        """New bundle bytes, or None when unchanged; raises `SourceUnavailable`."""
        ...

    def describe(self) -> str: ...


class MemorySource:
    """An in-memory source for tests and embedding: `put()` a bundle, the next fetch sees it."""

    def __init__(self, data: bytes | None = None) -> None:
        self._lock = threading.Lock()
        self._data = data
        self._serial = 0
        self._seen = -1
        self.unavailable = False

    def put(self, data: bytes) -> None:
        with self._lock:
            self._data = data
            self._serial += 1

    def fetch(self) -> Fetched | None:
        with self._lock:
            if self.unavailable or self._data is None:
                raise SourceUnavailable("memory source has no bundle")
            if self._seen == self._serial:
                return None
            self._seen = self._serial
            return Fetched(self._data, f"memory#{self._serial}")

    def describe(self) -> str:
        return "memory"


class FileSource:
    """One bundle file; re-read when its identity (inode, size, mtime) changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None

    def fetch(self) -> Fetched | None:
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp:
                return None
            if st.st_size > MAX_ARCHIVE_BYTES:
                raise SourceUnavailable(f"`{self.path}` is larger than {MAX_ARCHIVE_BYTES} bytes")
            data = read_archive_file(self.path)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read `{self.path}`: {exc.strerror or exc}") from None
        except BundleError as exc:
            raise SourceUnavailable(str(exc)) from None
        self._stamp = stamp
        return Fetched(data, str(self.path))

    def describe(self) -> str:
        return str(self.path)


def newest_bundle(directory: Path, name: str | None = None) -> Path | None:
    """The bundle file with the highest semantic version (ties: the last name, for stability);
    with `name`, among the files of that bundle name only."""
    best: tuple[SemVer, str] | None = None
    best_path: Path | None = None
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise SourceUnavailable(f"cannot list `{directory}`: {exc.strerror or exc}") from None
    for entry in entries:
        m = _BUNDLE_FILE.match(entry.name)
        if m is None or not entry.is_file() or (name is not None and m["name"] != name):
            continue
        try:
            key = (SemVer.parse(m["version"]), entry.name)
        except BundleError:
            continue
        if best is None or key > best:
            best, best_path = key, Path(entry.path)
    return best_path


class DirectorySource:
    """A directory of `<name>-<version>.pdpb` files: the highest version is the one served."""

    def __init__(self, directory: str | Path, name: str | None = None) -> None:
        self.directory = Path(directory)
        # `--bundle-name`: the files named for it (their manifests must say so too).
        self.name = name
        self._current: FileSource | None = None

    def fetch(self) -> Fetched | None:
        newest = newest_bundle(self.directory, self.name)
        if newest is None:
            named = f" named `{self.name}`" if self.name is not None else ""
            raise SourceUnavailable(f"no bundle files{named} in `{self.directory}`")
        if self._current is None or self._current.path != newest:
            self._current = FileSource(newest)
        return self._current.fetch()

    def describe(self) -> str:
        return f"{self.directory}/ (highest version)"


class _Deadline:
    """Shuts a download's sockets down when its deadline passes, which wakes a blocked read."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # socket.socket's own shutdown, not SSLSocket's, which would also drop its TLS state
    # under the reader's feet; the file descriptor is the same.
    # OSError: already closed, or a plain socket the TLS wrapper detached.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _opener(deadline: _Deadline) -> Any:
    """A urllib opener (proxies, HTTP redirects) whose connections `deadline` watches.

    Only HTTP(S) is spoken. `build_opener` adds urllib's FTP, file and data handlers too, and
    its redirect handler follows a `Location: ftp://...`: a bundle server (or whoever answers
    for it on plain HTTP) sent pdp to any host and port over FTP, on a connection no deadline
    watched, so a server dripping its greeting held every bundle update for hours. A redirect
    to another scheme, or from HTTPS down to HTTP, is refused."""
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    class Http(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    # HTTPSConnection.connect calls Http.connect (the plain socket, watched during the TLS
    # handshake), then wraps it; the wrapped socket is watched too.
    class Https(http.client.HTTPSConnection, Http):
        def connect(self) -> None:
            super().connect()
            deadline.watch(self.sock)

    class HttpHandler(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(Http, req)

    class HttpsHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(Https, req)

    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
        ) -> Any:
            scheme = urllib.parse.urlsplit(newurl).scheme.lower()
            if scheme not in ("http", "https") or (req.type == "https" and scheme == "http"):
                raise urllib.error.URLError(
                    f"redirect to `{mask_url(newurl)[:200]}` refused: only HTTP(S), and never from "
                    "HTTPS down to HTTP"
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        HttpHandler(),
        HttpsHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        Redirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _shorter_than_declared(data: bytes, content_length: str) -> bool:
    # ASCII digits only ("²".isdigit()), and few: int() refuses over 4300 digits.
    if not (content_length.isascii() and content_length.isdigit() and len(content_length) < 20):
        return False
    return len(data) < min(int(content_length), MAX_ARCHIVE_BYTES + 1)


def mask_url(url: str) -> str:
    """`url` as logs and the status show it: no user or password (`https://***@host/...`), no
    query (`?***`: a presigned URL's signature, a token) and no fragment. Everything the
    server says about its source (ServerInfo, `/readyz`, refusals, logs) says it this way."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<a URL that does not parse>"
    netloc = f"***@{host}" if "@" in parts.netloc else host
    query = "***" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class HttpSource:
    """An HTTP(S) URL polled with If-None-Match; urllib keeps pdp free of an HTTP dependency.

    `timeout` bounds each connect and read, `fetch_deadline` the whole download.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = HTTP_TIMEOUT_SECONDS,
        fetch_deadline: float = HTTP_FETCH_DEADLINE_SECONDS,
    ) -> None:
        self.url = url
        self.shown = mask_url(url)
        self.timeout = timeout
        self.fetch_deadline = fetch_deadline
        self.etag = ""

    def fetch(self) -> Fetched | None:
        headers = {"User-Agent": f"pdp/{__version__}", "Accept": "application/octet-stream"}
        if self.etag:
            headers["If-None-Match"] = self.etag
        import http.client  # here, not at the top: a server on a directory never needs it
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url, headers=headers)
        data, etag, declared = b"", "", ""
        with _Deadline(self.fetch_deadline) as deadline:
            try:
                with _opener(deadline).open(request, timeout=self.timeout) as response:
                    data = response.read(MAX_ARCHIVE_BYTES + 1)
                    etag = response.headers.get("ETag", "")
                    declared = response.headers.get("Content-Length", "")
            except urllib.error.HTTPError as exc:
                if exc.code == 304 and not deadline.expired:
                    return None
                error = f"`{self.shown}` answered HTTP {exc.code}"
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                error = f"cannot fetch `{self.shown}`: {reason or type(exc).__name__}"
            else:
                error = ""
                # http.client returns a body cut short by the server's close without a word.
                if _shorter_than_declared(data, declared):
                    error = f"`{self.shown}` ended after {len(data)} of {declared} bytes"
        # Checked after the fact too: a body without a length ends "cleanly" at the shutdown.
        if deadline.expired:
            error = (
                f"`{self.shown}` did not finish sending within {self.fetch_deadline:g}s"
                " (--bundle-fetch-deadline)"
            )
        if error:
            raise SourceUnavailable(error)
        if len(data) > MAX_ARCHIVE_BYTES:
            raise SourceUnavailable(f"`{self.shown}` sent more than {MAX_ARCHIVE_BYTES} bytes")
        self.etag = etag
        return Fetched(data, self.shown, etag)

    def describe(self) -> str:
        return self.shown


def open_source(
    spec: str, *, fetch_deadline: float = HTTP_FETCH_DEADLINE_SECONDS, name: str | None = None
) -> BundleSource:
    """`http(s)://...` → HttpSource; an existing directory → DirectorySource; else a file."""
    if spec.startswith(("http://", "https://")):
        return HttpSource(spec, fetch_deadline=fetch_deadline)
    if Path(spec).is_dir():
        return DirectorySource(spec, name)
    return FileSource(spec)

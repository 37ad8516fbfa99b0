"""The HTTP listener: aiohttp's low-level server on an event loop of its own thread, beside
the gRPC server in the same process (same engine holder, observer, limits and TLS).

aiohttp was chosen by measurement (bench/http_servers.py, docs/AUTHZEN.md): its C HTTP parser
keeps the per-call cost near uvicorn+httptools on this work, and it exposes the TLS peer
certificate, which the identity allow-list needs. Calls that carry a body (decisions,
plans, searches) are parsed and decided on a small thread pool, as starlette runs sync
endpoints: one batch of heavy evaluations on the loop would stall every other connection,
health checks included, for as long as it runs. The pool's threads share the GIL with the
loop, which Python switches between them every few milliseconds. Measured with
bench/authzen.py (bench/RESULTS.md): throughput within the bench's noise of deciding on the
loop, p99 of 20-evaluation batches higher (about 38 ms against 24).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from pdp.cel import Deadline
from pdp.ratelog import RateLimitedLog, printable
from pdp.server.identity import typed

from .api import Call, HttpApi, HttpError
from .lowlevel import CappedServer, error_response, json_response

log = logging.getLogger("pdp.http")

_JSON = "application/json"
_READ_CHUNK = 64 * 1024
# How long a caller may take to send a request (headers, then body), to read its answer, and
# to keep an idle connection open: a client that trickles bytes, or reads none, must not hold
# a connection (a file descriptor, and a body or answers of memory) for ever. `--http-timeout`.
DEFAULT_TIMEOUT = 60.0
# After the grace, how long aiohttp still waits for handlers before it cancels them: a call
# the drain stopped at the end of the grace has this long to send its 503 (as
# pdp.server.server's STOP_MARGIN_S gives gRPC calls to send their UNAVAILABLE).
_ANSWER_MARGIN_S = 1.0
_LINGER_S = 10.0  # aiohttp's own lingering time, the most it keeps
# Threads that parse and decide calls with a body. The work is CPU-bound under one GIL: two
# keep one long call from holding up the rest; four cost ~10% of batch throughput in
# GIL hand-offs (bench/authzen.py).
DEFAULT_THREADS = 2


class _ClientGone(Exception):
    """The caller closed the connection before its body was complete: nobody to answer."""


class _ProtocolLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's per-connection log: it writes a traceback for every request its parser
    refuses, which any caller can send by the thousand. One warning per cause a minute,
    without the traceback, instead."""

    def __init__(self) -> None:
        super().__init__(log, {})
        self._limited = RateLimitedLog(log)

    def exception(self, msg: object, *args: object, exc_info: object = True, **kw: object) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        cause = type(exc).__name__ if exc is not None else "error"
        detail = printable(" ".join(str(exc).split())) if exc is not None else ""  # one line
        text = printable(str(msg) % args if args else str(msg))
        self._limited.log(logging.WARNING, cause, f"http: {text}: {cause} {detail}".rstrip())


_SLOW_READERS = RateLimitedLog(log)


@dataclass(frozen=True)
class HttpTls:
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None = None  # set: clients must present a certificate from it


def _ssl_context(tls: HttpTls) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # The ssl module loads keys from files only; a private temporary directory holds them
    # for the moment of loading.
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_bytes(tls.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(tls.key_pem)
        ctx.load_cert_chain(cert, key)
    if tls.client_ca_pem is not None:
        ctx.load_verify_locations(cadata=tls.client_ca_pem.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        # Every --client-ca certificate is a trust anchor, an intermediate too, as on gRPC
        # (grpc's tsi and the native transport's _tls.c set the same OpenSSL flag).
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def cert_allow_keys(cert: dict[str, Any] | None) -> frozenset[tuple[str, str]]:
    """What `--allow-identity` compares of a client certificate: its URI and DNS SANs, typed
    as on gRPC (`pdp.server.identity`), never its common name."""
    sans = cert.get("subjectAltName", ()) if cert else ()
    return typed([v for k, v in sans if k == "URI"], [v for k, v in sans if k == "DNS"])


def cert_identities(cert: dict[str, Any] | None) -> tuple[str, ...]:
    """What a client certificate proves, in gRPC's order: URI SANs, then DNS SANs, else CN."""
    if not cert:
        return ()
    sans = cert.get("subjectAltName", ())
    found = [v for k, v in sans if k == "URI"] + [v for k, v in sans if k == "DNS"]
    if not found:
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    found.append(v)
    return tuple(dict.fromkeys(found))


def _charset(params: str) -> str:
    """The `charset` parameter of a Content-Type's `params` (after the `;`), lower case."""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _peer(request: web.BaseRequest) -> str:
    name = request.transport.get_extra_info("peername") if request.transport else None
    if not name:
        return ""
    host, port = name[0], name[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _error(exc: HttpError, request_id: str, close: bool = False) -> web.Response:
    return error_response(exc.status, exc.message, exc.field, request_id, close)


class HttpServer:
    """`start()`, then `stop(grace)`; `addresses` lists the bound HOST:PORTs."""

    def __init__(
        self,
        api: HttpApi,
        listen: tuple[str, ...],
        *,
        tls: HttpTls | None = None,
        reuse_port: bool = False,
        grace: float = 10.0,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 0,
    ) -> None:
        self.api = api
        self.max_connections = max_connections  # per listening address; 0: no limit
        self.grace = grace
        self.timeout = timeout
        self.listen = listen
        self.tls = tls
        self.reuse_port = reuse_port
        self.addresses: list[str] = []
        self._ssl = _ssl_context(tls) if tls is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._scheme = "https" if tls is not None else "http"
        self._pool = ThreadPoolExecutor(DEFAULT_THREADS, thread_name_prefix="pdp-http")
        # The stop times of the calls deciding now, which `stop` brings forward to the end of
        # the grace (a plain set, as pdp.server.service's: atomic under the GIL, and a call
        # reads `_drain_at` after adding its own).
        self._deciding: set[Deadline] = set()
        self._drain_at: float | None = None

    # -- one request ---------------------------------------------------------------------------

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.api.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise HttpError(
                400, f"body of {length} bytes is larger than {limit}", "body", "RESOURCE_EXHAUSTED"
            )
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    chunk = await request.content.read(_READ_CHUNK)
                    if not chunk:
                        return b"".join(chunks)
                    size += len(chunk)
                    if size > limit:
                        raise HttpError(
                            400, f"body is larger than {limit} bytes", "body", "RESOURCE_EXHAUSTED"
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise HttpError(
                408,
                f"body not received within {self.timeout:g} s",
                "body",
                "DEADLINE_EXCEEDED",
            ) from None
        except ConnectionError:
            raise _ClientGone from None

    async def handle(self, request: web.BaseRequest) -> web.Response:
        """Answer one request, and send the answer within the timeout."""
        response = await self._answer(request)
        try:
            async with asyncio.timeout(self.timeout):
                await response.prepare(request)
                await response.write_eof()
        except TimeoutError:
            # The caller stopped reading: its unread answers (pipelined ones too) would hold
            # memory and the connection for as long as it likes.
            _SLOW_READERS.log(
                logging.WARNING,
                "slow-reader",
                f"http: closed a connection whose client did not read its answer within "
                f"{self.timeout:g} s",
            )
            if request.transport is not None:
                request.transport.abort()
        except ConnectionError:
            pass  # the client left; aiohttp ends the connection
        return response

    async def _answer(self, request: web.BaseRequest) -> web.Response:
        headers = request.headers
        api = self.api
        request_id, bad_id = api.read_request_id(headers.get("X-Request-ID", ""), request.path)
        sslobj = request.transport.get_extra_info("ssl_object") if request.transport else None
        cert = sslobj.getpeercert() if sslobj is not None else None
        identities = cert_identities(cert)
        host = headers.get("Host", "")
        call = Call(
            method=request.method,
            path=request.path,
            headers={
                k.lower(): v
                for k, v in headers.items()
                if k.lower() in ("traceparent", "tracestate", "baggage")
            },
            peer=_peer(request),
            identity=identities[0] if identities else "",
            request_id=request_id,
            base_url=api.public_url or f"{self._scheme}://{host}",
            start=time.time(),
            t0=time.perf_counter(),
        )
        try:
            route = api.route(call.method, call.path)
            api.authorize(call, cert_allow_keys(cert))
            if bad_id is not None:
                raise bad_id
            data = None
            if route.body:
                ctype, _, params = headers.get("Content-Type", _JSON).partition(";")
                ctype = ctype.strip().lower()
                if ctype != _JSON or _charset(params) not in ("", "utf-8", "utf8"):
                    # JSON is UTF-8 (RFC 8259): a body declared in another charset would be
                    # read one way by whoever checks it on the way and another way here.
                    shown = headers.get("Content-Type", "")[:64]
                    raise HttpError(
                        400,
                        f"content type must be {_JSON} in UTF-8, got `{shown}`",
                        "Content-Type",
                        "INVALID_ARGUMENT",
                    )
                try:
                    data = await self._read_body(request)
                except HttpError as exc:
                    api.observe_failure(call, exc)
                    return _error(exc, request_id, close=True)
                except _ClientGone:
                    exc = HttpError(400, "the client closed the connection", "body", "CANCELLED")
                    api.observe_failure(call, exc)
                    return _error(exc, request_id, close=True)
            if route.body:
                # The decision's own deadline, counted from the body's arrival: a batch still
                # deciding then stops between resources and frees its thread (`HttpApi._check`).
                call.stop_at = time.monotonic() + self.timeout
                call.stop = stop = Deadline(call.stop_at)
                self._deciding.add(stop)
                try:
                    drain_at = self._drain_at
                    if drain_at is not None:
                        stop.lower(drain_at)
                    loop = asyncio.get_running_loop()
                    status, value = await loop.run_in_executor(
                        self._pool, api.run, route, call, data
                    )
                finally:
                    self._deciding.discard(stop)
            else:
                status, value = api.run(route, call, data)
        except HttpError as exc:
            api.observe_failure(call, exc)
            return _error(exc, request_id)
        except Exception:
            # The path and method are the caller's: escaped, so a `%0a` or an ANSI escape in
            # them cannot forge or colour a line of the server's log.
            log.exception("http %s %s failed", printable(call.method, 20), printable(call.path))
            exc = HttpError(500, "internal error", "", "INTERNAL")
            api.observe_failure(call, exc)
            return _error(exc, request_id)
        return json_response(status, value, request_id)

    # -- lifecycle -----------------------------------------------------------------------------

    def _socket(self, address: str) -> socket.socket:
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.reuse_port:
            # Sibling `--workers` processes share the port; a lone server refuses a port in use.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, int(port)))
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    async def _start(self) -> None:
        # No access log: the decision log records every decision call (and is masked). No
        # decompression: a compressed body is not JSON (400), and a small one cannot inflate
        # past the body limit inside the parser. Bodies are bounded by `_read_body`.
        # `keepalive_timeout` also closes a connection whose request headers have not all
        # arrived by then (aiohttp's default is an hour); `_read_body` bounds the body.
        # `CappedServer`: `max_connections`, and pdp's JSON answer to what the parser refuses.
        # After an answer sent before the body was read (a 408, a 413), aiohttp keeps reading
        # the rest for `lingering_time` (10 s) so the client gets the answer rather than a
        # reset: no longer than the timeout every other wait of a caller has.
        server = CappedServer(
            self.handle,
            max_connections=self.max_connections,
            access_log=None,
            auto_decompress=False,
            keepalive_timeout=self.timeout,
            lingering_time=min(self.timeout, _LINGER_S),
            logger=_ProtocolLog(),
        )
        # In-flight requests get `grace` to finish at shutdown (a decision still running then
        # stops, `stop`), and `_ANSWER_MARGIN_S` more to send their answer.
        self._runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=self.grace + _ANSWER_MARGIN_S
        )
        await self._runner.setup()
        for address in self.listen:
            sock = self._socket(address)
            host, port = sock.getsockname()[:2]
            site = web.SockSite(self._runner, sock, ssl_context=self._ssl)
            await site.start()
            shown = f"[{host}]" if ":" in host else host
            self.addresses.append(f"{shown}:{port}")

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def start(self) -> None:
        """Bind and serve; raises OSError when an address cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="pdp-http", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise OSError(f"http: {self._error}") from self._error

    @property
    def port(self) -> int:
        return int(self.addresses[0].rsplit(":", 1)[1])

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within `grace` (one still deciding
        then answers 503), stop the loop."""
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or self._thread is None:
            return
        # A decision still running at the end of the grace stops there, inside a resource too
        # (each call's `Deadline`, which the engine reads at its checks), and answers 503.
        drain_at = self._drain_at = time.monotonic() + self.grace
        for stop in list(self._deciding):
            stop.lower(drain_at)
        future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        try:
            future.result(self.grace + 5)
        except Exception:
            log.exception("http listener did not stop cleanly")
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

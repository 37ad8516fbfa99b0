"""aiohttp's low-level server with two things pdp adds: a cap on open connections per listening
address, and pdp's own answer (JSON, `Server: pdp`) for a request aiohttp's parser refuses;
and the JSON answers every pdp HTTP call gets (`json_response`, `error_response`).

Both through aiohttp's public classes: `web.Server` is the protocol factory and is told of every
connection made and lost; `web.RequestHandler.handle_error` builds the answer to a request the
parser could not read (a malformed request line, bad header bytes, a line over the size limit),
which aiohttp otherwise sends as plain text with its own name and version in `Server`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from pdp.ratelog import RateLimitedLog

log = logging.getLogger("pdp.http")

_REFUSED = RateLimitedLog(log)
# What the caller is told, by the class of aiohttp's parser error (its own messages echo the
# request bytes); anything else is a malformed request.
_PARSE_ERRORS = {
    "LineTooLong": "a request line or header is too long",
    "BadHttpMethod": "malformed HTTP request method",
    "InvalidHeader": "malformed HTTP header",
}


def json_response(
    status: int, value: Any, request_id: str = "", close: bool = False
) -> web.Response:
    """Every pdp HTTP answer: JSON, and `Server: pdp` rather than the library and its version."""
    headers = {"Server": "pdp", "X-Request-ID": request_id} if request_id else {"Server": "pdp"}
    resp = web.Response(
        status=status, body=orjson.dumps(value), content_type="application/json", headers=headers
    )
    if close:
        resp.force_close()
    return resp


def error_response(
    status: int, message: str, field: str = "", request_id: str = "", close: bool = False
) -> web.Response:
    """`{"error": {"status": ..., "message": ..., "field": ...}}`, the shape of every error."""
    body: dict[str, Any] = {"status": status, "message": message}
    if field:
        body["field"] = field
    return json_response(status, {"error": body}, request_id, close)


class _Handler(web.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the cause (pdp's logger keeps it to a line a minute) and raises
        # when part of an answer has gone out already; its plain-text answer is not sent.
        super().handle_error(request, status, exc, message)
        if status == HTTPStatus.BAD_REQUEST:
            text = _PARSE_ERRORS.get(type(exc).__name__, "malformed HTTP request")
        else:
            try:
                text = HTTPStatus(status).phrase.lower()
            except ValueError:
                text = "error"
        return error_response(status, text, close=True)


class CappedServer(web.Server):
    """`web.Server` whose listening addresses each keep at most `max_connections` connections
    open (0: no limit): a new one past it is closed as soon as it is made, before it is read."""

    def __init__(self, handler: Any, *, max_connections: int = 0, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self._pdp_loop = asyncio.get_running_loop()
        self._pdp_kwargs = kwargs  # what aiohttp passes to each RequestHandler
        self._pdp_port: dict[web.RequestHandler, int] = {}
        self._pdp_open: Counter[int] = Counter()

    def __call__(self) -> web.RequestHandler:
        return _Handler(self, loop=self._pdp_loop, **self._pdp_kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        # Counted by local port, which names the listener whatever local address it came in on.
        port = (transport.get_extra_info("sockname") or ("", 0))[1]
        self._pdp_port[handler] = port
        self._pdp_open[port] += 1
        if self.max_connections and self._pdp_open[port] > self.max_connections:
            _REFUSED.log(
                logging.WARNING,
                "max-connections",
                f"http: closed a new connection: {self.max_connections} are open on port "
                f"{port} (--max-connections)",
            )
            transport.close()

    def connection_lost(
        self, handler: web.RequestHandler, exc: BaseException | None = None
    ) -> None:
        port = self._pdp_port.pop(handler, None)
        if port is not None:
            self._pdp_open[port] -= 1
        super().connection_lost(handler, exc)

"""The `http … failed` log line after an internal error carries the caller's path escaped.

The path arrives percent-decoded (`%0a` is a newline, `%1b` an escape): written raw, a caller
who can reach a failing route forges a second log line or colours the terminal of whoever reads
the log. The fixed routes of `pdp serve` have fixed paths, so a route that fails on purpose,
added through `HttpApi.add` to a real listener on a loopback port, stands for a bug reached by a
hostile path. The caller gets pdp's JSON 500 with no traceback; the log line has no control
character.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pdp.engine import EngineHolder
from pdp.http.api import Call, HttpApi
from pdp.http.server import HttpServer
from pdp.model.request import Limits

# What the route is registered under: the decoded form of QUOTED below.
HOSTILE = "/boom\nFORGED pdp.http line\x1b[31mred\x7f"
QUOTED = "/boom%0aFORGED%20pdp.http%20line%1b[31mred%7f"


def _boom(call: Call) -> tuple[int, Any]:
    raise RuntimeError("a bug in a handler")


@pytest.fixture()
def server() -> Iterator[HttpServer]:
    api = HttpApi(EngineHolder(), Limits(), 1 << 20)
    api.add("GET", HOSTILE, _boom, body=False)
    srv = HttpServer(api, ("127.0.0.1:0",), grace=1.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_an_internal_error_logs_the_hostile_path_escaped(
    server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    with caplog.at_level(logging.ERROR, logger="pdp.http"):
        conn.request("GET", QUOTED)
        reply = conn.getresponse()
        body = reply.read()
    conn.close()
    assert reply.status == 500, body
    answer = json.loads(body)
    assert answer == {"error": {"status": 500, "message": "internal error"}}, answer
    assert "Traceback" not in body.decode() and "a bug in a handler" not in body.decode()

    failed = [r for r in caplog.records if r.getMessage().startswith("http GET ")]
    assert len(failed) == 1, [r.getMessage() for r in caplog.records]
    line = failed[0].getMessage()
    # The route was reached (the hostile path is the one logged), and nothing in it is raw.
    assert "FORGED pdp.http line" in line and "red" in line, line
    assert line.isprintable(), repr(line)
    assert "\n" not in line and "\x1b" not in line and "\x7f" not in line, repr(line)

"""Requests the HTTP parser refuses get pdp's answer, not the library's.

aiohttp answered a malformed request line, bad header bytes or an oversized header itself:
plain text, with `Server: Python/3.x aiohttp/3.x` (what an attacker fingerprints first) and a
message echoing the request bytes. Over raw sockets to a real `pdp serve --http-listen`, each
is a 400 with `Server: pdp`, a JSON error as pdp's other 400s have, no library name and no
traceback, anywhere.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, pdp_serve

from .test_redteam_http_protocol import _connect, _read_until_closed

MALFORMED = {
    "not http": b"GARBAGE\r\n\r\n",
    "tls to a plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    "bad method bytes": b"GE\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "nul in the target": b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/1.x\r\nHost: x\r\n\r\n",
    "control byte in a header name": b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Name: v\r\n\r\n",
    "header without a colon": b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "oversized header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "oversized request line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "two content lengths": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    ),
    "content length not a number": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
    "chunked and a length": (
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
}


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve() as p:
        yield p


def _parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_request_the_parser_refuses_gets_pdps_json_400(pdp: Pdp, name: str) -> None:
    with _connect(pdp) as s:
        s.sendall(MALFORMED[name])
        answer = _read_until_closed(s)
    assert answer, "no answer at all"
    for word in (b"aiohttp", b"python", b"traceback"):
        assert word not in answer.lower(), answer[:500]
    status, headers, body = _parse(answer)
    assert status == 400, answer[:500]
    assert headers["server"] == "pdp"
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["status"] == 400
    assert isinstance(error["message"], str) and error["message"]
    # The message is pdp's, not the parser's echo of the bytes it choked on.
    assert "\\x" not in error["message"] and "b'" not in error["message"]


def test_the_server_log_holds_no_traceback_after_them(pdp: Pdp) -> None:
    for raw in MALFORMED.values():
        with _connect(pdp) as s:
            s.sendall(raw)
            _read_until_closed(s)
    assert pdp.get("/healthz").status == 200  # and the listener still serves
    assert "Traceback" not in "".join(pdp.stderr)


def test_a_well_formed_error_keeps_its_own_answer(pdp: Pdp) -> None:
    reply = pdp.post("/access/v1/evaluation", {"subject": "alice"})
    assert reply.status == 400
    assert reply.headers["server"] == "pdp"
    assert reply.json["error"]["field"] == "subject"

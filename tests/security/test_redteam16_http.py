"""Request smuggling shapes against a real `pdp serve --http-listen`: one answer, then closed.

A front proxy and pdp that frame a request differently let the bytes one of them reads as a
body be a second request to the other (a decision the proxy never authorised, answered on
someone else's connection). Each request below is one a careful parser refuses: ambiguous
framing (a length twice, a list of lengths, a folded or padded `Transfer-Encoding`, an encoding
other than `chunked` last, `chunked` under HTTP/1.0), bare-LF line ends, a chunk size past 64
bits, and more headers than the parser keeps. Each is followed, on the same connection, by a
well-formed request, which a smuggling-prone server would answer too: pdp must answer exactly
once (a 400 JSON error from pdp, no decision) and close. Unambiguous shapes that pdp does accept
(chunk extensions, `identity, chunked`) get one decision and then the pipelined request's
answer, proving the test sees a second answer when there is one.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, pdp_serve

BODY = json.dumps(
    {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
        "resources": [
            {
                "kind": "document",
                "id": "d1",
                "tenant": "acme",
                "actions": ["read"],
                "attr": {"owner": "alice", "classification": "internal"},
            }
        ],
        "context": {"ip": "10.20.30.40"},
    }
).encode()
LEN = str(len(BODY)).encode()
CHUNKED = hex(len(BODY))[2:].encode() + b"\r\n" + BODY + b"\r\n0\r\n\r\n"
HEAD = b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
NEXT = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

REFUSED = {
    "same length twice": HEAD + b"Content-Length: " + LEN + b"\r\nContent-Length: " + LEN
    + b"\r\n\r\n" + BODY,
    "a list of lengths": HEAD + b"Content-Length: " + LEN + b", " + LEN + b"\r\n\r\n" + BODY,
    "length with a plus sign": HEAD + b"Content-Length: +" + LEN + b"\r\n\r\n" + BODY,
    "length past 64 bits": HEAD + b"Content-Length: 99999999999999999999999\r\n\r\n" + BODY,
    "folded transfer-encoding": HEAD + b"Transfer-Encoding:\r\n chunked\r\nContent-Length: "
    + LEN + b"\r\n\r\n" + BODY,
    "folded other header": HEAD + b"X-A: a\r\n b\r\nContent-Length: " + LEN + b"\r\n\r\n" + BODY,
    "space before the colon": HEAD + b"Transfer-Encoding : chunked\r\nContent-Length: " + LEN
    + b"\r\n\r\n" + BODY,
    "unknown coding": HEAD + b"Transfer-Encoding: xchunked\r\nContent-Length: " + LEN
    + b"\r\n\r\n" + BODY,
    "chunked not last": HEAD + b"Transfer-Encoding: chunked, identity\r\n\r\n" + CHUNKED,
    "chunked under http/1.0": HEAD.replace(b"HTTP/1.1", b"HTTP/1.0")
    + b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED,
    "bare lf line ends": HEAD.replace(b"\r\n", b"\n") + b"Content-Length: " + LEN + b"\n\n"
    + BODY,
    "bare lf in chunks": HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    + CHUNKED.replace(b"\r\n", b"\n"),
    "chunk size past 64 bits": HEAD + b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 20
    + b"\r\n" + BODY + b"\r\n0\r\n\r\n",
    "content-type twice": HEAD + b"Content-Type: text/plain\r\nContent-Length: " + LEN
    + b"\r\n\r\n" + BODY,
    "lone cr in a header": HEAD + b"X-Request-ID: a\rb\r\nContent-Length: " + LEN + b"\r\n\r\n"
    + BODY,
    "ten thousand headers": HEAD + b"".join(b"X-%d: y\r\n" % i for i in range(10_000))
    + b"Content-Length: " + LEN + b"\r\n\r\n" + BODY,
}  # fmt: skip
ACCEPTED = {
    "chunk extension": HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    + CHUNKED.replace(b"\r\n", b";ext=1\r\n", 1),
    "identity then chunked": HEAD + b"Transfer-Encoding: identity, chunked\r\n\r\n" + CHUNKED,
}  # fmt: skip


@pytest.fixture(scope="module")
def pdp() -> Iterator[Pdp]:
    with pdp_serve() as p:
        yield p


def _exchange(pdp: Pdp, data: bytes, answers: int) -> bytes:
    """What the server sends until it closes the connection or has sent `answers` complete
    answers (a kept-alive connection stays open); the socket's timeout caps each wait."""
    host, port = pdp.http_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(data)
        out = b""
        while not _complete(out, answers):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out


def _complete(answer: bytes, answers: int) -> bool:
    """Whether `answer` holds `answers` status lines and the last one's whole body."""
    starts = [m.start() for m in re.finditer(rb"HTTP/1\.[01] \d{3} ", answer)]
    if len(starts) < answers:
        return False
    head, sep, body = answer[starts[answers - 1] :].partition(b"\r\n\r\n")
    length = re.search(rb"Content-Length: (\d+)", head)
    return bool(sep and length and len(body) >= int(length.group(1)))


def _status_lines(answer: bytes) -> list[bytes]:
    # A pipelined answer starts right after the previous body, not on a line of its own.
    return re.findall(rb"HTTP/1\.[01] \d{3} ", answer)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_an_ambiguous_request_is_answered_once_and_closed(pdp: Pdp, name: str) -> None:
    answer = _exchange(pdp, REFUSED[name] + NEXT, 2)  # a second one is the finding
    statuses = _status_lines(answer)
    assert len(statuses) == 1 and b" 400 " in statuses[0], answer[:400]
    assert b"Server: pdp" in answer and b'"error"' in answer
    assert b"decisionId" not in answer and b"Traceback" not in answer


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_an_unambiguous_request_is_decided_then_the_next_one_answered(pdp: Pdp, name: str) -> None:
    answer = _exchange(pdp, ACCEPTED[name] + NEXT, 2)
    statuses = _status_lines(answer)
    assert len(statuses) == 2 and all(b" 200 " in s for s in statuses), answer[:600]
    assert answer.count(b"EFFECT_ALLOW") == 1, answer

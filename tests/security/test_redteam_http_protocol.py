"""HTTP protocol abuse against a real `pdp serve --http-listen`, over raw sockets: callers who
trickle a request or abandon it, and malformed requests sent by the thousand. None of them may
hold a connection for long, answer 500, or cost the operator a traceback per request."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ on the path for the shared server helper (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from authzen.support import Pdp, pdp_serve

from tests.decision_logs import complete_records

TIMEOUT = 1.0  # --http-timeout of the server under test
WAIT_CAP = 60.0  # generous cap on waiting for the server to act on it
BODY = json.dumps(
    {
        "subject": {"type": "user", "id": "alice", "properties": {"tenant": "acme"}},
        "action": {"name": "read"},
        "resource": {"type": "document", "id": "d-1", "properties": {"tenant": "acme"}},
    }
).encode()
HEAD = (
    b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"X-Request-ID: %s\r\nContent-Length: %d\r\n\r\n"
)


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redteam-http") / "decisions.jsonl"


@pytest.fixture(scope="module")
def pdp(log_path: Path) -> Iterator[Pdp]:
    with pdp_serve("--http-timeout", str(TIMEOUT), "--decision-log", str(log_path)) as p:
        yield p


def _connect(pdp: Pdp) -> socket.socket:
    host, port = pdp.http_address.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=WAIT_CAP)
    return s


def _read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails at the cap)."""
    chunks = []
    end = time.monotonic() + WAIT_CAP
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the connection is still open after {WAIT_CAP} s")


def _failures(log_path: Path, code: str) -> list[dict]:
    """The decision-log records of calls that failed with `code` (a refused call's record has
    no request, so no request id: each code below is made by one test only)."""
    end = time.monotonic() + WAIT_CAP
    while True:
        found = [r for r in complete_records(log_path) if r.get("error", {}).get("code") == code]
        if found or time.monotonic() > end:
            return found
        time.sleep(0.05)


def test_a_body_that_never_completes_is_a_408_and_a_closed_connection(
    pdp: Pdp, log_path: Path
) -> None:
    # Without a bound the handler waited for the missing bytes for ever (an hour-long idle
    # limit did not apply to a request in progress): one socket per held connection.
    with _connect(pdp) as s:
        s.sendall(HEAD % (b"slow-body", 100) + b"{")
        answer = _read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["field"] == "body"
    (record,) = _failures(log_path, "DEADLINE_EXCEEDED")
    assert record["rpc"] == "POST /access/v1/evaluation"
    assert "decisions" not in record


def test_headers_that_never_complete_are_dropped(pdp: Pdp) -> None:
    with _connect(pdp) as s:
        s.sendall(b"POST /access/v1/evaluation HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert _read_until_closed(s) == b""


def test_an_idle_connection_is_closed(pdp: Pdp) -> None:
    with _connect(pdp) as s:
        assert _read_until_closed(s) == b""


def test_a_connection_stays_usable_within_the_timeout(pdp: Pdp) -> None:
    # The bound is on the caller's sending, not on keep-alive itself: two requests on one
    # connection are both decided.
    with _connect(pdp) as s:
        for n in range(2):
            s.sendall(HEAD % (b"keep-%d" % n, len(BODY)) + BODY)
            answer = b""
            while b'"decision"' not in answer:
                chunk = s.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def test_a_client_that_leaves_mid_body_costs_no_traceback_and_no_internal_error(
    pdp: Pdp, log_path: Path
) -> None:
    with _connect(pdp) as s:
        s.sendall(HEAD % (b"gone-mid-body", 100) + b"{")
        time.sleep(0.2)
    (record,) = _failures(log_path, "CANCELLED")
    assert "decisions" not in record
    assert "Traceback" not in "".join(pdp.stderr)
    assert "http POST /access/v1/evaluation failed" not in "".join(pdp.stderr)


def test_a_flood_of_malformed_requests_logs_one_line_and_no_traceback(pdp: Pdp) -> None:
    for _ in range(50):
        with _connect(pdp) as s:
            s.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            )
            answer = _read_until_closed(s)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:200]
    end = time.monotonic() + WAIT_CAP
    while not any("BadHttpMessage" in line for line in pdp.stderr):
        assert time.monotonic() < end, "".join(pdp.stderr)
        time.sleep(0.05)
    text = "".join(pdp.stderr)
    assert "Traceback" not in text
    assert sum("BadHttpMessage" in line for line in pdp.stderr) == 1, text


def test_a_client_that_stops_reading_is_disconnected(pdp: Pdp) -> None:
    # Pipelined requests whose answers (explain traces: large) the client never reads: the
    # server's writes block once the socket buffers are full, and they blocked for ever,
    # holding the connection and every unread answer in memory.
    check = {
        "principal": {"id": "alice", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
        "resources": [
            {"kind": "document", "id": f"d-{i}", "tenant": "acme", "actions": ["read"]}
            for i in range(500)
        ],
        "explain": True,
    }
    body = json.dumps(check).encode()
    head = (
        b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    calls = 30  # 500 KB each: more than the socket buffers of both ends hold
    host, port = pdp.http_address.rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(WAIT_CAP)
        s.connect((host, int(port)))
        s.sendall((head + body) * calls)
        end = time.monotonic() + WAIT_CAP
        while not any("did not read its answer" in line for line in pdp.stderr):
            assert time.monotonic() < end, "".join(pdp.stderr[-20:])
            time.sleep(0.05)
        answered = 0
        try:
            while chunk := s.recv(65536):
                answered += chunk.count(b"HTTP/1.1 200 ")
        except ConnectionResetError:
            pass
    assert answered < calls

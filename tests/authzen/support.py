"""A real `pdp serve --http-listen` process and a plain HTTP client (http.client) for it."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"
START_TIMEOUT = 60.0


def client_time_flags() -> list[str]:
    """Test cases fix `context.time`, which `pdp serve` refuses without this flag."""
    return ["--allow-client-time"]


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Pdp:
    proc: subprocess.Popen[str]
    grpc_address: str
    http_address: str
    scheme: str = "http"
    ssl_context: ssl.SSLContext | None = None
    stderr: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.http_address}"

    def connection(self, ssl_context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
        host, port = self.http_address.rsplit(":", 1)
        if self.scheme == "https":
            ctx = ssl_context or self.ssl_context
            return http.client.HTTPSConnection(host, int(port), timeout=30, context=ctx)
        return http.client.HTTPConnection(host, int(port), timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        raw: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        conn = self.connection(ssl_context)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)


def _read_addresses(proc: subprocess.Popen[str], lines: list[str]) -> tuple[str, str]:
    assert proc.stderr is not None
    grpc_addr = http_addr = ""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not (grpc_addr and http_addr):
        line = proc.stderr.readline()
        if not line:
            raise AssertionError("pdp serve exited early:\n" + "".join(lines))
        lines.append(line)
        m = re.search(r"http listening on (\S+)", line)
        if m:
            http_addr = m.group(1)
            continue
        m = re.search(r"listening on (\S+)", line)
        if m and not grpc_addr:
            grpc_addr = m.group(1)
    if not (grpc_addr and http_addr):
        raise AssertionError("pdp serve did not start:\n" + "".join(lines))

    def drain() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    return grpc_addr, http_addr


@contextmanager
def pdp_serve(
    *extra: str,
    policies: Path = POLICIES,
    scheme: str = "http",
    ssl_context: ssl.SSLContext | None = None,
    wait_ready: bool = True,
) -> Iterator[Pdp]:
    argv = [sys.executable, "-m", "pdp.cli.main", "serve", "--no-pin-workers"]
    if not any(a.startswith("--bundle") for a in extra):
        argv += ["--policies", str(policies)]
    argv += ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *extra]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        grpc_addr, http_addr = _read_addresses(proc, lines)
        pdp = Pdp(proc, grpc_addr, http_addr, scheme, ssl_context, lines)
        if wait_ready:
            deadline = time.monotonic() + START_TIMEOUT
            while pdp.get("/readyz").status != 200:
                assert time.monotonic() < deadline, "never ready:\n" + "".join(lines)
                time.sleep(0.05)
        yield pdp
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def assert_error(reply: Reply, status: int, field: str | None = None) -> dict[str, Any]:
    """A JSON error of `status` (naming `field` when given); returns its `error` object."""
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.headers["content-type"].startswith("application/json")
    err = reply.json["error"]
    assert err["status"] == status
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    if field is not None:
        assert err.get("field") == field, err
    return err

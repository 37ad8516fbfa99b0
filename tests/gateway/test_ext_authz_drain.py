"""The drain stops an Envoy ext_authz decision inside one heavy resource at the end of the grace.

A real gRPC server on 127.0.0.1 built as `pdp serve` builds it (`build_server` with the
ext_authz registrar, `PdpServer.begin_stop` as SIGTERM runs it), a route mapping to a kind of
150 rules of ~0.1 s each (RE2 scans of the 250-character id in nested comprehensions: ~15 s of
one resource), and an ext_authz call with a 300 s deadline. `begin_drain` lowered the stop
times of Checks only: this decision ran on past the grace (grpc cancelled it; its thread
decided on). Now it stops at the grace and answers as the adapter answers errors, closed: a
denial, gRPC status UNAVAILABLE in the answer and HTTP 503 for Envoy's client. No duration is
asserted; every wait has a generous cap.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from pdp.gateway.servicer import ext_authz_registrar
from pdp.model.loader import load_policy_files
from pdp.server import ServerConfig, build_server

WAIT_CAP = 120.0
TRANSPORTS = ("grpcio", "native")
UNAVAILABLE = 14
_SLOW = (
    "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29]"
    ".exists(x, [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,"
    "29].exists(y, [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,"
    "28,29].exists(z, resource.id.matches('b$'))))"
)
POLICY = (
    "apiVersion: pdp/v1\nkind: ResourcePolicy\nmetadata: {id: ledger}\nspec:\n"
    "  resource: ledger\n  actions:\n    read: {}\n  rules:\n"
    + "".join(
        f'    - id: slow-{i}\n      actions: [read]\n      effect: allow\n      roles: ["*"]\n'
        f'      condition: "{_SLOW}"\n'
        for i in range(150)
    )
    + '    - id: last\n      actions: [read]\n      effect: allow\n      roles: ["*"]\n'
)
MAPPING = """apiVersion: pdp/v1
kind: RouteMapping
metadata: {id: gateway}
spec:
  authentication: {source: envoy_jwt_authn}
  claims: {tenant: tid, roles: roles}
  routes:
    - path: /ledgers/{id}
      methods: {GET: read}
      resource: {kind: ledger, id: "{id}", tenant: acme}
    - path: /memos/{id}
      methods: {GET: read}
      resource: {kind: memo, id: "{id}", tenant: acme}
"""


def _request(path: str) -> ext.CheckRequest:
    req = ext.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.id = "GET", path, "req-1"
    req.attributes.source.address.socket_address.address = "10.0.0.1"
    claims = {"sub": "alice", "tid": "acme", "roles": "user"}
    req.attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update(
        {"jwt_payload": claims}
    )
    return req


def _server(transport: str, holder: EngineHolder, registrar: Any) -> Any:
    """A server as `pdp serve --transport T` builds it, with the ext_authz registrar."""
    config = ServerConfig(listen=("127.0.0.1:0",))
    if transport == "native":
        pytest.importorskip("pdp.server.native._h2", reason="the native extension is not built")
        from pdp.server.native.server import NativeServer

        return NativeServer(holder, config, extra_services=[registrar])
    return build_server(holder, config, extra_services=[registrar])


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_ext_authz_decision_inside_one_heavy_resource_denies_unavailable_at_the_grace(
    transport: str,
) -> None:
    files = {"ledger.yaml": POLICY.encode(), "mapping.yaml": MAPPING.encode()}
    holder = EngineHolder(Engine(compile_policy_set(load_policy_files(files))))
    registrar = ext_authz_registrar(holder)
    server = _server(transport, holder, registrar)
    server.start()
    try:
        with grpc.insecure_channel(server.addresses[0]) as channel:
            stub = ext_grpc.AuthorizationStub(channel)
            # A quick call first: the mapping works (a kind no policy governs: denied at once).
            assert stub.Check(_request("/memos/m1"), timeout=WAIT_CAP).status.code == 7
            running = stub.Check.future(_request("/ledgers/" + "a" * 250), timeout=300)
            # The event: the servicer is deciding it (its stop time is held for the drain).
            end = time.monotonic() + WAIT_CAP
            while not any(s._deciding for s in registrar.servicers):
                assert time.monotonic() < end and not running.done(), running
                time.sleep(0.02)
            server.begin_stop(0.5)
            answer = running.result(timeout=WAIT_CAP)
    finally:
        server.stop(0)
    assert answer.status.code == UNAVAILABLE, answer
    assert answer.WhichOneof("http_response") == "denied_response"
    assert answer.denied_response.status.code == 503
    assert "shutting_down" in answer.denied_response.body, answer.denied_response.body


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_ext_authz_call_taken_while_draining_is_refused_unavailable(transport: str) -> None:
    """A call grpc takes once `begin_stop` began is refused, as a Check is, and closed: the
    denial Envoy's client sees as 503 `shutting_down` (it was decided before: a 403 here).
    On the native transport, a call its decision thread takes once the drain began."""
    files = {"mapping.yaml": MAPPING.encode()}
    holder = EngineHolder(Engine(compile_policy_set(load_policy_files(files))))
    server = _server(transport, holder, ext_authz_registrar(holder))
    server.start()
    try:
        with grpc.insecure_channel(server.addresses[0]) as channel:
            stub = ext_grpc.AuthorizationStub(channel)
            assert stub.Check(_request("/memos/m1"), timeout=WAIT_CAP).status.code == 7
            server.begin_stop(WAIT_CAP)
            answer = stub.Check(_request("/memos/m1"), timeout=WAIT_CAP)
    finally:
        server.stop(0)
    assert answer.status.code == UNAVAILABLE, answer
    assert answer.denied_response.status.code == 503
    assert "shutting_down" in answer.denied_response.body, answer.denied_response.body

"""The servicer with a stub engine: proto in, proto out, and every failure path never OK."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

from pdp.errors import NoPoliciesError
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.mapping_tests import run_mapping_tests
from pdp.gateway.servicer import ExtAuthzServicer, GatewayOptions, GatewayResolver
from pdp.model.decision import ActionDecision, BundleInfo, CheckResponse, ResourceDecision

from ._support import MAPPING, Keys


class StubEngine:
    """Allows `read` for tenant acme, denies the rest; records the requests it saw."""

    def __init__(self, data=None, fail=False):
        self.policy_set = SimpleNamespace(
            data=data or {}, route_mapping=MAPPING, route_mapping_file="mapping.yaml"
        )
        self.fail = fail
        self.seen = []

    def check(self, request):
        if self.fail:
            raise RuntimeError("boom")
        self.seen.append(request)
        res = request.resources[0]
        ok = res.actions[0] == "read" and res.tenant == request.principal["tenant"]
        action = ActionDecision(
            effect="allow" if ok else "deny", reasons=() if ok else ("no_matching_rule",)
        )
        return CheckResponse(
            request_id=request.request_id,
            decision_id="f" * 32,
            bundle=BundleInfo("b", "1", "r"),
            results=(ResourceDecision(res.kind, res.id, {res.actions[0]: action}),),
        )


class StubHolder:
    def __init__(self, engine):
        self.engine = engine

    def require(self):
        if self.engine is None:
            raise NoPoliciesError("none")
        return self.engine


KEYS = Keys()


@pytest.fixture(scope="module")
def keys():
    return KEYS


def _request(path, token=None, method="GET", jwt_payload=None, source="10.0.0.1"):
    req = ext.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.id = method, path, "req-1"
    if token:
        http.headers["authorization"] = f"Bearer {token}"
    req.attributes.source.address.socket_address.address = source
    if jwt_payload is not None:
        req.attributes.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update(
            {"jwt_payload": jwt_payload}
        )
    return req


def test_allow_and_deny_through_the_proto(keys):
    engine = StubEngine(data={"jwks": keys.jwks()})
    svc = ExtAuthzServicer(StubHolder(engine))
    ok = svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", keys.token()), None)
    assert ok.status.code == 0 and ok.WhichOneof("http_response") == "ok_response"
    assert engine.seen[-1].context["ip"] == "10.0.0.1"
    assert engine.seen[-1].request_id == "req-1"
    denied = svc.Check(
        _request("/v1/tenants/acme/kb/k1/docs/d1", keys.token(), method="DELETE"), None
    )
    assert denied.status.code == 7 and denied.denied_response.status.code == 403
    assert svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1"), None).status.code == 16


def test_raw_header_map(keys):
    engine = StubEngine(data={"jwks": keys.jwks()})
    req = _request("/v1/tenants/acme/kb/k1/docs/d1")
    h = req.attributes.request.http.header_map.headers.add()
    h.key, h.raw_value = "authorization", f"Bearer {keys.token()}".encode()
    assert ExtAuthzServicer(StubHolder(engine)).Check(req, None).status.code == 0


def test_claims_from_envoy_jwt_authn_metadata():
    engine = StubEngine()
    options = GatewayOptions(source="envoy_jwt_authn")
    svc = ExtAuthzServicer(StubHolder(engine), GatewayResolver(options))
    payload = {"sub": "alice", "tid": "acme", "scope": "kb:read"}
    resp = svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", jwt_payload=payload), None)
    assert resp.status.code == 0
    assert engine.seen[-1].principal["id"] == "alice"
    # Without the filter's metadata there is no credential, whatever headers say.
    assert svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", token="x"), None).status.code == 16


@pytest.mark.parametrize(
    ("holder", "status", "reason"),
    [
        (StubHolder(None), 503, "no_policies"),
        (StubHolder(StubEngine(fail=True, data={"jwks": KEYS.jwks()})), 500, "internal_error"),
        (StubHolder(StubEngine()), 500, "gateway_misconfigured"),  # jwt source but no keys
    ],
)
def test_failures_are_never_ok(keys, holder, status, reason):
    resp = ExtAuthzServicer(holder).Check(
        _request("/v1/tenants/acme/kb/k1/docs/d1", keys.token()), None
    )
    assert resp.status.code != 0
    assert resp.denied_response.status.code == status
    assert json.loads(resp.denied_response.body)["reason"] == reason
    assert resp.dynamic_metadata["decision_id"]


def test_mapping_tests_section():
    doc = copy.deepcopy(MAPPING)
    claims = {"sub": "alice", "tid": "acme", "scope": "kb:read"}
    doc["spec"]["tests"] = [
        {
            "name": "doc read",
            "request": {
                "method": "GET",
                "path": "/v1/tenants/acme/kb/k1/docs/d1",
                "claims": claims,
            },
            "expect": {
                "kind": "document",
                "id": "d1",
                "tenant": "acme",
                "action": "read",
                "effect": "allow",
                "status": 200,
            },
        },
        {
            "name": "cross tenant",
            "request": {
                "method": "GET",
                "path": "/v1/tenants/globex/kb/k1/docs/d1",
                "claims": claims,
            },
            "expect": {"tenant": "globex", "effect": "deny", "status": 403},
        },
        {
            "name": "unmapped",
            "request": {"path": "/nope", "claims": claims},
            "expect": {"reason": "unmapped_route", "status": 403},
        },
        {
            "name": "wrong",
            "request": {
                "method": "PUT",
                "path": "/v1/tenants/acme/kb/k1/docs/d1",
                "claims": claims,
            },
            "expect": {"action": "read"},
        },
    ]
    results = run_mapping_tests(load_route_mapping(doc), StubEngine())
    assert [r.passed for r in results] == [True, True, True, False]
    assert results[3].problems == ("action: got `write`, expected `read`",)


def test_registrar_registers_on_a_server(keys):
    from concurrent import futures

    import grpc

    from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
    from pdp.gateway.servicer import SERVICE_NAME, ext_authz_registrar

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    holder = StubHolder(StubEngine(data={"jwks": keys.jwks()}))
    assert (
        ext_authz_registrar(holder)(server) == SERVICE_NAME == "envoy.service.auth.v3.Authorization"
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ext_grpc.AuthorizationStub(channel)
            resp = stub.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", keys.token()), timeout=5)
            assert resp.status.code == 0
    finally:
        server.stop(grace=None)

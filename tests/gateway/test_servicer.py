"""The servicer over a real engine (the Envoy test's policies, mapping and JWKS): proto in, proto
out, and every failure path never OK."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from pdp.engine import Engine, EngineHolder, compile_policy_set
from pdp.engine.compiled import PolicySet
from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2 as ext
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.mapping_tests import run_mapping_tests
from pdp.gateway.servicer import ExtAuthzServicer, GatewayOptions, GatewayResolver
from pdp.model.decision import CheckResponse
from pdp.model.loader import load_policy_dir
from pdp.model.request import CheckRequest

from ._support import MAPPING, Keys
from .test_envoy import POLICIES


def _policy_dir(root: Path, *, with_keys: bool) -> Path:
    """The Envoy test's policies, route mapping and (optionally) JWKS, as `pdp serve` reads them."""
    files = {name: text.encode() for name, text in POLICIES.items()}
    files["mapping.yaml"] = json.dumps(MAPPING).encode()  # JSON is YAML
    if with_keys:
        files["data/jwks.json"] = json.dumps(KEYS.jwks()).encode()
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


class RecordingEngine(Engine):
    """A real engine that also keeps the requests it decided (to check the mapping's input)."""

    def __init__(self, policy_set: PolicySet, *, fail: bool = False) -> None:
        super().__init__(policy_set)
        self.fail = fail
        self.seen: list[CheckRequest] = []

    def check(self, request: CheckRequest, **kwargs: Any) -> CheckResponse:
        if self.fail:  # an unexpected failure inside the engine
            raise RuntimeError("boom")
        self.seen.append(request)
        return super().check(request, **kwargs)


def real_engine(root: Path, *, with_keys: bool = True, fail: bool = False) -> RecordingEngine:
    policies = compile_policy_set(load_policy_dir(_policy_dir(root, with_keys=with_keys)))
    return RecordingEngine(policies, fail=fail)


KEYS = Keys()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return KEYS


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> RecordingEngine:
    return real_engine(tmp_path_factory.mktemp("policies"))


def _token(keys: Keys, **claims: Any) -> str:
    return keys.token({"roles": "user", "scope": "kb:read kb:delete", **claims})


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


def test_allow_and_deny_through_the_proto(keys, engine):
    svc = ExtAuthzServicer(EngineHolder(engine))
    ok = svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", _token(keys)), None)
    assert ok.status.code == 0 and ok.WhichOneof("http_response") == "ok_response"
    assert engine.seen[-1].context["ip"] == "10.0.0.1"
    assert engine.seen[-1].request_id == "req-1"
    assert engine.seen[-1].principal["id"] == "alice"
    denied = svc.Check(
        _request("/v1/tenants/acme/kb/k1/docs/d1", _token(keys), method="DELETE"), None
    )
    assert denied.status.code == 7 and denied.denied_response.status.code == 403
    other_tenant = svc.Check(_request("/v1/tenants/globex/kb/k1/docs/d1", _token(keys)), None)
    assert other_tenant.status.code == 7 and other_tenant.denied_response.status.code == 403
    assert svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1"), None).status.code == 16


def test_raw_header_map(keys, engine):
    req = _request("/v1/tenants/acme/kb/k1/docs/d1")
    h = req.attributes.request.http.header_map.headers.add()
    h.key, h.raw_value = "authorization", f"Bearer {_token(keys)}".encode()
    assert ExtAuthzServicer(EngineHolder(engine)).Check(req, None).status.code == 0


def test_claims_from_envoy_jwt_authn_metadata(tmp_path):
    engine = real_engine(tmp_path, with_keys=False)
    options = GatewayOptions(source="envoy_jwt_authn")
    svc = ExtAuthzServicer(EngineHolder(engine), GatewayResolver(options))
    payload = {"sub": "alice", "tid": "acme", "scope": "kb:read", "roles": "user"}
    resp = svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", jwt_payload=payload), None)
    assert resp.status.code == 0
    assert engine.seen[-1].principal["id"] == "alice"
    # Without the filter's metadata there is no credential, whatever headers say.
    assert svc.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", token="x"), None).status.code == 16


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("no engine yet", 503, "no_policies"),
        ("engine raises", 500, "internal_error"),
        ("no keys", 500, "gateway_misconfigured"),  # jwt source but no JWKS in the bundle
    ],
)
def test_failures_are_never_ok(keys, tmp_path, case, status, reason):
    holder = {
        "no engine yet": lambda: EngineHolder(),
        "engine raises": lambda: EngineHolder(real_engine(tmp_path, fail=True)),
        "no keys": lambda: EngineHolder(real_engine(tmp_path, with_keys=False)),
    }[case]()
    resp = ExtAuthzServicer(holder).Check(
        _request("/v1/tenants/acme/kb/k1/docs/d1", _token(keys)), None
    )
    assert resp.status.code != 0
    assert resp.denied_response.status.code == status
    assert json.loads(resp.denied_response.body)["reason"] == reason
    assert re.fullmatch(r"[0-9a-f]{32}", resp.dynamic_metadata["decision_id"])


def test_mapping_tests_section(engine):
    doc = copy.deepcopy(MAPPING)
    claims = {"sub": "alice", "tid": "acme", "scope": "kb:read", "roles": "user"}
    doc["spec"]["tests"] = [
        {
            "name": "doc read",
            "request": {
                "method": "GET",
                "path": "/v1/tenants/acme/kb/k1/docs/d1",
                "claims": claims,
                "ip": "10.0.0.1",  # the network guard fails closed without a source address
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
    results = run_mapping_tests(load_route_mapping(doc), engine)
    assert [r.problems for r in results][:3] == [(), (), ()]
    assert [r.passed for r in results] == [True, True, True, False]
    assert results[3].problems == ("action: got `write`, expected `read`",)


def test_registrar_registers_on_a_server(keys, engine):
    from concurrent import futures

    import grpc

    from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
    from pdp.gateway.servicer import SERVICE_NAME, ext_authz_registrar

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    holder = EngineHolder(engine)
    assert (
        ext_authz_registrar(holder)(server) == SERVICE_NAME == "envoy.service.auth.v3.Authorization"
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ext_grpc.AuthorizationStub(channel)
            resp = stub.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", _token(keys)), timeout=5)
            assert resp.status.code == 0
    finally:
        server.stop(grace=None)


def test_an_answer_that_cannot_be_built_is_a_denial_with_a_reason(engine, keys, monkeypatch):
    """An allow whose headers Envoy's proto refuses (a fault injected where claims and
    obligations become headers) is answered as a denial naming the cause, not as grpc's UNKNOWN
    with a traceback, and it keeps the decision's id."""
    from pdp.gateway import response

    real = response._header_options
    calls = []

    def refuse_once(headers):
        calls.append(headers)
        if len(calls) == 1:
            raise ValueError("a header value the proto cannot hold")
        return real(headers)

    monkeypatch.setattr(response, "_header_options", refuse_once)
    resp = ExtAuthzServicer(EngineHolder(engine)).Check(
        _request("/v1/tenants/acme/kb/k1/docs/d1", _token(keys)), None
    )
    assert len(calls) == 2  # the allow's headers, then the denial's
    assert resp.status.code != 0
    assert not resp.HasField("ok_response")
    assert resp.denied_response.status.code == 500
    assert json.loads(resp.denied_response.body)["reason"] == "internal_error"
    assert resp.dynamic_metadata["decision_id"] == calls[0]["x-pdp-decision-id"]


class SlowEngine(RecordingEngine):
    """A real engine whose decision outlasts Envoy's timeout (as a heavy resource would)."""

    def check(self, request: CheckRequest, **kwargs: Any) -> CheckResponse:
        time.sleep(1.0)
        return super().check(request, **kwargs)


def test_a_decision_past_envoys_timeout_is_stopped_not_answered(keys, tmp_path):
    """Envoy's `timeout` reaches pdp as the call's deadline. A decision still running past it
    is not answered as an allow to nobody: the engine stops it (`stop_at`), the hook and the
    decision log see a `deadline_exceeded` denial, and the caller DEADLINE_EXCEEDED."""
    from concurrent import futures

    import grpc

    from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
    from pdp.gateway.servicer import ext_authz_registrar

    slow = real_engine(tmp_path)
    slow.__class__ = SlowEngine
    seen = []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ext_authz_registrar(EngineHolder(slow), on_decision=lambda o, r, d: seen.append((o, d)))(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = ext_grpc.AuthorizationStub(channel)
            # Under load grpc may drop a call whose deadline passed before a thread took it:
            # then no decision ran at all, and the call is made again.
            for _attempt in range(5):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Check(
                        _request("/v1/tenants/acme/kb/k1/docs/d1", _token(keys)), timeout=0.3
                    )
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                deadline = time.monotonic() + 10
                while not seen and time.monotonic() < deadline:
                    time.sleep(0.05)
                if seen:
                    break
            # With a generous deadline the same request is allowed: only the time differs.
            ok = stub.Check(_request("/v1/tenants/acme/kb/k1/docs/d1", _token(keys)), timeout=30)
            assert ok.status.code == 0
    finally:
        server.stop(grace=None)
    outcome, decision = seen[0]
    assert decision is None
    assert not outcome.allowed
    assert (outcome.grpc_code, outcome.http_status) == (4, 504)
    assert outcome.reason == "deadline_exceeded"
    assert seen[1][0].allowed


def _form_post(keys: Keys, body: bytes | None = None) -> ext.CheckRequest:
    """A form POST on the shared mapping's search route; Envoy sent its body when given."""
    req = _request("/v1/tenants/acme/kb/search", _token(keys), method="POST")
    http = req.attributes.request.http
    http.headers["content-type"] = "application/x-www-form-urlencoded"
    http.headers["content-length"] = "14"
    if body is not None:
        http.raw_body = body
    return req


def test_the_operator_overrides_the_mappings_body_method_override(keys, engine):
    """`GatewayOptions.body_method_override` (`pdp serve --body-method-override on|off`) wins
    over the mapping's `bodyMethodOverride` either way."""

    def status(options: GatewayOptions, doc: dict[str, Any] | None = None) -> int:
        if doc is not None:
            options = dataclasses.replace(options, mapping=doc)
        svc = ExtAuthzServicer(EngineHolder(engine), GatewayResolver(options))
        resp = svc.Check(_form_post(keys), None)
        return resp.denied_response.status.code if resp.status.code else 200

    # The policy decides (a 403 here) unless the body's absence is refused first (400).
    assert status(GatewayOptions()) == 403  # the mapping does not say: decided as before
    assert status(GatewayOptions(body_method_override=True)) == 400
    strict = copy.deepcopy(MAPPING)
    strict["spec"]["bodyMethodOverride"] = True
    assert status(GatewayOptions(), strict) == 400
    assert status(GatewayOptions(body_method_override=False), strict) == 403


def test_pdp_serve_passes_body_method_override_to_the_gateway(keys, engine):
    from concurrent import futures

    import grpc

    from pdp.cli.main import build_parser
    from pdp.cli.serve import _ext_authz
    from pdp.gateway._gen.envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
    from pdp.model.request import DEFAULT_LIMITS

    def serve_check(*flags: str) -> int:
        args = build_parser(["serve"]).parse_args(["serve", *flags])
        config = type("Config", (), {"limits": DEFAULT_LIMITS})()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        _ext_authz(args, EngineHolder(engine), config, None)(server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                resp = ext_grpc.AuthorizationStub(channel).Check(_form_post(keys), timeout=10)
        finally:
            server.stop(grace=None)
        return resp.denied_response.status.code if resp.status.code else 200

    assert serve_check() == 403  # decided by the policy
    assert serve_check("--body-method-override", "on") == 400
    assert serve_check("--body-method-override", "off") == 403


def test_mapping_test_cases_carry_a_body(engine):
    """A case's `request.body` (text, or an object sent as JSON) and `contentType` reach the
    translation as Envoy's `with_request_body` would, so an author can test that a `_method`
    in a body is refused."""
    doc = copy.deepcopy(MAPPING)
    claims = {"sub": "alice", "tid": "acme", "scope": "kb:read", "roles": "user"}
    search = {"method": "POST", "path": "/v1/tenants/acme/kb/search", "claims": claims}
    refused = {"status": 400, "reason": "ambiguous_method"}
    doc["spec"]["tests"] = [
        {
            "name": "form _method",
            "request": {
                **search,
                "contentType": "application/x-www-form-urlencoded",
                "body": "q=1&_method=DELETE",
            },
            "expect": refused,
        },
        {"name": "json _method", "request": {**search, "body": {"_method": "DELETE"}}, "expect": refused},
        {
            "name": "json text",
            "request": {**search, "contentType": "application/vnd.api+json", "body": '{"_method":"PUT"}'},
            "expect": refused,
        },
        {"name": "own method", "request": {**search, "body": {"_method": "POST"}}, "expect": {"action": "search"}},
        {"name": "wrong expectation", "request": {**search, "body": {"_method": "DELETE"}}, "expect": {"status": 200}},
        {"name": "bad body", "request": {**search, "body": 5}, "expect": {"status": 200}},
    ]  # fmt: skip
    results = run_mapping_tests(load_route_mapping(doc), engine)
    assert [r.problems for r in results][:4] == [(), (), (), ()]
    assert [r.passed for r in results] == [True, True, True, True, False, False]
    assert results[4].problems == ("status: got `400`, expected `200`",)
    assert "request.body must be text" in results[5].problems[0]
    # Without an engine, the translation's reason is checked.
    bare = run_mapping_tests(load_route_mapping(doc))
    assert [r.passed for r in bare][:4] == [True, True, True, True]

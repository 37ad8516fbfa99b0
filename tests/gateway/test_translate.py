"""HTTP attributes → decision request → ext_authz answer, with a stub decision."""

from __future__ import annotations

import json

import pytest

from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import HttpAttributes, client_ip, translate
from pdp.gateway.response import outcome_for, to_envoy
from pdp.gateway.tokens import TokenVerifier, load_jwks
from pdp.model.decision import ActionDecision, BundleInfo, CheckResponse, ResourceDecision

from ._support import MAPPING, Keys


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def mapping():
    return load_route_mapping(MAPPING)


@pytest.fixture(scope="module")
def verify(keys, mapping):
    return TokenVerifier(load_jwks(keys.jwks()), mapping.auth).verify


def _http(method, path, token=None, **headers):
    if token:
        headers["authorization"] = f"Bearer {token}"
    return HttpAttributes(
        method=method, path=path, headers=headers, source_ip="10.0.0.9", request_id="r1"
    )


def _decision(effect, reasons=(), obligations=None):
    action = ActionDecision(
        effect=effect,
        policy="documents",
        rule="r",
        reasons=tuple(reasons),
        obligations=obligations or {},
    )
    return CheckResponse(
        request_id="r1",
        decision_id="d-123",
        bundle=BundleInfo("kb", "1.2.3", "abc"),
        results=(ResourceDecision(kind="document", id="d1", actions={"read": action}),),
    )


def test_request_is_built_from_route_claims_and_headers(keys, mapping, verify):
    token = keys.token({"roles": ["user"], "scope": "kb:read", "email": "a@x", "mfa": True})
    tr = translate(
        _http(
            "GET",
            "/v1/tenants/acme/kb/k1/docs/d1?x=1",
            token,
            **{"x-forwarded-for": "6.6.6.6, 203.0.113.7"},
        ),
        mapping,
        verify,
    )
    assert tr.kind == "check"
    req = tr.request
    assert req.principal["id"] == "alice" and req.principal["tenant"] == "acme"
    assert req.principal["roles"] == ["user"] and req.scopes == {"kb:read"}
    assert req.principal["attr"] == {"email": "a@x"}
    (res,) = req.resources
    assert res.resource == {
        "kind": "document",
        "id": "d1",
        "tenant": "acme",
        "attr": {"kb": "k1"},
    }
    assert res.actions == ("read",)
    # No trusted hops (the default): Envoy's view of the peer; the client's XFF is ignored.
    assert req.context["ip"] == "10.0.0.9"
    assert req.context["attr"] == {"mfa": True}
    assert req.request_id == "r1"


def test_trusted_hops_is_an_explicit_opt_in(keys, mapping, verify):
    import dataclasses

    one_hop = dataclasses.replace(mapping, trusted_hops=1)
    attrs = _http(
        "GET",
        "/v1/tenants/acme/kb/k1/docs/d1",
        keys.token(),
        **{"x-forwarded-for": "6.6.6.6, 203.0.113.7"},
    )
    # One trusted hop: the entry the proxy appended, not the one the client sent.
    assert translate(attrs, one_hop, verify).request.context["ip"] == "203.0.113.7"
    assert translate(attrs, mapping, verify).request.context["ip"] == "10.0.0.9"


def test_query_template(keys, mapping, verify):
    tr = translate(
        _http("GET", "/v1/tenants/acme/kb/search?q=a%20b", keys.token()), mapping, verify
    )
    assert tr.request.resources[0].resource["attr"] == {"q": "a b"}


def test_principal_template(keys, mapping, verify):
    tr = translate(_http("GET", "/v1/me/files/a/b.txt", keys.token()), mapping, verify)
    assert tr.request.resources[0].resource["tenant"] == "acme"
    assert tr.request.resources[0].resource["id"] == "a/b.txt"


@pytest.mark.parametrize(
    ("source", "xff", "hops", "expected"),
    [
        ("10.0.0.1", "", 1, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1", 0, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1, 2.2.2.2", 1, "2.2.2.2"),
        ("10.0.0.1", "1.1.1.1, 2.2.2.2", 2, "1.1.1.1"),
        ("10.0.0.1", "2.2.2.2", 2, "10.0.0.1"),  # fewer entries than trusted proxies
        ("10.0.0.1", "garbage", 1, "10.0.0.1"),
        ("::ffff:10.0.0.1", "", 0, "10.0.0.1"),
        ("10.0.0.1", "[2001:db8::1]:443", 1, "2001:db8::1"),
    ],
)
def test_client_ip(source, xff, hops, expected):
    assert client_ip(source, xff, hops) == expected


def test_public_and_unmapped(keys, mapping, verify):
    assert translate(_http("GET", "/healthz"), mapping, verify).kind == "allow"
    tr = translate(_http("GET", "/v2/other", keys.token()), mapping, verify)
    assert (tr.kind, tr.reason) == ("deny", "unmapped_route")
    # Credentials first: an anonymous caller learns nothing about which routes exist.
    assert translate(_http("GET", "/v2/other"), mapping, verify).kind == "unauthenticated"
    doc = json.loads(json.dumps(MAPPING))
    doc["spec"]["unmapped"] = "allow"
    assert translate(_http("GET", "/v2/other"), load_route_mapping(doc), verify).kind == "allow"


def test_bad_requests(keys, mapping, verify):
    tr = translate(_http("GET", "/v1/tenants/acme/../x"), mapping, verify)
    assert (tr.kind, tr.reason) == ("bad_request", "path_dot_segment")
    tr = translate(
        _http("GET", "/v1/tenants/acme/kb/k1/docs/d1", keys.token({"roles": [1]})), mapping, verify
    )
    assert (tr.kind, tr.reason) == ("unauthenticated", "invalid_claims")


def test_allow_response(keys, mapping, verify):
    tr = translate(_http("GET", "/v1/tenants/acme/kb/k1/docs/d1", keys.token()), mapping, verify)
    out = outcome_for(
        tr,
        _decision("allow", ["owner_access"], {"mask_fields": ["email", "phone"]}),
        mapping,
        "unused",
    )
    assert out.allowed and out.grpc_code == 0
    assert out.headers == {
        "x-user-id": "alice",
        "x-pdp-mask-fields": "email,phone",
        "x-pdp-decision-id": "d-123",
    }
    assert out.headers_to_remove == ("authorization",)
    pb = to_envoy(out)
    assert pb.status.code == 0 and pb.WhichOneof("http_response") == "ok_response"
    assert {h.header.key: h.header.value for h in pb.ok_response.headers}[
        "x-pdp-decision-id"
    ] == "d-123"
    assert all(h.append_action == 2 for h in pb.ok_response.headers)  # overwrite what clients sent
    assert pb.dynamic_metadata["decision_id"] == "d-123"
    assert pb.dynamic_metadata["obligations"]["mask_fields"] == ["email", "phone"]


def test_absent_obligation_header_is_stripped(keys, mapping, verify):
    tr = translate(_http("GET", "/v1/tenants/acme/kb/k1/docs/d1", keys.token()), mapping, verify)
    out = outcome_for(tr, _decision("allow"), mapping, "unused")
    assert "x-pdp-mask-fields" in out.headers_to_remove


def test_deny_response(keys, mapping, verify):
    tr = translate(_http("GET", "/v1/tenants/acme/kb/k1/docs/d1", keys.token()), mapping, verify)
    pb = to_envoy(outcome_for(tr, _decision("deny", ["tenant_mismatch"]), mapping, "unused"))
    assert pb.status.code == 7
    assert pb.denied_response.status.code == 403
    assert json.loads(pb.denied_response.body) == {
        "error": "forbidden",
        "reason": "tenant_mismatch",
        "decision_id": "d-123",
    }
    assert pb.dynamic_metadata["decision_id"] == "d-123"


def test_unauthenticated_response(mapping, verify):
    tr = translate(_http("GET", "/v1/tenants/acme/kb/k1/docs/d1", "garbage"), mapping, verify)
    pb = to_envoy(outcome_for(tr, None, mapping, "d-9"))
    assert pb.status.code == 16 and pb.denied_response.status.code == 401
    headers = {h.header.key: h.header.value for h in pb.denied_response.headers}
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert json.loads(pb.denied_response.body)["reason"] == "malformed_token"


def test_header_values_cannot_smuggle_lines():
    from pdp.gateway.response import header_value

    assert header_value("a\r\nx-admin: 1") == "ax-admin: 1"
    assert header_value({"b": 1, "a": [True]}) == '{"a":[true],"b":1}'

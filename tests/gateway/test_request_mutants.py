"""HTTP attributes → decision request, pinned by exact values (issue 27, mutation testing).

Written against the survivors of `make mutation ARGS='pdp.gateway.*'`: the client address
taken from x-forwarded-for, where the credential comes from, and every field of the request
and of each `Translation`, so that a changed hop count, a skipped verification or a route that
lets more through fails here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import (
    INVALID_REQUEST,
    PUBLIC_ROUTE,
    UNMAPPED_ROUTE,
    HttpAttributes,
    Translation,
    authenticate,
    client_ip,
    translate,
)
from pdp.gateway.tokens import AuthError, TokenVerifier, load_jwks
from pdp.model.request import Limits

from ._support import MAPPING, Keys

DOC = "/v1/tenants/acme/kb/k1/docs/d1"


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def mapping() -> Any:
    return load_route_mapping(MAPPING)


@pytest.fixture(scope="module")
def verify(keys: Keys, mapping: Any) -> Any:
    return TokenVerifier(load_jwks(keys.jwks()), mapping.auth).verify


def _http(method: str, path: str, token: str | None = None, **headers: str) -> HttpAttributes:
    if token:
        headers["authorization"] = f"Bearer {token}"
    return HttpAttributes(
        method=method, path=path, headers=headers, source_ip="10.0.0.9", request_id="r1"
    )


def _never(token: str) -> dict[str, Any]:
    raise AssertionError(f"verify must not be called (got `{token}`)")


# -- the client address --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "xff", "hops", "expected"),
    [
        # the entry `hops` from the right, spaces and empty entries ignored
        ("10.0.0.1", " 1.1.1.1 ,  2.2.2.2  ", 1, "2.2.2.2"),
        ("10.0.0.1", "1.1.1.1,,2.2.2.2,", 1, "2.2.2.2"),
        ("10.0.0.1", "1.1.1.1, , 2.2.2.2", 2, "1.1.1.1"),
        ("10.0.0.1", "1.1.1.1, 2.2.2.2, 3.3.3.3", 2, "2.2.2.2"),
        ("10.0.0.1", "1.1.1.1, 2.2.2.2, 3.3.3.3", 3, "1.1.1.1"),
        # fewer entries than hops, or only blanks: the peer
        ("10.0.0.1", "1.1.1.1, 2.2.2.2", 3, "10.0.0.1"),
        ("10.0.0.1", " , ,", 1, "10.0.0.1"),
        # a trusted entry that is no address: the peer, never an entry further left
        ("10.0.0.1", "1.1.1.1, garbage", 1, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1, 2.2.2.2:8080", 1, "2.2.2.2"),
        # no hops trusted: XFF is never read
        ("10.0.0.1", "1.1.1.1", 0, "10.0.0.1"),
        ("10.0.0.1", "1.1.1.1", -1, "10.0.0.1"),
        ("", "1.1.1.1", 0, ""),
        ("garbage", "", 1, ""),
    ],
)
def test_client_ip_reads_only_trusted_entries(
    source: str, xff: str, hops: int, expected: str
) -> None:
    assert client_ip(source, xff, hops) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 10.0.0.1 ", "10.0.0.1"),
        ("203.0.113.5:443", "203.0.113.5"),
        ("203.0.113.5:", "203.0.113.5"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("[::ffff:192.0.2.1]:80", "192.0.2.1"),
        ("::1", "::1"),
        ("[2001:db8::1", ""),
        ("10.0.0.1:80:90", ""),
        ("10.0.0.256", ""),
        ("", ""),
        ("[]", ""),
    ],
)
def test_the_peer_address_is_normalised_or_empty(text: str, expected: str) -> None:
    assert client_ip(text, "", 0) == expected
    assert client_ip("192.0.2.99", text, 1) == (expected or "192.0.2.99")


# -- the credential ------------------------------------------------------------------------------


def _jwt_authn_mapping(**auth: Any) -> Any:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["authentication"] = {"source": "envoy_jwt_authn", **auth}
    return load_route_mapping(doc)


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"jwt_payload": None}, {"jwt_payload": "a.b.c"}, {"jwt_payload": ["sub"]}],
)
def test_envoy_jwt_authn_without_a_verified_payload_is_unauthenticated(metadata: Any) -> None:
    mapping = _jwt_authn_mapping()
    attrs = HttpAttributes("GET", DOC, {"authorization": "Bearer x"}, jwt_metadata=metadata)
    with pytest.raises(AuthError) as e:
        authenticate(attrs, mapping, _never)
    assert (e.value.reason, e.value.message) == (
        "missing_token",
        "no verified token in the jwt_authn metadata",
    )
    tr = translate(attrs, mapping, _never)
    assert (tr.kind, tr.reason, tr.request) == ("unauthenticated", "missing_token", None)


def test_envoy_jwt_authn_reads_the_configured_metadata_key_only() -> None:
    mapping = _jwt_authn_mapping(metadataKey="verified")
    claims = {"sub": "bob", "tid": "acme", "roles": ["user"]}
    attrs = HttpAttributes("GET", DOC, {}, jwt_metadata={"jwt_payload": claims})
    with pytest.raises(AuthError) as e:
        authenticate(attrs, mapping, _never)
    assert e.value.reason == "missing_token"
    attrs = HttpAttributes("GET", DOC, {}, jwt_metadata={"verified": claims})
    got, principal = authenticate(attrs, mapping, _never)
    assert got == claims and got is not claims
    assert (principal["id"], principal["tenant"], principal["roles"]) == ("bob", "acme", ["user"])


def test_without_keys_a_bearer_token_is_refused_not_trusted(keys: Keys, mapping: Any) -> None:
    attrs = _http("GET", DOC, keys.token())
    with pytest.raises(AuthError) as e:
        authenticate(attrs, mapping, None)
    assert (e.value.reason, e.value.message) == ("no_keys", "no verification keys are configured")
    tr = translate(attrs, mapping, None)
    assert (tr.kind, tr.reason, tr.message, tr.request) == (
        "unauthenticated",
        "no_keys",
        "no verification keys are configured",
        None,
    )
    assert tr.match is not None and tr.match.action == "read"


def test_the_token_is_verified_and_the_verified_claims_are_used(keys: Keys, mapping: Any) -> None:
    token = keys.token()
    seen: list[str] = []

    def verify(t: str) -> dict[str, Any]:
        seen.append(t)
        return {"sub": "carol", "tid": "acme"}

    claims, principal = authenticate(_http("GET", DOC, token), mapping, verify)
    assert seen == [token]
    assert claims == {"sub": "carol", "tid": "acme"}
    assert (principal["id"], principal["tenant"]) == ("carol", "acme")


def test_a_token_the_verifier_refuses_is_unauthenticated(
    keys: Keys, mapping: Any, verify: Any
) -> None:
    tr = translate(_http("GET", DOC, keys.token(kind="rogue")), mapping, verify)
    assert (tr.kind, tr.reason, tr.request, tr.env) == (
        "unauthenticated",
        "invalid_signature",
        None,
        None,
    )
    assert tr.match is not None and tr.match.route.path == "/v1/tenants/{tenant}/kb/{kb}/docs/{doc}"


def test_no_credential_is_unauthenticated_before_anything_else(mapping: Any) -> None:
    tr = translate(_http("GET", DOC), mapping, _never)
    assert (tr.kind, tr.reason, tr.message) == (
        "unauthenticated",
        "missing_token",
        "no `authorization` header",
    )


# -- translate -----------------------------------------------------------------------------------


def test_a_bad_path_is_a_bad_request_before_the_credential(mapping: Any) -> None:
    tr = translate(_http("GET", "/v1/a/%2e%2e/b"), mapping, _never)
    assert tr == Translation(
        "bad_request", "path_dot_segment", "the path has a `.` or `..` segment"
    )


def test_a_public_route_is_allowed_only_for_its_methods(mapping: Any) -> None:
    tr = translate(_http("GET", "/healthz"), mapping, _never)
    assert (tr.kind, tr.reason, tr.message, tr.request, tr.env) == (
        "allow",
        PUBLIC_ROUTE,
        "",
        None,
        None,
    )
    assert tr.match is not None and tr.match.route.public is True
    # POST /healthz maps to nothing: not public, and an anonymous caller is refused.
    tr = translate(_http("POST", "/healthz"), mapping, _never)
    assert (tr.kind, tr.reason) == ("unauthenticated", "missing_token")


def test_a_protected_route_is_never_allowed_without_a_decision(keys: Keys, mapping: Any) -> None:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["unmapped"] = "allow"
    lenient = load_route_mapping(doc)
    # unmapped: allow lets unmapped routes through, never a mapped one.
    tr = translate(_http("GET", DOC), lenient, _never)
    assert (tr.kind, tr.reason) == ("unauthenticated", "missing_token")
    tr = translate(_http("GET", "/v9/x"), lenient, _never)
    assert tr == Translation("allow", UNMAPPED_ROUTE)
    tr = translate(_http("GET", DOC), lenient, None, claims={"sub": "alice", "tid": "acme"})
    assert tr.kind == "check"


def test_an_unmapped_route_is_denied_after_authentication(mapping: Any) -> None:
    claims = {"sub": "alice", "tid": "acme"}
    tr = translate(_http("PUT", "/healthz"), mapping, _never, claims=claims)
    assert (tr.kind, tr.reason, tr.message, tr.request, tr.match) == (
        "deny",
        UNMAPPED_ROUTE,
        "no route maps this method and path",
        None,
        None,
    )
    assert tr.env is not None and tr.env.principal["id"] == "alice"
    tr = translate(_http("DELETE", "/v1/tenants/acme/kb/k1"), mapping, _never, claims=claims)
    assert (tr.kind, tr.reason) == ("deny", UNMAPPED_ROUTE)


def test_given_claims_stand_for_the_token_and_are_copied(mapping: Any) -> None:
    claims = {"sub": "alice", "tid": "acme", "mfa": False, "roles": ["admin"]}
    tr = translate(_http("GET", DOC), mapping, _never, claims=claims)
    assert tr.kind == "check" and tr.env is not None
    assert tr.env.claims == claims and tr.env.claims is not claims
    assert tr.request is not None
    assert tr.request.principal["roles"] == ["admin"]
    assert tr.request.context["attr"] == {"mfa": False}
    bad = translate(
        _http("GET", DOC), mapping, _never, claims={"sub": "alice", "roles": "x y", "tid": 5}
    )
    assert (bad.kind, bad.reason) == ("unauthenticated", "invalid_claims")


def test_the_render_env_holds_what_the_request_said(mapping: Any) -> None:
    claims = {"sub": "alice", "tid": "acme"}
    attrs = HttpAttributes(
        method="get",
        path="/v1/tenants/acme/kb/search/?q=a%20b&empty=&q2=x",
        headers={"x-h": "v"},
        source_ip="10.0.0.9",
        request_id="r7",
    )
    tr = translate(attrs, mapping, _never, claims=claims)
    assert tr.kind == "check" and tr.env is not None and tr.match is not None
    env = tr.env
    assert env.method == "GET"
    assert env.path == "/v1/tenants/acme/kb/search/?q=a%20b&empty=&q2=x"
    assert dict(env.params) == {"tenant": "acme"}
    assert dict(env.headers) == {"x-h": "v"}
    assert env.query == {"q": "a b", "empty": "", "q2": "x"}
    assert env.principal["id"] == "alice"
    assert tr.match.action == "search"
    assert tr.request is not None and tr.request.request_id == "r7"
    assert tr.request.resources[0].resource == {
        "kind": "kb",
        "id": "search",
        "tenant": "acme",
        "attr": {"q": "a b"},
    }


def _context_mapping(**spec: Any) -> Any:
    doc = {
        "kind": "RouteMapping",
        "spec": {
            "context": spec.pop("context", {}),
            "routes": [
                {
                    "path": "/t/{tenant}/d/{doc}",
                    "methods": {"GET": "read"},
                    "resource": {
                        "kind": "document",
                        "id": spec.pop("id", "{doc}"),
                        "tenant": spec.pop("tenant", "{tenant}"),
                        "attr": spec.pop("attr", {}),
                    },
                    "context": spec.pop("route_context", {}),
                }
            ],
        },
    }
    assert not spec
    return load_route_mapping(doc)


def test_the_check_request_has_exactly_the_mapped_fields() -> None:
    m = _context_mapping(
        context={"trustedHops": 1, "attr": {"a": "global", "b": "{header.x-b}", "c": "{claims.c}"}},
        route_context={"attr": {"a": "route", "d": "{claims.missing}", "e": 7}},
        attr={"n": "{claims.n}", "gone": "{claims.nope}", "lit": "x-{doc}"},
    )
    attrs = HttpAttributes(
        "GET",
        "/t/acme/d/d1",
        {"x-b": "hb", "x-forwarded-for": "6.6.6.6, 192.0.2.1"},
        source_ip="10.0.0.9",
        request_id="r1",
    )
    claims = {"sub": "alice", "tenant": "acme", "c": True, "n": 3}
    tr = translate(attrs, m, _never, claims=claims)
    assert (tr.kind, tr.reason, tr.message) == ("check", "", "")
    req = tr.request
    assert req is not None and tr.match is not None and tr.match.action == "read"
    assert req.request_id == "r1"
    assert req.principal["id"] == "alice" and req.principal["tenant"] == "acme"
    (res,) = req.resources
    # a template that is one missing claim is an absent attribute, never null
    assert res.resource == {
        "kind": "document",
        "id": "d1",
        "tenant": "acme",
        "attr": {"n": 3, "lit": "x-d1"},
    }
    assert res.actions == ("read",)
    # the route's context attributes win over the mapping's
    assert req.context["attr"] == {"a": "route", "b": "hb", "c": True, "e": 7}
    assert req.context["ip"] == "192.0.2.1"


def test_non_string_ids_render_as_text_and_a_missing_tenant_is_empty() -> None:
    m = _context_mapping(id="{claims.num}", tenant="{claims.none}")
    tr = translate(
        HttpAttributes("GET", "/t/acme/d/d1", {}, source_ip="10.0.0.9"),
        m,
        _never,
        claims={"sub": "alice", "tenant": "acme", "num": 42},
    )
    assert tr.kind == "check" and tr.request is not None
    assert tr.request.resources[0].resource["id"] == "42"
    assert tr.request.resources[0].resource["tenant"] == ""


def test_a_request_the_model_refuses_is_a_bad_request_never_a_check() -> None:
    m = _context_mapping(id="{claims.none}")
    attrs = HttpAttributes("GET", "/t/acme/d/d1", {}, source_ip="10.0.0.9")
    tr = translate(attrs, m, _never, claims={"sub": "alice", "tenant": "acme"})
    assert (tr.kind, tr.reason, tr.request) == ("bad_request", INVALID_REQUEST, None)
    assert tr.message == "resources[0].id: must not be empty"
    assert tr.match is not None and tr.env is not None
    # the caller's limits apply
    ok = translate(attrs, _context_mapping(), _never, claims={"sub": "alice", "tenant": "acme"})
    assert ok.kind == "check"
    tight = translate(
        HttpAttributes("GET", "/t/acme/d/" + "d" * 40, {}, source_ip="10.0.0.9"),
        _context_mapping(),
        _never,
        Limits(max_id_length=16),
        claims={"sub": "alice", "tenant": "acme"},
    )
    assert (tight.kind, tight.reason) == ("bad_request", INVALID_REQUEST)

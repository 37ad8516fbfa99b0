from __future__ import annotations

import time

import pytest

from pdp.gateway.mapping import AuthConfig, ClaimsConfig
from pdp.gateway.tokens import (
    AuthError,
    KeySetError,
    TokenVerifier,
    bearer_token,
    load_jwks,
    principal_from_claims,
)

from ._support import AUDIENCE, ISSUER, Keys, hs256_with_public_key, unsigned_token


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def verifier(keys):
    auth = AuthConfig(issuer=(ISSUER,), audience=(AUDIENCE,), leeway=5)
    return TokenVerifier(load_jwks(keys.jwks()), auth)


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed"])
def test_each_key_type_verifies(keys, verifier, kind):
    assert verifier.verify(keys.token(kind=kind))["sub"] == "alice"


def _reason(verifier, token):
    with pytest.raises(AuthError) as e:
        verifier.verify(token)
    return e.value.reason


def test_bad_tokens(keys, verifier):
    now = int(time.time())
    assert _reason(verifier, keys.token(exp=now - 60)) == "token_expired"
    assert _reason(verifier, keys.token(nbf=now + 60)) == "token_not_yet_valid"
    assert _reason(verifier, keys.token(iss="https://evil")) == "invalid_issuer"
    assert _reason(verifier, keys.token(aud="other")) == "invalid_audience"
    assert _reason(verifier, keys.token(kind="rogue")) == "invalid_signature"
    assert _reason(verifier, keys.token(exp=None)) == "missing_claim"
    assert _reason(verifier, keys.token(headers={"kid": "nope"})) == "unknown_key"
    assert _reason(verifier, "not.a.jwt") == "malformed_token"
    assert _reason(verifier, "x" * 20000) == "malformed_token"


def test_leeway_tolerates_small_skew(keys, verifier):
    assert verifier.verify(keys.token(exp=int(time.time()) - 2))["sub"] == "alice"


def test_alg_none_is_refused(verifier):
    claims = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
    assert _reason(verifier, unsigned_token(claims)) == "disallowed_algorithm"
    assert _reason(verifier, unsigned_token(claims, alg="None")) == "disallowed_algorithm"


def test_key_confusion_is_refused(keys, verifier):
    claims = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60}
    assert _reason(verifier, hs256_with_public_key(keys, claims)) == "disallowed_algorithm"


def test_alg_must_fit_the_key(keys):
    # An ES256 header naming the RSA key's kid finds no key, whatever the signature.
    auth = AuthConfig(audience=(AUDIENCE,))
    v = TokenVerifier(load_jwks(keys.jwks()), auth)
    token = keys.token(kind="ec", headers={"kid": "rsa-1"})
    assert _reason(v, token) == "unknown_key"


def test_jwks_refuses_secrets_and_private_keys(keys):
    with pytest.raises(KeySetError, match="symmetric"):
        load_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
    jwks = keys.jwks()
    jwks["keys"][0]["d"] = "AAAA"
    with pytest.raises(KeySetError, match="private key"):
        load_jwks(jwks)
    with pytest.raises(KeySetError):
        load_jwks("{not json")


def test_bearer_header():
    auth = AuthConfig()
    assert bearer_token({"authorization": "Bearer abc"}, auth) == "abc"
    assert bearer_token({"authorization": "bearer  abc "}, auth) == "abc"
    for headers in ({}, {"authorization": "Basic abc"}, {"authorization": "Bearer "}):
        with pytest.raises(AuthError, match="missing_token"):
            bearer_token(headers, auth)


def test_claims_to_principal():
    cfg = ClaimsConfig(tenant="org.id", attr={"email": "email"}, actor="act")
    claims = {
        "sub": "alice",
        "org": {"id": "acme"},
        "roles": "user admin",
        "scope": "kb:read kb:write",
        "scp": ["kb:read", "tools:call"],
        "email": "a@x",
        "act": {"sub": "agent-1", "typ": "ai_agent", "scp": ["kb:read"]},
    }
    p = principal_from_claims(claims, cfg)
    assert p["id"] == "alice" and p["tenant"] == "acme"
    assert p["roles"] == ["user", "admin"]
    assert p["scopes"] == ["kb:read", "kb:write", "tools:call"]
    assert p["attr"] == {"email": "a@x"}
    assert p["actor"] == {"id": "agent-1", "type": "ai_agent", "scopes": ["kb:read"], "attr": {}}
    with pytest.raises(AuthError, match="invalid_claims"):
        principal_from_claims({"tenant": "acme"}, ClaimsConfig())
    with pytest.raises(AuthError, match="invalid_claims"):
        principal_from_claims({"sub": "a", "scope": 5}, ClaimsConfig())


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"kid": None}, "malformed_token"),
        ({"kid": 5}, "malformed_token"),
        ({"crit": ["x-unknown"], "x-unknown": 1}, "unsupported_critical_header"),
        ({"crit": ["exp"]}, "unsupported_critical_header"),
        ({"kid": "nope"}, "unknown_key"),
    ],
)
def test_hostile_headers_on_a_valid_signature(keys, verifier, headers, reason):
    """The issue's 500s: a validly signed token with a header PyJWT itself raises on."""
    from ._support import signed_raw

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 60}
    header = {"alg": "RS256", "kid": "rsa-1", **headers}
    assert _reason(verifier, signed_raw(keys, header, claims)) == reason


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "9999999999"),
        ("exp", 1e30),
        ("exp", 10**40),
        ("exp", True),
        ("exp", -5),
        ("exp", [1]),
        ("nbf", "0"),
        ("nbf", False),
        ("iat", {"t": 1}),
        ("iat", 253402300800),  # one second past 9999-12-31
    ],
)
def test_numeric_dates_must_be_plausible_numbers(keys, verifier, claim, value):
    assert _reason(verifier, keys.token(**{claim: value})) == "invalid_claims"


def test_numeric_dates_accept_fractions(keys, verifier):
    assert verifier.verify(keys.token(exp=time.time() + 60.5))["sub"] == "alice"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "..",
        "e30.e30.",  # {} header: no alg
        "W10.e30.",  # [] header
        "eyJhbGciOiJSUzI1NiJ9.bnVsbA.",  # payload `null`
        "eyJhbGciOiJSUzI1NiJ9.TmFO.",  # payload `NaN`
        "eyJhbGciOiJSUzI1NiJ9.x.",  # base64 of length 1 mod 4
        "eyJhbGciOiJSUzI1NiJ9.e30=.",  # padding is not base64url
        "eyJhbGciOiJSUzI1NiJ9.//8.",  # `/` is not base64url
        "é.é.é",
        "x" * 20000,
    ],
)
def test_malformed_tokens_are_auth_errors(verifier, token):
    assert _reason(verifier, token) in ("malformed_token", "disallowed_algorithm")


def test_duplicate_members_are_refused(keys):
    from pdp.gateway.tokens import parse_token

    from ._support import b64

    header = b64(b'{"alg":"RS256","alg":"none"}')
    with pytest.raises(AuthError) as e:
        parse_token(f"{header}.{b64(b'{}')}.")
    assert e.value.reason == "malformed_token"


@pytest.mark.parametrize("aud", ["another-api", ["another-api"], [AUDIENCE, "x"]])
def test_a_token_for_an_audience_is_refused_where_none_is_set(keys, aud):
    """As PyJWT and OPA: a verifier that names no audience takes no token made for one (any
    token the issuer made for another API would pass); tokens without `aud` still verify."""
    v = TokenVerifier(load_jwks(keys.jwks()), AuthConfig(issuer=(ISSUER,)))
    assert _reason(v, keys.token(aud=aud)) == "invalid_audience"
    assert v.verify(keys.token(aud=None))["sub"] == "alice"

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
    auth = AuthConfig()
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

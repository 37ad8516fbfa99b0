"""JWT verification corners that surviving mutants showed untested (docs/MUTATION.md): a JWK's
own `alg` and `use` narrow what it verifies, a non-string `kid` or principal id is refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import jwt
import pytest
from jwt.algorithms import RSAAlgorithm

from pdp.gateway.mapping import AuthConfig, ClaimsConfig
from pdp.gateway.tokens import (
    AuthError,
    KeySetError,
    TokenVerifier,
    load_jwks,
    principal_from_claims,
)

from ._support import AUDIENCE, Keys, b64

RSA_ALGS = ("RS256", "PS256")


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _verifier(jwks: dict[str, Any]) -> TokenVerifier:
    return TokenVerifier(
        load_jwks(jwks, allowed=RSA_ALGS), AuthConfig(algorithms=RSA_ALGS, audience=(AUDIENCE,))
    )


def _ps256(keys: Keys) -> str:
    return jwt.encode(
        jwt.decode(keys.token(), options={"verify_signature": False}),
        keys.rsa,
        algorithm="PS256",
        headers={"kid": "rsa-1"},
    )


def _reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_a_jwk_alg_narrows_the_algorithms_of_its_key(keys: Keys) -> None:
    jwks = keys.jwks()
    assert _verifier(jwks).verify(_ps256(keys))["sub"] == "alice"  # no `alg`: any RSA alg
    pinned = copy.deepcopy(jwks)
    pinned["keys"][0]["alg"] = "RS256"
    assert _reason(_verifier(pinned), _ps256(keys)) == "unknown_key"
    assert _verifier(pinned).verify(keys.token())["sub"] == "alice"


def test_an_encryption_key_never_verifies_and_does_not_hide_the_next_key(keys: Keys) -> None:
    jwks = keys.jwks()
    enc = copy.deepcopy(jwks["keys"][0])
    enc["use"] = "enc"
    only_enc = {"keys": [enc]}
    assert _reason(_verifier(only_enc), keys.token()) == "unknown_key"
    both = {"keys": [enc, jwks["keys"][0]]}
    assert _verifier(both).verify(keys.token())["sub"] == "alice"


def test_a_non_string_kid_is_malformed(keys: Keys) -> None:
    # PyJWT will not encode a non-string kid: sign the segments by hand.
    payload = keys.token().split(".")[1]
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": 5}).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input, keys.rsa)
    token = f"{header}.{payload}.{b64(signature)}"
    assert _reason(_verifier(keys.jwks()), token) == "malformed_token"


@pytest.mark.parametrize("sub", ["", 5, None])
def test_a_principal_id_must_be_a_non_empty_string(sub: object) -> None:
    claims = {"tenant": "acme"} if sub is None else {"sub": sub, "tenant": "acme"}
    with pytest.raises(AuthError) as caught:
        principal_from_claims(claims, ClaimsConfig())
    assert caught.value.reason == "invalid_claims"


@pytest.mark.parametrize("act", ["agent-1", ["agent-1"], {"typ": "ai_agent"}, {"sub": 5}])
def test_a_malformed_actor_claim_is_refused(act: object) -> None:
    with pytest.raises(AuthError) as caught:
        principal_from_claims({"sub": "alice", "act": act}, ClaimsConfig(actor="act"))
    assert caught.value.reason == "invalid_claims"


@pytest.mark.parametrize("jwks", [{"keys": "abc"}, [], "[]", {"no": "keys"}])
def test_a_jwks_without_a_keys_list_is_refused(jwks: object) -> None:
    with pytest.raises(KeySetError) as caught:
        load_jwks(jwks)
    assert str(caught.value) == "jwks must be an object with a `keys` list"


def test_a_jwks_as_json_text_loads(keys: Keys) -> None:
    verifier = TokenVerifier(load_jwks(json.dumps(keys.jwks())), AuthConfig(audience=(AUDIENCE,)))
    assert verifier.verify(keys.token())["sub"] == "alice"


def test_a_jwk_without_use_is_a_signing_key(keys: Keys) -> None:
    jwks = keys.jwks()
    del jwks["keys"][0]["use"]
    assert _verifier(jwks).verify(keys.token())["sub"] == "alice"


def test_a_key_no_allowed_algorithm_fits_is_skipped_not_the_rest(keys: Keys) -> None:
    verifier = TokenVerifier(
        load_jwks(keys.jwks(), allowed=("ES256",)), AuthConfig(audience=(AUDIENCE,))
    )
    assert verifier.verify(keys.token(kind="ec"))["sub"] == "alice"
    assert _reason(verifier, keys.token()) == "unknown_key"  # the RSA key was not loaded


def test_tenant_claim_must_be_a_string_and_defaults_to_none() -> None:
    with pytest.raises(AuthError) as caught:
        principal_from_claims({"sub": "alice", "tenant": 5}, ClaimsConfig())
    assert caught.value.reason == "invalid_claims"
    principal = principal_from_claims({"sub": "alice"}, ClaimsConfig())
    assert principal == {"id": "alice", "tenant": "", "roles": [], "scopes": [], "attr": {}}


def test_a_dot_reaches_into_an_object_and_brackets_name_a_dotted_claim() -> None:
    # One spelling, one claim (tests/security/test_sweep19_claim_paths.py has the attack).
    claims = {"sub": "alice", "org.id": "acme", "org": {"id": "globex"}}
    assert principal_from_claims(claims, ClaimsConfig(tenant="org.id"))["tenant"] == "globex"
    assert principal_from_claims(claims, ClaimsConfig(tenant='["org.id"]'))["tenant"] == "acme"


def test_an_actor_without_a_string_type_has_an_empty_type() -> None:
    for act in ({"sub": "agent-1"}, {"sub": "agent-1", "typ": 5}):
        p = principal_from_claims({"sub": "alice", "act": act}, ClaimsConfig(actor="act"))
        assert p["actor"] == {"id": "agent-1", "type": "", "scopes": [], "attr": {}}


def test_a_token_without_kid_is_tried_against_every_key_of_its_algorithm(keys: Keys) -> None:
    claims = jwt.decode(keys.token(), options={"verify_signature": False})
    token = jwt.encode(claims, keys.rsa, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(token)
    assert _verifier(keys.jwks()).verify(token)["sub"] == "alice"
    rogue = jwt.encode(claims, keys.rogue, algorithm="RS256")
    assert _reason(_verifier(keys.jwks()), rogue) == "invalid_signature"

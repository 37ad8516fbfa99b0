"""Bearer tokens: verify a JWT against a JWKS and map its claims to a principal.

The algorithm is chosen from the *key*, never from the token: each JWK allows only the
algorithms of its key type (and its own `alg`, when it names one), so `alg: none` and
HS256-signed-with-the-public-key (key confusion) are refused before any signature check.
Symmetric (`oct`) and private keys are refused when the key set is loaded: a bundle is
public, and a shared secret in it would let anyone mint tokens.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pdp.gateway.mapping import AuthConfig, ClaimsConfig
from pdp.gateway.templates import claim_at, parse_claim_path
from pdp.model.request import id_problem

if TYPE_CHECKING:
    import jwt

# One token longer than this is not an access token; refuse before base64/JSON work.
MAX_TOKEN_BYTES = 16 * 1024

_ALGS_BY_KEY: dict[tuple[str, str], frozenset[str]] = {
    ("RSA", ""): frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    ("EC", "P-256"): frozenset({"ES256"}),
    ("EC", "P-384"): frozenset({"ES384"}),
    ("EC", "P-521"): frozenset({"ES512"}),
    ("OKP", "Ed25519"): frozenset({"EdDSA"}),
    ("OKP", "Ed448"): frozenset({"EdDSA"}),
}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


class AuthError(Exception):
    """A missing or bad credential (HTTP 401); `reason` is a stable code for logs and clients."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class KeySetError(ValueError):
    """A JWKS that cannot be used (a configuration error, not the caller's)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    algorithms: frozenset[str]
    key: Any  # a `cryptography` public key


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[VerificationKey, ...]

    def candidates(self, kid: str | None, alg: str) -> list[VerificationKey]:
        usable = [k for k in self.keys if alg in k.algorithms]
        if kid is not None:
            return [k for k in usable if k.kid == kid]
        return usable


def load_jwks(obj: Any, allowed: Sequence[str] = ("RS256", "ES256", "EdDSA")) -> KeySet:
    """A JWKS (`{"keys": [...]}` as parsed JSON, or its text) to verification keys."""
    import jwt  # PyJWT, and the cryptography it loads, only once there are keys

    if isinstance(obj, str | bytes):
        try:
            obj = json.loads(obj)
        except ValueError as e:
            raise KeySetError(f"jwks is not valid json: {e}") from None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("keys"), list):
        raise KeySetError("jwks must be an object with a `keys` list")
    out = []
    for i, jwk in enumerate(obj["keys"]):
        where = f"jwks key {i}" + (f" (`{jwk.get('kid')}`)" if isinstance(jwk, Mapping) else "")
        if not isinstance(jwk, Mapping):
            raise KeySetError(f"{where}: must be an object")
        kty, crv = jwk.get("kty", ""), jwk.get("crv", "")
        if kty == "oct":
            raise KeySetError(
                f"{where}: symmetric (`oct`) keys are refused; publish public keys only"
            )
        if any(m in jwk for m in _PRIVATE_MEMBERS):
            raise KeySetError(f"{where}: holds private key material; publish public keys only")
        if jwk.get("use", "sig") != "sig":
            continue  # an encryption key is not for us
        algs = _ALGS_BY_KEY.get((kty, "" if kty == "RSA" else crv))
        if algs is None:
            raise KeySetError(f"{where}: unsupported key type `{kty}` `{crv}`")
        if jwk.get("alg"):
            algs = algs & {jwk["alg"]}
        algs = algs & frozenset(allowed)
        if not algs:
            continue  # allowed by nobody: keeping it could only widen what we accept
        try:
            # PyJWK needs an algorithm to pick the key parser; any of the key's will do.
            key = jwt.PyJWK(dict(jwk), algorithm=sorted(algs)[0]).key
        except jwt.PyJWKError as e:
            raise KeySetError(f"{where}: {e}") from None
        kid = jwk.get("kid")
        out.append(
            VerificationKey(kid=kid if isinstance(kid, str) else "", algorithms=algs, key=key)
        )
    return KeySet(tuple(out))


class TokenVerifier:
    """Verifies tokens for one bundle's authentication settings; thread-safe (immutable).

    The token's structure, header and date claims are checked here, strictly, before PyJWT
    sees it: every malformed token must end as an `AuthError` (401 with a reason), never as
    an exception the servicer would have to call internal.
    """

    def __init__(self, keys: KeySet, auth: AuthConfig):
        self.keys = keys
        self.auth = auth

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims, or `AuthError`."""
        header, payload = parse_token(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.auth.algorithms:
            shown = alg if isinstance(alg, str) else type(alg).__name__
            raise AuthError("disallowed_algorithm", f"algorithm `{shown}` is not accepted")
        kid = header.get("kid", _ABSENT)
        if kid is not _ABSENT and not isinstance(kid, str):
            raise AuthError("malformed_token", "header `kid` must be a string")
        if "crit" in header:
            # RFC 7515 §4.1.11: extensions named in `crit` must be understood; pdp knows none.
            raise AuthError("unsupported_critical_header", "header `crit` names an extension")
        check_numeric_dates(payload)
        if not self.auth.audience and payload.get("aud"):
            # As PyJWT and OPA's io.jwt.decode_verify: a token made for a named audience is not
            # taken by a verifier that names none, or any token the same issuer made for another
            # API (another tenant's, a public client's) would pass here.
            raise AuthError(
                "invalid_audience",
                "the token names an audience (`aud`) and the mapping's `auth.audience` is unset",
            )
        candidates = self.keys.candidates(kid if isinstance(kid, str) else None, alg)
        if not candidates:
            raise AuthError("unknown_key", f"no key for this `kid` and algorithm `{alg}`")
        options: dict[str, Any] = {
            "require": list(self.auth.require),
            "verify_aud": bool(self.auth.audience),
        }
        import jwt  # imported by load_jwks already: a lookup, not an import

        last: AuthError | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    audience=list(self.auth.audience) or None,
                    issuer=list(self.auth.issuer) or None,
                    leeway=self.auth.leeway,
                    options=options,  # type: ignore[arg-type]
                )
            except jwt.InvalidSignatureError:
                last = AuthError("invalid_signature", "signature verification failed")
                continue  # without a kid, another key may verify it
            except jwt.PyJWTError as e:
                raise _auth_error(e) from None
            except (ValueError, TypeError, OverflowError, RecursionError):
                # PyJWT and `cryptography` raise these on inputs our checks let through.
                raise AuthError("malformed_token", "the token cannot be decoded") from None
            if not isinstance(claims, dict):
                raise AuthError("malformed_token", "claims must be a json object")
            return claims
        assert last is not None
        raise last


_ABSENT = object()
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
# RFC 7519 NumericDate: seconds since the epoch. Beyond year 9999 is nonsense, not a date.
MAX_NUMERIC_DATE = 253402300799
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")


def parse_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compact JWS's (header, payload), strictly: or `AuthError(malformed_token)`."""
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("malformed_token", f"token longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.match(p) for p in parts) or not parts[0]:
        raise AuthError("malformed_token", "not a compact JWS (three base64url parts)")
    header = _json_object(parts[0], "header")
    payload = _json_object(parts[1], "payload")
    return header, payload


def _json_object(part: str, what: str) -> dict[str, Any]:
    if len(part) % 4 == 1:
        raise AuthError("malformed_token", f"the {what} is not valid base64url")
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        obj = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
        )
    except AuthError:
        raise
    except (ValueError, RecursionError):  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        raise AuthError("malformed_token", f"the {what} is not base64url json") from None
    if not isinstance(obj, dict):
        raise AuthError("malformed_token", f"the {what} must be a json object")
    if b"\\u" in data and not _is_text(obj):
        # `"\\ud800"` is valid JSON and no text (I-JSON forbids it): rendered into a header
        # it made the answer to Envoy impossible to encode.
        raise AuthError("malformed_token", f"the {what} holds an unpaired surrogate")
    return obj


def _is_text(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):  # as deep as the parser took is not text
        return False
    return True


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        # Two `sub` members: which one counts depends on the parser; refuse the question.
        raise AuthError("malformed_token", "a json object has a duplicate member")
    return out


def _no_constant(name: str) -> Any:
    raise AuthError("malformed_token", f"`{name}` is not json")


def check_numeric_dates(claims: Mapping[str, Any]) -> None:
    """`exp`/`nbf`/`iat`, when present, are JSON numbers of seconds in a sane range."""
    for name in NUMERIC_DATE_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AuthError("invalid_claims", f"claim `{name}` must be a number (NumericDate)")
        if (isinstance(value, float) and not math.isfinite(value)) or not (
            0 <= value <= MAX_NUMERIC_DATE
        ):
            raise AuthError("invalid_claims", f"claim `{name}` is not a plausible NumericDate")


def _auth_error(e: jwt.InvalidTokenError) -> AuthError:
    import jwt

    for cls, reason in (
        (jwt.ExpiredSignatureError, "token_expired"),
        (jwt.ImmatureSignatureError, "token_not_yet_valid"),
        (jwt.InvalidIssuerError, "invalid_issuer"),
        (jwt.InvalidAudienceError, "invalid_audience"),
        (jwt.MissingRequiredClaimError, "missing_claim"),
        (jwt.InvalidAlgorithmError, "disallowed_algorithm"),
        (jwt.DecodeError, "malformed_token"),
    ):
        if isinstance(e, cls):
            return AuthError(reason, _short(str(e)))
    return AuthError("invalid_token", _short(str(e)))


def _short(text: str) -> str:
    return text[:200]


def bearer_token(headers: Mapping[str, str], auth: AuthConfig) -> str:
    """The token from the configured header, or `AuthError(missing_token)`."""
    value = headers.get(auth.header, "").strip()
    if not value:
        raise AuthError("missing_token", f"no `{auth.header}` header")
    if not auth.scheme:
        return value
    scheme, _, token = value.partition(" ")
    if scheme.lower() != auth.scheme.lower() or not token.strip():
        raise AuthError("missing_token", f"`{auth.header}` is not a `{auth.scheme}` credential")
    return token.strip()


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    # One spelling, one claim (templates.parse_claim_path); the mapping checked `name` at load.
    return claim_at(claims, _claim_path(name))


@functools.lru_cache(maxsize=256)
def _claim_path(name: str) -> tuple[str, ...]:
    return parse_claim_path(name)


def _string_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        # OAuth `scope` is one string of tokens separated by spaces (RFC 6749 3.3: %x20 only);
        # `str.split()` would also split at NBSP, em space or U+001F, which an issuer may
        # allow inside one token: "reader\u2003admin" is one scope, not two.
        value = [v for v in value.split(" ") if v]
    elif not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise AuthError("invalid_claims", f"claim `{name}` must be a string or a list of strings")
    return [_claim_id(v, name, "an entry") for v in value]


def _claim_id(value: str, name: str, what: str) -> str:
    """`value` when it can be an id (`id_problem`). A signed token naming `mallory\\u0000` is
    a bad credential, refused as one (401), rather than a request pdp decides."""
    problem = id_problem(value)
    if problem:
        raise AuthError("invalid_claims", f"claim `{name}` ({what}) {problem}")
    return value


def _scopes(claims: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for name in names:
        for scope in _string_list(_claim(claims, name), name):
            out[scope] = None
    return list(out)


def principal_from_claims(claims: Mapping[str, Any], cfg: ClaimsConfig) -> dict[str, Any]:
    """A JSON-shaped principal (as `parse_check_request` takes it) from verified claims."""
    pid = _claim(claims, cfg.id)
    if not isinstance(pid, str) or not pid:
        raise AuthError("invalid_claims", f"claim `{cfg.id}` (the principal id) is missing")
    _claim_id(pid, cfg.id, "the principal id")
    tenant = _claim(claims, cfg.tenant)
    if tenant is not None and not isinstance(tenant, str):
        raise AuthError("invalid_claims", f"claim `{cfg.tenant}` (the tenant) must be a string")
    if tenant:
        _claim_id(tenant, cfg.tenant, "the tenant")
    principal: dict[str, Any] = {
        "id": pid,
        "tenant": tenant or "",
        "roles": _string_list(_claim(claims, cfg.roles), cfg.roles),
        "scopes": _scopes(claims, cfg.scopes),
        "attr": {
            name: value
            for name, claim in cfg.attr.items()
            if (value := _claim(claims, claim)) is not None
        },
    }
    if cfg.actor:
        act = _claim(claims, cfg.actor)
        if act is not None:
            if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str):
                raise AuthError(
                    "invalid_claims", f"claim `{cfg.actor}` must be an object with `sub`"
                )
            principal["actor"] = {
                "id": _claim_id(act["sub"], f"{cfg.actor}.sub", "the actor id"),
                "type": _claim_id(typ, f"{cfg.actor}.typ", "the actor type")
                if isinstance(typ := act.get("typ"), str)
                else "",
                "scopes": _scopes(act, cfg.scopes),
                "attr": {},
            }
    return principal

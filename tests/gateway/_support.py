"""Keys, tokens and a route mapping shared by the gateway tests."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://idp.test"
AUDIENCE = "kb-api"

MAPPING: dict[str, Any] = {
    "apiVersion": "pdp/v1",
    "kind": "RouteMapping",
    "metadata": {"id": "gateway"},
    "spec": {
        "public": [{"path": "/healthz", "methods": ["GET"]}],
        "authentication": {"issuer": ISSUER, "audience": AUDIENCE, "leeway": 5},
        "claims": {"tenant": "tid", "roles": "roles", "attr": {"email": "email"}, "actor": "act"},
        "context": {"attr": {"mfa": "{claims.mfa}"}},  # trustedHops 0: the peer Envoy saw
        "headers": {"remove": ["authorization"], "add": {"x-user-id": "{principal.id}"}},
        "obligations": {"mask_fields": "x-pdp-mask-fields"},
        "routes": [
            {
                "path": "/v1/tenants/{tenant}/kb/{kb}/docs/{doc}",
                "methods": {"GET": "read", "PUT": "write", "DELETE": "delete"},
                "resource": {
                    "kind": "document",
                    "id": "{doc}",
                    "tenant": "{tenant}",
                    "attr": {"kb": "{kb}"},
                },
            },
            {
                "path": "/v1/tenants/{tenant}/kb/search",
                "methods": ["GET", "POST"],
                "action": "search",
                "resource": {
                    "kind": "kb",
                    "id": "search",
                    "tenant": "{tenant}",
                    "attr": {"q": "{query.q}"},
                },
            },
            {
                "path": "/v1/tenants/{tenant}/kb/{kb}",
                "methods": {"GET": "read"},
                "resource": {"kind": "kb", "id": "{kb}", "tenant": "{tenant}"},
            },
            {
                "path": "/v1/tenants/{tenant}/users/{user}/profile",
                "methods": {"GET": "read", "PATCH": "update"},
                "resource": {
                    "kind": "profile",
                    "id": "{user}",
                    "tenant": "{tenant}",
                    "attr": {"owner": "{user}"},
                },
            },
            {
                "path": "/v1/me/files/{path*}",
                "methods": {"GET": "read"},
                "resource": {"kind": "file", "id": "{path}", "tenant": "{principal.tenant}"},
            },
        ],
    },
}


class Keys:
    """One RSA, one EC P-256 and one Ed25519 key, plus an unrelated RSA key (`rogue`)."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key, alg in (
            ("rsa-1", self.rsa, "RS256"),
            ("ec-1", self.ec, "ES256"),
            ("ed-1", self.ed, "EdDSA"),
        ):
            jwk = json.loads(_public_jwk(key, alg))
            jwk.update({"kid": kid, "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}

    def token(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kind: str = "rsa",
        headers: dict | None = None,
        **over: Any,
    ) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "tid": "acme",
            "iat": now,
            "exp": now + 300,
        }
        body.update(claims or {})
        body.update(over)
        body = {k: v for k, v in body.items() if v is not None}
        key, alg, kid = {
            "rsa": (self.rsa, "RS256", "rsa-1"),
            "ec": (self.ec, "ES256", "ec-1"),
            "ed": (self.ed, "EdDSA", "ed-1"),
            "rogue": (self.rogue, "RS256", "rsa-1"),
        }[kind]
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid, **(headers or {})})


def signed_raw(keys: Keys, header: Any, payload: Any) -> str:
    """An RS256 signature by the test key over whatever header and payload are given (JSON
    values, or raw text for a str) — what PyJWT's encoder would refuse to produce."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def seg(obj: Any) -> str:
        return b64((obj if isinstance(obj, str) else json.dumps(obj, allow_nan=True)).encode())

    h, p = seg(header), seg(payload)
    sig = keys.rsa.sign(f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{h}.{p}.{b64(sig)}"


def _public_jwk(key: Any, alg: str) -> str:
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    algo = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    return algo.to_jwk(key.public_key())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any], alg: str = "none") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def hs256_with_public_key(keys: Keys, claims: dict[str, Any]) -> str:
    """The key-confusion attack: HMAC-sign with the RSA public key's PEM as the secret."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps(claims).encode())
    sig = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(sig)}"

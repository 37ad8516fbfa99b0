"""What grpcio's `auth_context()` gives a call, for the native transport: plaintext's, or a TLS
connection's, made once per connection of the properties the C side (`_tls.c`) extracted with
the OpenSSL calls grpc's own TLS uses, then kept in the connection's one-item list that every
call of the connection carries (tests/server/test_native_tls.py compares it with grpcio's).
"""

from __future__ import annotations

import struct

AuthContext = dict[str, list[bytes]]

# What grpcio's auth_context() says of a plaintext call.
INSECURE: AuthContext = {
    "transport_security_type": [b"insecure"],
    "security_level": [b"TSI_SECURITY_NONE"],
}
_SAN = "x509_subject_alternative_name"
_CN = "x509_common_name"


class Auth:
    """A TLS connection's auth context, with grpcio's `peer_identity_key()` for it."""

    __slots__ = ("context", "identity_key")

    def __init__(self, context: AuthContext, identity_key: str | None) -> None:
        self.context = context
        self.identity_key = identity_key


def _is_spiffe_id(uri: bytes) -> bool:
    """grpc's IsSpiffeId: spiffe://DOMAIN/PATH, a domain of at most 255 bytes, at most 2048."""
    if not uri.startswith(b"spiffe://") or len(uri) > 2048:
        return False
    parts = uri.split(b"/")
    return len(parts) >= 4 and bool(parts[3]) and len(parts[2]) <= 255


def unpack(packed: bytes) -> Auth:
    """The auth context of `_tls.c`'s packed properties ("key\\0", 4-byte big-endian length,
    value; repeated keys in order), as grpc's `grpc_ssl_peer_to_auth_context` makes it: a
    `peer_spiffe_id` when the certificate's one URI SAN is a SPIFFE id; identified by its SANs,
    else by its common name."""
    context: AuthContext = {}
    at = 0
    while at < len(packed):
        end = packed.index(b"\0", at)
        key = packed[at:end].decode("ascii")
        (n,) = struct.unpack_from(">I", packed, end + 1)
        context.setdefault(key, []).append(packed[end + 5 : end + 5 + n])
        at = end + 5 + n
    uris = context.get("peer_uri", [])
    if len(uris) == 1 and _is_spiffe_id(uris[0]):
        context["peer_spiffe_id"] = [uris[0]]
    key = _SAN if _SAN in context else _CN if _CN in context else None
    return Auth(context, key)


def of_connection(holder: list[bytes | Auth]) -> Auth:
    """The connection's Auth, made from its packed properties by the first call that asks."""
    got = holder[0]
    if isinstance(got, bytes):
        got = holder[0] = unpack(got)
    return got

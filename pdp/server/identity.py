"""Caller identities from the mTLS client certificate, and the allow-list interceptor.

Allow-list entries are typed, and an entry matches only a SAN of its own type:

    spiffe://TRUST-DOMAIN/PATH, uri:URI   a URI SAN, compared exactly
    dns:NAME                              a DNS SAN, compared case-insensitively
    NAME (no scheme)                      a DNS SAN, as `dns:NAME` (the form before types)
    SCHEME://REST                         a URI SAN, as `uri:SCHEME://REST`

Anything else (`urn:x` without `uri:`, a DNS name with `:` or `/`, an empty value) is refused
when the server starts, so a DNS SAN can never satisfy a SPIFFE entry nor a URI SAN a host name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .status import Aborted, permission_denied

# The health service stays open to any caller that completed the TLS handshake, so load
# balancers and kubelets probe without being on the allow-list; it reveals nothing else.
_OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def _decode(values: Iterable[bytes]) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values]


def peer_identities(auth: Mapping[str, Sequence[bytes]]) -> tuple[str, ...]:
    """Every identity the client certificate proves: URI SANs (SPIFFE ids) first, then DNS SANs.

    Read from the certificate itself (`x509_pem_cert`, `_cert_sans`) when the context has it;
    else grpc core's `peer_uri`/`peer_dns`, or in older releases the untyped
    `x509_subject_alternative_name` list.
    """
    pems = auth.get("x509_pem_cert", ())
    if pems:
        uris, names = _cert_sans(pems[0])
        return tuple(dict.fromkeys(uris + names))
    found = _decode(auth.get("peer_uri", ())) + _decode(auth.get("peer_dns", ()))
    if not found:
        found = _decode(auth.get("x509_subject_alternative_name", ()))
    return tuple(dict.fromkeys(found))


URI, DNS = "uri", "dns"
# A DNS name as a SAN may hold it: labels of letters, digits, `-` and `_` (seen in service
# names), compared lower-cased without a final dot. No wildcards: an entry names one caller.
_DNS_NAME = re.compile(
    r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?"
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def parse_allow_entry(entry: str) -> tuple[str, str]:
    """(`uri` or `dns`, the value to compare) of one `--allow-identity`; ValueError names it."""
    if entry.startswith("uri:"):
        kind, value = URI, entry[4:]
    elif entry.startswith("dns:"):
        kind, value = DNS, entry[4:]
    elif "://" in entry:
        kind, value = URI, entry
    elif ":" in entry or "/" in entry:
        raise ValueError(
            f"allowed identity `{entry}` is neither a DNS name nor a `scheme://` URI: "
            "write `uri:...` or `dns:...`"
        )
    else:
        kind, value = DNS, entry
    if kind == URI and not _URI.fullmatch(value):
        raise ValueError(f"allowed identity `{entry}`: `{value}` is not a URI")
    if kind == DNS:
        if not _DNS_NAME.fullmatch(value):
            raise ValueError(f"allowed identity `{entry}`: `{value}` is not a DNS name")
        value = _dns_key(value)
    return kind, value


def _dns_key(name: str) -> str:
    return name.lower().removesuffix(".")


def parse_allow_list(entries: Iterable[str]) -> frozenset[tuple[str, str]]:
    return frozenset(parse_allow_entry(e) for e in entries)


def typed_identities(auth: Mapping[str, Sequence[bytes]]) -> frozenset[tuple[str, str]]:
    """The certificate's SANs as (`uri`, value) and (`dns`, lower-cased value) pairs.

    From the certificate itself (`x509_pem_cert`) whenever the context carries it, never from
    grpc core's `peer_uri`/`peer_dns`: grpcio's `auth_context()` cuts each value at its first
    NUL byte, so a DNS SAN `billing.internal\0.evil.example` (or a URI SAN with a NUL) read
    there would pass for `billing.internal`. The typed properties only serve a context without
    the certificate; the untyped SAN list never does (its types are lost)."""
    pems = auth.get("x509_pem_cert", ())
    if pems:
        return _cert_typed(pems[0])
    return typed(_decode(auth.get("peer_uri", ())), _decode(auth.get("peer_dns", ())))


def typed(uris: Iterable[str], names: Iterable[str]) -> frozenset[tuple[str, str]]:
    """URI and DNS SANs as the allow-list compares them (`parse_allow_entry`'s pairs)."""
    return frozenset([(URI, u) for u in uris] + [(DNS, _dns_key(n)) for n in names])


@functools.lru_cache(maxsize=256)
def _cert_sans(pem: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(URI SANs, DNS SANs) of a PEM certificate, whole (a NUL byte kept), in its order; none
    when it cannot be read, so an unreadable certificate proves no identity. Cached: a
    connection's calls, and grpcio's per-call contexts, carry the same certificate."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension):
        return (), ()
    return (
        tuple(sans.get_values_for_type(x509.UniformResourceIdentifier)),
        tuple(sans.get_values_for_type(x509.DNSName)),
    )


@functools.lru_cache(maxsize=256)
def _cert_typed(pem: bytes) -> frozenset[tuple[str, str]]:
    """`typed` of the certificate's SANs, made once per certificate however many it holds."""
    return typed(*_cert_sans(pem))


def primary_identity(auth: Mapping[str, Sequence[bytes]]) -> str:
    ids = peer_identities(auth)
    if ids:
        return ids[0]
    cn = auth.get("x509_common_name", ())
    return _decode(cn)[0] if cn else ""


class AllowList:
    """Refuses (PERMISSION_DENIED) callers none of whose certificate identities is allowed,
    each entry matching SANs of its own type only (`parse_allow_entry`; ValueError here). The
    grpcio transport's interceptor is `pdp.server.grpc_edge.AllowListInterceptor`."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = parse_allow_list(allowed)

    @staticmethod
    def is_open(method: str) -> bool:
        return method.startswith(_OPEN_SERVICES)

    def _guard(self, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        allowed = self.allowed

        def guarded(request: Any, context: Any, *more: Any) -> Any:
            auth = context.auth_context()
            if allowed.isdisjoint(typed_identities(auth)):
                raise Aborted(permission_denied(primary_identity(auth)))
            return behaviour(request, context, *more)

        return guarded

    def guard(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        """`behaviour(request, context)` for `method` with the refusal, the open services
        left open."""
        return behaviour if self.is_open(method) else self._guard(behaviour)

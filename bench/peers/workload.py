"""The comparison workload: generated document requests, and the same decisions by hand.

Every request is pdp's JSON shape (what `parse_check_request` takes): one principal of one of
three tenants, documents with an owner and a classification, the actions read/write/delete,
and a client IP inside or just outside the corporate CIDRs. Each engine adapter (inproc.py)
and each gRPC payload (grpcload.py) is built from these dicts, so every engine answers exactly
the same questions. Seeded: the same arguments give the same requests on every run.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

TENANTS = ("acme", "globex", "initech")
USERS_PER_TENANT = 20
ROLES = ("viewer", "editor", "admin")
SCOPES = ("docs:read", "docs:write", "docs:delete")
ACTIONS = ("read", "write", "delete")
CLASSIFICATIONS = ("public", "internal", "confidential")
# Inside the corporate ranges, and next to their edges (172.32/12 and 192.169/16 are outside).
CORP_IPS = ("10.{a}.{b}.{c}", "172.{s}.{b}.{c}", "192.168.{b}.{c}")
OUTSIDE_IPS = (
    "203.0.113.{c}",
    "8.8.{b}.{c}",
    "172.32.{b}.{c}",
    "192.169.{b}.{c}",
    "11.{a}.{b}.{c}",
)

Request = dict[str, Any]
Effects = list[dict[str, bool]]  # per resource, in order: {action: allowed}


def _user(rng: random.Random, tenant: str) -> str:
    return f"{tenant}-u{rng.randrange(USERS_PER_TENANT)}"


def _ip(rng: random.Random) -> str:
    pattern = rng.choice(CORP_IPS if rng.random() < 0.5 else OUTSIDE_IPS)
    return pattern.format(
        a=rng.randrange(256), b=rng.randrange(256), c=rng.randrange(1, 255), s=rng.randrange(16, 32)
    )


def _principal(rng: random.Random) -> dict[str, Any]:
    tenant = rng.choice(TENANTS)
    roles = [rng.choice(ROLES)]
    if rng.random() < 0.15:
        roles.append(rng.choice(ROLES))
    scopes = [s for s in SCOPES if rng.random() < 0.75]
    return {
        "id": _user(rng, tenant),
        "tenant": tenant,
        "roles": sorted(set(roles)),
        "scopes": scopes,
        "attr": {},
    }


def _document(rng: random.Random, principal: dict[str, Any], n: int) -> dict[str, Any]:
    tenant = principal["tenant"] if rng.random() < 0.8 else rng.choice(TENANTS)
    owner = principal["id"] if rng.random() < 0.3 else _user(rng, tenant)
    return {
        "kind": "document",
        "id": f"doc-{n}",
        "tenant": tenant,
        "attr": {"owner": owner, "classification": rng.choice(CLASSIFICATIONS)},
        "actions": list(ACTIONS),
    }


def generate(count: int, resources: int = 1, seed: int = 7) -> list[Request]:
    """`count` requests of `resources` documents x 3 actions each."""
    rng = random.Random(seed * 1000 + resources)
    out = []
    for i in range(count):
        p = _principal(rng)
        docs = [_document(rng, p, i * resources + j) for j in range(resources)]
        out.append({"principal": p, "resources": docs, "context": {"ip": _ip(rng)}})
    return out


def heavy(resources: int) -> Request:
    """One request whose every decision runs every rule kind: the tenant matches, every scope is
    held, the delete reaches the CIDR fence (from outside), and roles and owners vary. gRPC load
    generators send one body over and over, so this is the body they send."""
    rng = random.Random(4242 + resources)
    p = {
        "id": "acme-u1",
        "tenant": "acme",
        "roles": ["viewer"],
        "scopes": list(SCOPES),
        "attr": {},
    }
    docs = []
    for j in range(resources):
        owner = p["id"] if j % 4 == 0 else _user(rng, "acme")
        docs.append(
            {
                "kind": "document",
                "id": f"doc-{j}",
                "tenant": "acme",
                "attr": {"owner": owner, "classification": CLASSIFICATIONS[j % 3]},
                "actions": list(ACTIONS),
            }
        )
    return {"principal": p, "resources": docs, "context": {"ip": "203.0.113.7"}}


# ---- the floor: the same decisions written by hand -------------------------------------------

CORPORATE = tuple(
    ipaddress.ip_network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
REQUIRED_SCOPE = {"read": "docs:read", "write": "docs:write", "delete": "docs:delete"}


def _from_corp(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in CORPORATE)


def floor_decide(p: dict[str, Any], r: dict[str, Any], action: str, ip: str) -> bool:
    """One document decision, as a careful engineer would write it inline in a service."""
    tenant = p["tenant"]
    if not tenant or tenant != r["tenant"]:
        return False
    scope = REQUIRED_SCOPE.get(action)
    if scope is None or scope not in p["scopes"]:
        return False
    if action == "delete" and not _from_corp(ip):
        return False
    attr = r["attr"]
    if attr.get("owner") == p["id"]:
        return True
    roles = p["roles"]
    if "editor" in roles and action in ("read", "write"):
        return True
    if "viewer" in roles and action == "read" and attr.get("classification") != "confidential":
        return True
    return "admin" in roles and action in ("read", "delete")


def floor_request(raw: Request) -> Effects:
    p = raw["principal"]
    ip = raw.get("context", {}).get("ip", "")
    return [{a: floor_decide(p, r, a, ip) for a in r["actions"]} for r in raw["resources"]]

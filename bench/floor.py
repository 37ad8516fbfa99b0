"""The example platform's policies (policies/) written by hand in plain Python: the floor.

This is what a careful engineer would write inline in a service, with no policy engine: the
same decisions as the YAML + CEL policies, as direct dict lookups and comparisons. bench/engine.py
first checks it agrees with pdp on every test-suite case and reference request, then times both.
"""

from __future__ import annotations

import bisect
import ipaddress
from datetime import datetime, timedelta
from typing import Any

CORPORATE = [
    ipaddress.ip_network(c)
    for c in ("10.0.0.0/8", "172.16.0.0/12", "192.0.2.0/26", "2001:db8:c0::/48")
]
DENYLIST = [ipaddress.ip_network(c) for c in ("198.51.100.128/25", "2001:db8:dead::/48")]
EXPORT_BLOCKED = {"CU", "IR", "KP", "RU", "SY"}
CLASSIFICATIONS = {"public", "internal", "confidential", "secret"}
SUPPORT_VISIBLE = {"public", "internal"}
STEP_UP_WINDOW = timedelta(minutes=15)

_GEO = [
    ("81.2.69.0/24", "GB"), ("192.0.2.0/24", "US"), ("198.51.100.0/24", "DE"),
    ("203.0.113.0/24", "FR"), ("175.16.199.0/24", "CN"), ("198.18.0.0/24", "IR"),
    ("198.18.1.0/24", "KP"), ("198.19.0.0/24", "RU"), ("198.19.1.0/24", "NO"),
    ("10.0.0.0/8", "US"), ("2001:db8:c0::/48", "US"), ("2001:db8:1::/48", "CU"),
    ("2001:db8:2::/48", "JP"),
]  # fmt: skip
_GEO_TABLE = sorted(
    (n.version, int(n.network_address), int(n.broadcast_address), c)
    for n, c in ((ipaddress.ip_network(cidr), c) for cidr, c in _GEO)
)
_GEO_STARTS = [(v, s) for v, s, _e, _c in _GEO_TABLE]

SCOPES: dict[str, dict[str, frozenset[str]]] = {
    "document": {
        "read": frozenset({"docs:read"}), "write": frozenset({"docs:write"}),
        "delete": frozenset({"docs:delete"}), "share": frozenset({"docs:share"}),
    },
    "conversation": {
        "read": frozenset({"conversations:read"}), "append": frozenset({"conversations:write"}),
        "delete": frozenset({"conversations:delete"}), "export": frozenset({"conversations:export"}),
    },
    "model": {
        "invoke": frozenset({"models:invoke"}), "fine_tune": frozenset({"models:train"}),
        "deploy": frozenset({"models:deploy"}), "delete": frozenset({"models:admin"}),
    },
    "knowledge_base": {
        "read": frozenset({"kb:read"}), "write": frozenset({"kb:write"}),
        "delete": frozenset({"kb:admin"}), "share": frozenset({"kb:admin"}),
    },
    "agent_tool": {"call": frozenset({"tools:call"})},
    "api_key": {
        "create": frozenset({"keys:admin"}), "read": frozenset({"keys:read"}),
        "revoke": frozenset({"keys:admin"}),
    },
    "catalog_model": {"list": frozenset({"catalog:read"}), "read": frozenset({"catalog:read"})},
}  # fmt: skip


class _Error(Exception):
    """A condition that CEL would report as an error (the engine fails closed on it)."""


def _ip(s: str) -> Any:
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        raise _Error(s) from None


def in_nets(ip: str, nets: list) -> bool:
    addr = _ip(ip)
    return any(addr in n for n in nets)


def country(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    key = (addr.version, int(addr))
    i = bisect.bisect_right(_GEO_STARTS, key) - 1
    while i >= 0:
        v, start, end, c = _GEO_TABLE[i]
        if v == addr.version and start <= int(addr) <= end:
            return c
        i -= 1
    return ""


def _recent_mfa(ctx: dict, now: datetime) -> bool:
    attr = ctx["attr"]
    if attr.get("mfa") is not True or "auth_time" not in attr:
        return False
    t = attr["auth_time"]
    if not isinstance(t, str):
        raise _Error("auth_time")
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise _Error("auth_time") from None
    return when <= now and now - when < STEP_UP_WINDOW


def _ticket_open(ctx: dict, res: dict) -> bool:
    t = ctx["attr"].get("support_ticket")
    return isinstance(t, dict) and t.get("status") == "open" and t.get("tenant") == res["tenant"]


def _from_corp(ip: str) -> bool:
    return ip != "" and in_nets(ip, CORPORATE)


def _guards(p: dict, res: dict, action: str, ctx: dict, now: datetime) -> str | None:
    actor = p["actor"]
    kind = res["kind"]
    attr = res["attr"]
    ip = ctx["ip"]
    if actor is not None and action in (
        "delete", "revoke", "deploy", "share", "export", "fine_tune", "create"
    ):  # fmt: skip
        return "agent-never-destructive"
    if actor is not None and actor["type"] not in ("ai_agent", "service"):
        return "unknown-actor-type"
    if ip != "" and in_nets(ip, DENYLIST):
        return "denylisted-network"
    if kind == "model" and action in ("deploy", "delete") and not _from_corp(ip):
        return "model-admin-from-corp-only"
    if kind == "api_key" and action in ("create", "revoke") and not in_nets(ip, CORPORATE):
        return "key-admin-from-corp-only"
    if kind == "document" and attr.get("classification") == "secret" and not _from_corp(ip):
        return "secret-documents-from-corp-only"
    if kind == "conversation" and action == "export":
        if ctx["country"] in EXPORT_BLOCKED:
            return "export-blocked-country"
        if ip != "" and country(ip) in EXPORT_BLOCKED:
            return "export-blocked-ip-country"
    if action in ("delete", "revoke", "deploy") and not _recent_mfa(ctx, now):
        return "destructive-needs-recent-mfa"
    return None


def _document(p: dict, roles: set, res: dict, action: str, ctx: dict) -> tuple[str, str]:
    a = res["attr"]
    cls = a.get("classification")
    if cls not in CLASSIFICATIONS:
        return "deny", "unclassified-document"
    if action == "share" and cls == "secret":
        return "deny", "secret-never-shared"
    if "support" in roles and cls not in SUPPORT_VISIBLE:
        return "deny", "support-classification-limit"
    if a.get("owner", None) == p["id"] and "owner" in a:
        return "allow", "owner-full-access"
    if action == "read":
        if p["id"] in a.get("shared_with", ()):
            return "allow", "shared-read"
        kbs = p["attr"].get("kbs")
        member = roles & {"user", "developer"} and kbs is not None and "kb" in a
        if member and a["kb"] in kbs and cls in ("public", "internal"):
            return "allow", "kb-member-read"
    if action in ("read", "delete") and "admin" in roles and cls != "secret":
        return "allow", "tenant-admin-govern"
    if action == "read" and "support" in roles and _ticket_open(ctx, res):
        return "allow", "support-read-with-ticket"
    return "deny", ""


def _conversation(p: dict, roles: set, res: dict, action: str, ctx: dict) -> tuple[str, str]:
    a = res["attr"]
    if action == "append" and a.get("archived") is True:
        return "deny", "archived-is-read-only"
    if "owner" in a and a["owner"] == p["id"]:
        return "allow", "owner-full-access"
    if action in ("read", "export") and "compliance" in roles:
        return "allow", "compliance-read-export"
    if action == "read" and "support" in roles and _ticket_open(ctx, res):
        return "allow", "support-read-with-ticket"
    return "deny", ""


_MEMBERS = {"user", "developer", "admin", "service"}


def _model(p: dict, roles: set, res: dict, action: str, ctx: dict) -> tuple[str, str]:
    a = res["attr"]
    if action in ("invoke", "fine_tune", "deploy") and a.get("status") == "retired":
        return "deny", "retired-model"
    q = p["attr"].get("quota_remaining")
    if action in ("invoke", "fine_tune") and q is not None and q <= 0:
        return "deny", "quota-exhausted"
    if action == "invoke" and roles & _MEMBERS:
        if a.get("status") == "deprecated":
            return "allow", "deprecated-invoke-with-warning"
        return "allow", "member-invoke"
    if action == "fine_tune" and roles & {"developer", "admin"} and a.get("fine_tunable") is True:
        return "allow", "developer-fine-tune"
    if action in ("deploy", "delete") and "admin" in roles:
        return "allow", "admin-deploy-delete"
    if action == "delete" and "owner" in a and a["owner"] == p["id"]:
        return "allow", "owner-deletes-own-fine-tune"
    return "deny", ""


def _knowledge_base(p: dict, roles: set, res: dict, action: str, ctx: dict) -> tuple[str, str]:
    a = res["attr"]
    if action in ("write", "delete") and a.get("legal_hold") is True:
        return "deny", "legal-hold-freezes"
    if "owner" in a and a["owner"] == p["id"]:
        return "allow", "owner-full-access"
    member_roles = roles & {"user", "developer"}
    if action in ("read", "write") and member_roles and p["id"] in a.get("editors", ()):
        return "allow", "editor-read-write"
    readable = p["id"] in a.get("members", ()) or a.get("visibility") == "tenant"
    if action == "read" and member_roles and readable:
        return "allow", "member-read"
    if "admin" in roles:
        return "allow", "tenant-admin-manage"
    return "deny", ""


def _agent_tool(p: dict, roles: set, res: dict, action: str, ctx: dict) -> tuple[str, str]:
    a = res["attr"]
    actor = p["actor"]
    if a.get("enabled") is False:
        return "deny", "tool-disabled"
    if (
        actor is not None
        and a.get("risk") == "high"
        and ctx["attr"].get("human_approval") is not True
    ):
        return "deny", "high-risk-needs-human-approval"
    if roles & {"user", "developer", "admin"}:
        if actor is not None and actor["type"] == "ai_agent":
            return "allow", "agent-call-audited"
        return "allow", "member-call"
    return "deny", ""


def _api_key(p: dict, roles: set, res: dict, action: str, ctx: dict) -> tuple[str, str]:
    a = res["attr"]
    if action == "create" and "scopes" in a and not set(a["scopes"]) <= set(p["scopes"]):
        return "deny", "no-scope-escalation"
    if "owner" in a and a["owner"] == p["id"]:
        return "allow", "owner-manages-own-keys"
    if "admin" in roles:
        return "allow", "admin-manages-tenant-keys"
    return "deny", ""


def _catalog(p: dict, roles: set, res: dict, action: str, ctx: dict) -> tuple[str, str]:
    a = res["attr"]
    if (
        action == "read"
        and "restricted_countries" in a
        and ctx["country"] in a["restricted_countries"]
    ):
        return "deny", "region-restricted"
    if a.get("published") is True:
        return "allow", "published-entries"
    if "catalog_editor" in roles and _from_corp(ctx["ip"]):
        return "allow", "staff-preview-unpublished"
    return "deny", ""


KINDS = {
    "document": _document,
    "conversation": _conversation,
    "model": _model,
    "knowledge_base": _knowledge_base,
    "agent_tool": _agent_tool,
    "api_key": _api_key,
    "catalog_model": _catalog,
}
CROSS_TENANT_READ = {"document", "conversation"}


def decide(p: dict, res: dict, action: str, ctx: dict, now: datetime) -> tuple[str, str]:
    """(effect, deciding rule) for one resource x action; the same contract as the engine."""
    kind = res["kind"]
    rules = KINDS.get(kind)
    if rules is None:
        return "deny", ""
    needed = SCOPES[kind].get(action)
    if needed is None:
        return "deny", ""
    roles = set(p["roles"])
    if kind != "catalog_model":
        if not p["tenant"] or not res["tenant"]:
            return "deny", ""
        if p["tenant"] != res["tenant"] and not (
            kind in CROSS_TENANT_READ
            and action == "read"
            and "support" in roles
            and _ticket_open(ctx, res)
        ):
            return "deny", ""
    if not needed <= set(p["scopes"]):
        return "deny", ""
    if p["actor"] is not None and not needed <= set(p["actor"]["scopes"]):
        return "deny", ""
    try:
        guard = _guards(p, res, action, ctx, now)
        if guard is not None:
            return "deny", guard
        return rules(p, roles, res, action, ctx)
    except (_Error, TypeError, KeyError):
        return "deny", ""


def decide_request(raw: dict, now: datetime) -> list[dict[str, str]]:
    """Every decision of a JSON request, resources in order: [{action: effect}, ...]."""
    p = {
        "id": raw["principal"]["id"],
        "tenant": raw["principal"].get("tenant", ""),
        "roles": raw["principal"].get("roles", []),
        "scopes": raw["principal"].get("scopes", []),
        "attr": raw["principal"].get("attr", {}),
        "actor": raw["principal"].get("actor"),
    }
    if p["actor"] is not None:
        p["actor"] = {"type": "", "scopes": [], **p["actor"]}
    c = raw.get("context", {})
    ctx = {"ip": c.get("ip", ""), "country": c.get("country", ""), "attr": c.get("attr", {})}
    if not ctx["country"] and ctx["ip"]:
        ctx["country"] = country(ctx["ip"])
    out = []
    for r in raw["resources"]:
        res = {
            "kind": r["kind"],
            "id": r["id"],
            "tenant": r.get("tenant", ""),
            "attr": r.get("attr", {}),
        }
        out.append({a: decide(p, res, a, ctx, now)[0] for a in r["actions"]})
    return out

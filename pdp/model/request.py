"""The decision request: validated once at the edge, then plain dicts all the way into CEL.

`parse_check_request` turns a JSON-shaped mapping (from `pdp check`, a test suite, or the gRPC
conversion) into a `CheckRequest`. Every problem raises `RequestError` naming the field path;
nothing here ever evaluates attribute values (a string that looks like CEL stays a string).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import re
import socket
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pdp.errors import LimitExceeded, RequestError
from pdp.model.countries import COUNTRY_CODES


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits; each protects the server from one kind of abuse."""

    # Bounds the work of one call: resources x actions decisions.
    max_checks: int = 1000
    # Bounds the number of resources in one batch.
    max_resources: int = 500
    # Deeply nested attributes are a recursion/CPU bomb for converters and CEL.
    max_attr_depth: int = 16
    # Total number of attribute values (scalars + containers) across the request.
    max_attr_values: int = 20_000
    # One attribute string longer than this is almost surely an attack or a mistake.
    max_string_length: int = 64 * 1024
    # Ids, kinds, actions, roles, scopes, tenants.
    max_id_length: int = 512
    # Whether a request may fix `context.time`, the instant `now` stands for. A caller who
    # picks the time picks the outcome of every time-based rule (a step-up done "5 minutes
    # ago"), so `pdp serve` refuses it unless started with `--allow-client-time` (for tests);
    # the in-process API, `pdp check` and policy test suites fix it on purpose.
    allow_client_time: bool = True


DEFAULT_LIMITS = Limits()

# Attribute keys longer than this are refused. Keys are names (`department`, a resource id used
# as a map key); a multi-megabyte key is only a way to make every converter, log line and CEL
# map lookup hash and copy megabytes while the value budget counts it as one entry.
# A fixed rule of the format rather than an operator's limit: a malformed request
# (INVALID_ARGUMENT), on every path.
MAX_KEY_LENGTH = 1024

# Numbers. JSON has one number type and a protobuf Struct carries every number as a double, so
# which CEL type a number gets can only depend on its value, never on how it was spelled. A
# number is read as a double (all a Struct can carry); then an integral value within +-2**53
# (where doubles are exact) is a CEL int, anything else a double. `number` applies this on
# every path (JSON, Struct, YAML test cases): `1`, `1.0` and `1e0` are the same int
# everywhere, and 2**53 + 1, which no double holds, is the int 2**53 everywhere.
MAX_EXACT_INT = 2**53


def number(v: int | float) -> int | float:
    """The CEL value of a finite JSON number (see above); `ValueError` when it is not finite."""
    if v.__class__ is int:
        if -MAX_EXACT_INT <= v <= MAX_EXACT_INT:
            return v
        try:
            v = float(v)
        except OverflowError:
            raise ValueError("must be a finite number") from None
    if math.isnan(v) or math.isinf(v):
        raise ValueError("must be a finite number")
    if v.is_integer() and -MAX_EXACT_INT <= v <= MAX_EXACT_INT:
        return int(v)
    return float(v)


def _valid_text(s: str) -> bool:
    """False for a string no UTF-8 encodes (a lone surrogate, JSON `"\\ud800"`): the wire
    cannot carry it, so a request holding one is refused in process too."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Unicode category Cc: the C0 controls, DEL and the C1 controls (`unicodedata.category` is
# "Cc" for exactly these code points).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def id_problem(text: str) -> str:
    """Why `text` cannot be an identifier, or "" when it can: the one check every adapter
    shares for principal, actor and resource ids, kinds, tenants, actions, roles and scopes.

    pdp compares ids exactly, but what sits in front of it may not: a C string ends at a NUL,
    a form or a database trims spaces. A deny on `principal.id == "mallory"` would miss
    `"mallory\\u0000"` or `"mallory "` that the application upstream reads as mallory, and a
    newline in an id forges lines in a text log. So an id holding a control character, or
    beginning or ending with whitespace or an invisible format character (`"mallory\\ufeff"`
    is `mallory` to JavaScript's `trim()`), is refused rather than decided; inner spaces and
    non-ASCII letters are ids like any other.
    """
    if not text:
        return ""
    if not text.isprintable():  # most ids are printable: one C loop settles them
        m = _CONTROL.search(text)
        if m is not None:
            return f"must not contain a control character (U+{ord(m.group()):04X})"
        # An invisible format character (Cf) at an end is trimmed too: JavaScript's `trim()`
        # removes U+FEFF, sanitizers strip U+200B and the like. Inside an id they stay (a
        # Persian word's U+200C, an emoji sequence's U+200D).
        for end in (text[0], text[-1]):
            if unicodedata.category(end) == "Cf":
                return f"must not begin or end with an invisible character (U+{ord(end):04X})"
    if text[0].isspace() or text[-1].isspace():  # what `str.strip()` would remove
        return "must not begin or end with whitespace"
    return ""


_COUNTRY = re.compile("[A-Za-z]{2}")


def country_problem(text: str) -> str:
    """Why `text` cannot be `context.country`, or "" when it can: empty (unknown; resolved from
    the bundle's geo table when there is one) or two ASCII letters, the shape of an ISO 3166-1
    alpha-2 code. The value is upper-cased and compared in policies (`context.country in
    C.blocked_countries`): `"CU "` or `"CU\\u0000"` (read as CU by whatever trims or stops at
    a NUL) would pass a rule that `"CU"` does not, and `"\\u0131r"` upper-cases to `"IR"` from
    a string that no code is. A caller's own spelling of a country is not one. Of the two-letter
    strings, only assigned and user-assigned codes are (`pdp.model.countries`): `UK` is no
    code, and a rule on `GB` does not match it."""
    if not text:
        return ""
    if _COUNTRY.fullmatch(text) is None:
        return "must be empty or a two-letter country code (ISO 3166-1 alpha-2)"
    if text.upper() not in COUNTRY_CODES:
        return (
            f"`{text}` is not an ISO 3166-1 alpha-2 code assigned to a country, "
            "nor a user-assigned one (AA, QM-QZ, XA-XZ, ZZ)"
        )
    return ""


def context_country(text: str) -> str:
    """`context.country` as policies see it: "" or the upper-cased code; RequestError else."""
    problem = country_problem(text)
    if problem:
        raise RequestError("context.country", problem)
    return text.upper()


def check_request_id(v: Any, limits: Limits, path: str = "request_id") -> str:
    """A request id as every protocol takes it (optional; `""` when absent): a string within
    the id length limit that `id_problem` accepts. It is echoed in replies and headers and
    logged with the decision, so a newline in it would forge a log line and a control
    character a header. `path` names the field in the `RequestError` (`X-Request-ID`)."""
    return _id(v, path, limits, required=False)


def is_ip_address(text: str) -> bool:
    """Whether `text` is an IP address `context.ip` accepts (see `canonical_ip`)."""
    return canonical_ip(text) is not None


def canonical_ip(text: str) -> str | None:
    """The one spelling of the IP address `text`, or None when it is none `context.ip` takes.

    `context.ip` keys rate-limit buckets and conditions may compare it as a string, so each
    address must have one spelling: `2001:DB8::1`, `2001:0db8::1` and `::ffff:10.0.0.1` would
    otherwise be fresh buckets for one client, and a string fence one more way around. IPv6 is
    compressed and lower-cased; an IPv4-mapped address is its IPv4 address, as the CEL network
    functions read it; an address with a zone (`fe80::1%eth0`: a name local to one host, whose
    spellings never run out) is refused, as CEL's `ip()` refuses it.

    Client addresses vary call to call, and parsing one with `ipaddress` cost more than the
    rest of a small request's conversion. A dotted quad, the common case, is checked by the C
    library's `inet_pton`, which accepts exactly the strings `ipaddress` does (four decimal
    octets of at most 255, no leading zeros: tests/security/test_ip_text.py compares them),
    and those are already canonical; anything else is read by `ipaddress`.
    """
    try:
        socket.inet_pton(socket.AF_INET, text)
        return text
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return _canonical_ip(text)


@functools.lru_cache(maxsize=4096)
def _canonical_ip(text: str) -> str | None:
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def context_ip(text: str) -> str:
    """`context.ip` as policies and rate limits see it: "" or `canonical_ip`; RequestError else."""
    if not text:
        return ""
    ip = canonical_ip(text)
    if ip is None:
        zone = " (a zone is not allowed)" if "%" in text else ""
        raise RequestError("context.ip", f"`{text[:64]}` is not an IP address{zone}")
    return ip


# Why `context.time` is refused (every adapter reports the same words).
CLIENT_TIME_REFUSED = (
    "is not accepted: the server's clock decides (`--allow-client-time` is for tests)"
)


@dataclass(frozen=True, slots=True)
class ResourceRequest:
    """One resource and the actions asked about it. `resource` is the dict CEL sees."""

    resource: dict[str, Any]  # {kind, id, tenant, attr}
    actions: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.resource["kind"]

    @property
    def id(self) -> str:
        return self.resource["id"]

    @property
    def tenant(self) -> str:
        return self.resource["tenant"]


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """A validated decision request. The dicts are exactly what CEL sees."""

    principal: dict[str, Any]  # {id, tenant, roles, scopes, attr, actor}
    resources: tuple[ResourceRequest, ...]
    context: dict[str, Any] = field(default_factory=dict)  # {ip, country, time, attr}
    request_id: str = ""
    explain: bool = False
    # Derived once so the engine's scope/role checks are set lookups.
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    actor_scopes: frozenset[str] | None = None  # None when there is no actor
    time: datetime | None = None  # context.time parsed; None = use the clock


def _str(
    v: Any, path: str, limits: Limits, *, required: bool = True, empty_ok: bool = False
) -> str:
    if v is None:
        if required:
            raise RequestError(path, "is required")
        return ""
    if not isinstance(v, str):
        raise RequestError(path, f"must be a string, got {_type_name(v)}")
    if not v and not empty_ok and required:
        raise RequestError(path, "must not be empty")
    if len(v) > limits.max_id_length:
        raise LimitExceeded(path, f"is longer than {limits.max_id_length} characters")
    if not _valid_text(v):
        raise RequestError(path, "must be valid unicode")
    return v


def _id(v: Any, path: str, limits: Limits, *, required: bool = True) -> str:
    """`_str` for an identifier (see `id_problem`)."""
    s = _str(v, path, limits, required=required)
    problem = id_problem(s)
    if problem:
        raise RequestError(path, problem)
    return s


def _str_list(v: Any, path: str, limits: Limits) -> list[str]:
    """A list of identifiers (roles, scopes, actions)."""
    if v is None:
        return []
    if not isinstance(v, list | tuple):
        raise RequestError(path, f"must be a list of strings, got {_type_name(v)}")
    out = []
    for i, item in enumerate(v):
        out.append(_id(item, f"{path}[{i}]", limits))
    return out


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "object"
    if isinstance(v, list | tuple):
        return "list"
    return type(v).__name__


class _Budget:
    __slots__ = ("left",)

    def __init__(self, n: int) -> None:
        self.left = n


def _attrs(v: Any, path: str, limits: Limits, budget: _Budget) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise RequestError(path, f"must be an object, got {_type_name(v)}")
    return _json_value(v, path, limits, budget, 1)


def _json_value(v: Any, path: str, limits: Limits, budget: _Budget, depth: int) -> Any:
    """Check an attribute value is JSON-shaped and within limits; returns plain dicts/lists."""
    budget.left -= 1
    if budget.left < 0:
        raise LimitExceeded(
            path, f"request has more than {limits.max_attr_values} attribute values"
        )
    if depth > limits.max_attr_depth:
        raise LimitExceeded(path, f"attributes nested deeper than {limits.max_attr_depth} levels")
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        try:
            return number(v)
        except ValueError as e:
            raise RequestError(path, str(e)) from None
    if isinstance(v, str):
        if len(v) > limits.max_string_length:
            raise LimitExceeded(path, f"string longer than {limits.max_string_length} characters")
        if not _valid_text(v):
            raise RequestError(path, "must be valid unicode")
        return v
    if isinstance(v, Mapping):
        out = {}
        for k, item in v.items():
            if not isinstance(k, str):
                raise RequestError(path, f"object keys must be strings, got {_type_name(k)}")
            if len(k) > MAX_KEY_LENGTH:
                raise RequestError(path, f"has a key longer than {MAX_KEY_LENGTH} characters")
            if not _valid_text(k):
                raise RequestError(path, "object keys must be valid unicode")
            out[k] = _json_value(item, f"{path}.{k}", limits, budget, depth + 1)
        return out
    if isinstance(v, list | tuple):
        return [
            _json_value(item, f"{path}[{i}]", limits, budget, depth + 1) for i, item in enumerate(v)
        ]
    raise RequestError(path, f"unsupported value of type {_type_name(v)}")


def parse_time(v: Any, path: str) -> datetime:
    """RFC 3339 timestamp string (or an aware datetime) to an aware UTC datetime."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise RequestError(path, "timestamp must carry a time zone")
        return _to_utc(v, v, path)
    if not isinstance(v, str):
        raise RequestError(path, f"must be an RFC 3339 timestamp string, got {_type_name(v)}")
    s = v.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise RequestError(path, f"`{v}` is not an RFC 3339 timestamp") from None
    if t.tzinfo is None:
        raise RequestError(path, f"`{v}` has no time zone offset")
    return _to_utc(t, v, path)


def _to_utc(t: datetime, raw: Any, path: str) -> datetime:
    try:
        return t.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-01:00 is a valid string whose UTC instant is past year 9999.
        raise RequestError(path, f"`{raw}` is out of the supported time range") from None


def _object(v: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise RequestError(path, f"must be an object, got {_type_name(v)}")
    return v


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    for k in obj:
        if k not in allowed:
            raise RequestError(f"{path}.{k}" if path else k, "unknown field")


_PRINCIPAL_KEYS = frozenset({"id", "tenant", "roles", "scopes", "attr", "actor"})
_ACTOR_KEYS = frozenset({"id", "type", "scopes", "attr"})
_RESOURCE_KEYS = frozenset({"kind", "id", "tenant", "attr", "actions"})
_CONTEXT_KEYS = frozenset({"ip", "country", "time", "attr"})
_REQUEST_KEYS = frozenset(
    {"request_id", "requestId", "principal", "resources", "context", "explain"}
)


def parse_principal(v: Any, limits: Limits, budget: _Budget, path: str = "principal") -> dict:
    p = _object(v, path)
    _check_keys(p, _PRINCIPAL_KEYS, path)
    actor = None
    if p.get("actor") is not None:
        a = _object(p["actor"], f"{path}.actor")
        _check_keys(a, _ACTOR_KEYS, f"{path}.actor")
        actor = {
            "id": _id(a.get("id"), f"{path}.actor.id", limits),
            "type": _id(a.get("type"), f"{path}.actor.type", limits, required=False),
            "scopes": _str_list(a.get("scopes"), f"{path}.actor.scopes", limits),
            "attr": _attrs(a.get("attr"), f"{path}.actor.attr", limits, budget),
        }
    return {
        "id": _id(p.get("id"), f"{path}.id", limits),
        # A missing tenant is not an error here: the engine denies it (`missing_tenant`)
        # for every kind that a tenant owns, and global kinds do not need it.
        "tenant": _id(p.get("tenant"), f"{path}.tenant", limits, required=False),
        "roles": _str_list(p.get("roles"), f"{path}.roles", limits),
        "scopes": _str_list(p.get("scopes"), f"{path}.scopes", limits),
        "attr": _attrs(p.get("attr"), f"{path}.attr", limits, budget),
        "actor": actor,
    }


def parse_resource(v: Any, limits: Limits, budget: _Budget, path: str) -> ResourceRequest:
    r = _object(v, path)
    _check_keys(r, _RESOURCE_KEYS, path)
    actions = _str_list(r.get("actions"), f"{path}.actions", limits)
    if not actions:
        raise RequestError(f"{path}.actions", "must list at least one action")
    resource = {
        "kind": _id(r.get("kind"), f"{path}.kind", limits),
        "id": _id(r.get("id"), f"{path}.id", limits),
        "tenant": _id(r.get("tenant"), f"{path}.tenant", limits, required=False),
        "attr": _attrs(r.get("attr"), f"{path}.attr", limits, budget),
    }
    return ResourceRequest(resource=resource, actions=tuple(dict.fromkeys(actions)))


def parse_context(
    v: Any, limits: Limits, budget: _Budget
) -> tuple[dict[str, Any], datetime | None]:
    if v is None:
        return {"ip": "", "country": "", "attr": {}}, None
    c = _object(v, "context")
    _check_keys(c, _CONTEXT_KEYS, "context")
    ip = context_ip(_str(c.get("ip"), "context.ip", limits, required=False))
    country = context_country(_str(c.get("country"), "context.country", limits, required=False))
    time = None
    if c.get("time") not in (None, ""):
        if not limits.allow_client_time:
            raise RequestError("context.time", CLIENT_TIME_REFUSED)
        time = parse_time(c["time"], "context.time")
    ctx: dict[str, Any] = {
        "ip": ip,
        "country": country,
        "attr": _attrs(c.get("attr"), "context.attr", limits, budget),
    }
    if time is not None:
        ctx["time"] = time
    return ctx, time


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RequestError("request", f"duplicate key `{k[:64]}` in a JSON object")
        out[k] = v
    return out


def load_json_request(text: str | bytes) -> Any:
    """A request's JSON text as Python values, for `parse_check_request`.

    A duplicate key is refused: parsers disagree on which copy wins (Python's json takes the
    last, protobuf's JSON parser refuses), so a proxy checking one copy and pdp deciding the
    other is a way to be asked one question and answer another. Raises `RequestError`.
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as e:  # JSONDecodeError, and invalid UTF-8 in bytes
        raise RequestError("request", f"is not valid JSON: {e}") from None
    except RecursionError:
        raise RequestError("request", "JSON nested too deeply") from None


def parse_check_request(obj: Any, limits: Limits = DEFAULT_LIMITS) -> CheckRequest:
    """Validate a JSON-shaped request; raise `RequestError` naming the first bad field."""
    req = _object(obj, "request")
    _check_keys(req, _REQUEST_KEYS, "")
    budget = _Budget(limits.max_attr_values)
    if "principal" not in req:
        raise RequestError("principal", "is required")
    principal = parse_principal(req["principal"], limits, budget)
    raw_resources = req.get("resources")
    if not isinstance(raw_resources, list | tuple) or not raw_resources:
        raise RequestError("resources", "must be a non-empty list")
    if len(raw_resources) > limits.max_resources:
        raise LimitExceeded("resources", f"more than {limits.max_resources} resources")
    resources = tuple(
        parse_resource(r, limits, budget, f"resources[{i}]") for i, r in enumerate(raw_resources)
    )
    checks = sum(len(r.actions) for r in resources)
    if checks > limits.max_checks:
        raise LimitExceeded(
            "resources", f"{checks} resource x action checks exceed {limits.max_checks}"
        )
    context, time = parse_context(req.get("context"), limits, budget)
    request_id = req.get("request_id", req.get("requestId"))
    explain = req.get("explain")
    if explain is None:  # null is absent, as for every other field (and in protobuf's JSON)
        explain = False
    elif not isinstance(explain, bool):
        raise RequestError("explain", "must be a boolean")
    return make_check_request(
        principal,
        resources,
        context,
        request_id=check_request_id(request_id, limits),
        explain=explain,
        time=time,
    )


def make_check_request(
    principal: dict[str, Any],
    resources: Sequence[ResourceRequest],
    context: dict[str, Any],
    *,
    request_id: str = "",
    explain: bool = False,
    time: datetime | None = None,
) -> CheckRequest:
    """Assemble a request from already-validated parts (the gRPC conversion uses this)."""
    actor = principal.get("actor")
    return CheckRequest(
        principal=principal,
        resources=tuple(resources),
        context=context,
        request_id=request_id,
        explain=explain,
        roles=frozenset(principal["roles"]),
        scopes=frozenset(principal["scopes"]),
        actor_scopes=frozenset(actor["scopes"]) if actor else None,
        time=time,
    )

"""The gateway's route mapping (`mapping.yaml`, `kind: RouteMapping`): HTTP → decision request.

The loader keeps the document as a plain dict (`PolicySource.route_mapping`); this module
validates it — reporting every problem at once, as the policy loader does — and compiles the
route templates into a segment trie, so a lookup costs one dict probe per path segment
whatever the number of routes. Literal segments win over parameters, so
`/v1/kb/search` beats `/v1/kb/{kb}`. See docs/GATEWAY.md for the format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pdp.errors import PolicyError, PolicyErrors
from pdp.gateway.paths import PathError, canonicalize
from pdp.gateway.templates import Template, TemplateError, parse_claim_path, parse_value

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}$")
_HEADER = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How the principal's credential is found and verified."""

    # `jwt`: pdp verifies the token. `envoy_jwt_authn`: trust the claims Envoy's jwt_authn
    # filter verified and put in its dynamic metadata.
    source: str = "jwt"
    header: str = "authorization"
    scheme: str = "Bearer"  # "" = the whole header value is the token
    issuer: tuple[str, ...] = ()  # accepted `iss` values; empty = not checked
    audience: tuple[str, ...] = ()  # accepted `aud` values; empty = not checked
    leeway: float = 30.0  # seconds of clock skew tolerated on exp/nbf/iat
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    jwks: str = "jwks"  # the bundle data file (data/jwks.json) holding the keys
    require: tuple[str, ...] = ("exp",)
    metadata_namespace: str = "envoy.filters.http.jwt_authn"
    metadata_key: str = "jwt_payload"


@dataclass(frozen=True, slots=True)
class ClaimsConfig:
    id: str = "sub"
    tenant: str = "tenant"
    roles: str = "roles"
    scopes: tuple[str, ...] = ("scope", "scp")
    attr: Mapping[str, str] = field(default_factory=dict)  # principal.attr name -> claim path
    actor: str = ""  # claim holding the RFC 8693 `act` object, e.g. "act"; "" = no actor


@dataclass(frozen=True, slots=True)
class ResourceTemplate:
    kind: str
    id: Template | Any
    tenant: Template | Any
    attr: Mapping[str, Template | Any]


@dataclass(frozen=True, slots=True)
class Route:
    index: int
    path: str
    methods: Mapping[str, str]  # METHOD (or "*") -> action ("" for public routes)
    params: tuple[tuple[int, str], ...]  # (segment index, name)
    rest: str  # name of a trailing `{name*}` parameter, "" when none
    rest_at: int  # the segment index where the `{name*}` parameter starts
    resource: ResourceTemplate | None  # None for public routes
    context_attr: Mapping[str, Template | Any] = field(default_factory=dict)
    public: bool = False

    def action_for(self, method: str) -> str | None:
        return self.methods.get(method, self.methods.get("*"))


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    action: str
    params: Mapping[str, str]


class _Node:
    __slots__ = ("literal", "param", "rest", "routes")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.rest: list[Route] = []
        self.routes: list[Route] = []


@dataclass(frozen=True, slots=True)
class RouteMapping:
    """A validated, compiled mapping; immutable and shared by every request."""

    id: str
    file: str
    routes: tuple[Route, ...]
    auth: AuthConfig
    claims: ClaimsConfig
    unmapped_allow: bool = False
    trusted_hops: int = 0
    # The upstream honours `_method` in form or JSON bodies (Rails, Laravel, Symfony): such a
    # request whose body pdp did not get in full is refused (request.body_method_override).
    # `spec.bodyMethodOverride`, or its older name `formMethodOverride`.
    form_method_override: bool = False
    context_attr: Mapping[str, Template | Any] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()
    add_headers: Mapping[str, Template | Any] = field(default_factory=dict)
    obligation_headers: Mapping[str, str] = field(default_factory=dict)
    tests: tuple[dict[str, Any], ...] = ()
    _root: _Node = field(default_factory=_Node, repr=False, compare=False)

    def match(self, method: str, segments: list[str]) -> RouteMatch | None:
        """The first route (literals before parameters, then file order) for method + path."""
        return _walk(self._root, segments, 0, method.upper())

    def variant(self, method: str, segments: list[str]) -> RouteMatch | None:
        """A route an upstream may take this unmatched request for: its literal segments
        equal but for case (ASP.NET, IIS, case-insensitive routers), or a `HEAD` where the
        route maps `GET` (Flask, Express and Go run the GET handler)."""
        folded = [s.casefold() for s in segments]
        upper = method.upper()
        for m in (upper, "GET") if upper == "HEAD" else (upper,):
            found = _walk(self._root, folded, 0, m, fold=True)
            if found is not None:
                return found
        return None


def split_path(raw: str) -> tuple[list[str], str] | None:
    """Decoded segments and query of a request target; None when `paths.canonicalize` refuses it."""
    try:
        canonical = canonicalize(raw)
    except PathError:
        return None
    return list(canonical.segments), canonical.query


def _walk(
    node: _Node, segs: list[str], i: int, method: str, fold: bool = False
) -> RouteMatch | None:
    """The first route under `node` for `segs[i:]`; with `fold`, literal segments compare
    case-folded (`segs` are folded already)."""
    if i == len(segs):
        for route in node.routes:
            found = _found(route, segs, method)
            if found is not None:
                return found
    else:
        if fold:
            children = [c for literal, c in node.literal.items() if literal.casefold() == segs[i]]
        else:
            child = node.literal.get(segs[i])
            children = [child] if child is not None else []
        if node.param is not None:
            children.append(node.param)
        for child in children:
            found = _walk(child, segs, i + 1, method, fold)
            if found is not None:
                return found
    for route in node.rest:
        found = _found(route, segs, method)
        if found is not None:
            return found
    return None


def _found(route: Route, segs: list[str], method: str) -> RouteMatch | None:
    action = route.action_for(method)
    if action is None:
        return None
    params = {name: segs[i] for i, name in route.params}
    if route.rest:
        params[route.rest] = "/".join(segs[route.rest_at :])
    return RouteMatch(route=route, action=action, params=params)


# -- loading -------------------------------------------------------------------------------------


class _Errors:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[PolicyError] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(PolicyError(f"{self.file}: {where}: {message}"))


def _obj(v: Any, where: str, errs: _Errors, keys: tuple[str, ...]) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        errs.add(where, "must be a mapping")
        return {}
    for k in v:
        if k not in keys:
            errs.add(where, f"unknown key `{k}` (expected one of {', '.join(keys)})")
    return v


def _strs(v: Any, where: str, errs: _Errors) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        errs.add(where, "must be a string or a list of non-empty strings")
        return ()
    return tuple(v)


def _str(v: Any, where: str, errs: _Errors, default: str = "") -> str:
    if v is None:
        return default
    if not isinstance(v, str):
        errs.add(where, "must be a string")
        return default
    return v


_SPEC_KEYS = (
    "unmapped", "public", "authentication", "claims", "context", "headers", "obligations",
    "routes", "tests", "formMethodOverride", "bodyMethodOverride",
)  # fmt: skip
_AUTH_KEYS = (
    "source", "header", "scheme", "issuer", "audience", "leeway", "algorithms", "jwks", "require",
    "metadataNamespace", "metadataKey",
)  # fmt: skip
_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


def _body_method_override(spec: Mapping[str, Any], errs: _Errors) -> bool:
    """`bodyMethodOverride`, or `formMethodOverride` (its name before JSON bodies counted too,
    kept so existing mappings load unchanged); both given must agree."""
    values = {}
    for key in ("bodyMethodOverride", "formMethodOverride"):
        if key in spec:
            if isinstance(spec[key], bool):
                values[key] = spec[key]
            else:
                errs.add(f"spec.{key}", "must be `true` or `false`")
    if len(set(values.values())) > 1:
        errs.add(
            "spec.bodyMethodOverride",
            "contradicts `formMethodOverride` (its older name): give one of them",
        )
        return False
    return any(values.values())


def load_route_mapping(doc: Mapping[str, Any], file: str = "mapping.yaml") -> RouteMapping:
    """Validate and compile a `RouteMapping` document; raise `PolicyErrors` with every problem."""
    errs = _Errors(file)
    top = _obj(dict(doc), "document", errs, ("apiVersion", "kind", "metadata", "spec"))
    if top.get("kind", "RouteMapping") != "RouteMapping":
        errs.add("kind", "must be `RouteMapping`")
    meta = _obj(top.get("metadata"), "metadata", errs, ("id", "description"))
    spec = _obj(top.get("spec"), "spec", errs, _SPEC_KEYS)
    unmapped = spec.get("unmapped", "deny")
    if unmapped not in ("deny", "allow"):
        errs.add("spec.unmapped", "must be `deny` or `allow`")
    form_override = _body_method_override(spec, errs)
    auth = _auth(spec.get("authentication"), errs)
    claims = _claims(spec.get("claims"), errs)
    ctx = _obj(spec.get("context"), "spec.context", errs, ("trustedHops", "attr"))
    hops = ctx.get("trustedHops", 0)
    if not isinstance(hops, int) or isinstance(hops, bool) or not 0 <= hops <= 16:
        errs.add("spec.context.trustedHops", "must be an integer from 0 to 16")
        hops = 0
    context_attr = _values(ctx.get("attr"), "spec.context.attr", errs, None)
    hdr = _obj(spec.get("headers"), "spec.headers", errs, ("remove", "add"))
    remove = tuple(h.lower() for h in _strs(hdr.get("remove"), "spec.headers.remove", errs))
    add = _values(hdr.get("add"), "spec.headers.add", errs, None)
    for name in (*remove, *add):
        if not _HEADER.match(name.lower()):
            errs.add("spec.headers", f"`{name}` is not a valid header name")
    obligations: dict[str, str] = {}
    raw_obl = spec.get("obligations") or {}
    if not isinstance(raw_obl, dict):
        errs.add("spec.obligations", "must map obligation keys to header names")
    else:
        for key, header in raw_obl.items():
            if not isinstance(header, str) or not _HEADER.match(header.lower()):
                errs.add(f"spec.obligations.{key}", "must be a header name")
            else:
                obligations[key] = header.lower()

    root = _Node()
    routes: list[Route] = []
    for i, raw in enumerate(_list(spec.get("public"), "spec.public", errs)):
        route = _route(raw, f"spec.public[{i}]", len(routes), errs, public=True)
        if route is not None:
            routes.append(route)
    for i, raw in enumerate(_list(spec.get("routes"), "spec.routes", errs)):
        route = _route(raw, f"spec.routes[{i}]", len(routes), errs, public=False)
        if route is not None:
            routes.append(route)
    for route in routes:
        _insert(root, route)
    tests = _list(spec.get("tests"), "spec.tests", errs)
    if errs.items:
        raise PolicyErrors(errs.items)
    return RouteMapping(
        id=meta.get("id") if isinstance(meta.get("id"), str) else "gateway",
        file=file,
        routes=tuple(routes),
        auth=auth,
        claims=claims,
        unmapped_allow=unmapped == "allow",
        trusted_hops=hops,
        form_method_override=form_override,
        context_attr=context_attr,
        remove_headers=remove,
        add_headers=add,
        obligation_headers=obligations,
        tests=tuple(t for t in tests if isinstance(t, dict)),
        _root=root,
    )


def _list(v: Any, where: str, errs: _Errors) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        errs.add(where, "must be a list")
        return []
    return v


def _values(
    v: Any, where: str, errs: _Errors, params: frozenset[str] | None
) -> dict[str, Template | Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        errs.add(where, "must be a mapping")
        return {}
    out = {}
    for key, value in v.items():
        try:
            out[key] = parse_value(value, params)
        except TemplateError as e:
            errs.add(f"{where}.{key}", str(e))
    return out


def _auth(v: Any, errs: _Errors) -> AuthConfig:
    a = _obj(v, "spec.authentication", errs, _AUTH_KEYS)
    d = AuthConfig()
    source = _str(a.get("source"), "spec.authentication.source", errs, d.source)
    if source not in ("jwt", "envoy_jwt_authn"):
        errs.add("spec.authentication.source", "must be `jwt` or `envoy_jwt_authn`")
    leeway = a.get("leeway", d.leeway)
    if not isinstance(leeway, int | float) or isinstance(leeway, bool) or not 0 <= leeway <= 3600:
        errs.add("spec.authentication.leeway", "must be a number of seconds from 0 to 3600")
        leeway = d.leeway
    algs = _strs(a.get("algorithms"), "spec.authentication.algorithms", errs) or d.algorithms
    for alg in algs:
        if alg not in _ALGS:
            # HS* would let anyone holding the (public) verification key mint tokens.
            errs.add(
                "spec.authentication.algorithms", f"`{alg}` is not allowed ({', '.join(_ALGS)})"
            )
    return AuthConfig(
        source=source,
        header=_str(a.get("header"), "spec.authentication.header", errs, d.header).lower(),
        scheme=_str(a.get("scheme"), "spec.authentication.scheme", errs, d.scheme),
        issuer=_strs(a.get("issuer"), "spec.authentication.issuer", errs),
        audience=_strs(a.get("audience"), "spec.authentication.audience", errs),
        leeway=float(leeway),
        algorithms=algs,
        jwks=_str(a.get("jwks"), "spec.authentication.jwks", errs, d.jwks),
        require=_strs(a.get("require"), "spec.authentication.require", errs)
        if "require" in a
        else d.require,
        metadata_namespace=_str(
            a.get("metadataNamespace"),
            "spec.authentication.metadataNamespace",
            errs,
            d.metadata_namespace,
        ),
        metadata_key=_str(
            a.get("metadataKey"), "spec.authentication.metadataKey", errs, d.metadata_key
        ),
    )


def _claims(v: Any, errs: _Errors) -> ClaimsConfig:
    c = _obj(v, "spec.claims", errs, ("id", "tenant", "roles", "scopes", "attr", "actor"))
    d = ClaimsConfig()
    attr = c.get("attr") or {}
    if not isinstance(attr, dict) or not all(isinstance(x, str) for x in attr.values()):
        errs.add("spec.claims.attr", "must map attribute names to claim names")
        attr = {}
    for key in ("id", "tenant", "roles", "actor"):
        _claim_path_ok(c.get(key), f"spec.claims.{key}", errs)
    scopes = c.get("scopes")
    for i, name in enumerate([scopes] if isinstance(scopes, str) else scopes or []):
        _claim_path_ok(name, f"spec.claims.scopes[{i}]", errs)
    for name, claim in attr.items():
        _claim_path_ok(claim, f"spec.claims.attr.{name}", errs)
    return ClaimsConfig(
        id=_str(c.get("id"), "spec.claims.id", errs, d.id),
        tenant=_str(c.get("tenant"), "spec.claims.tenant", errs, d.tenant),
        roles=_str(c.get("roles"), "spec.claims.roles", errs, d.roles),
        scopes=_strs(c.get("scopes"), "spec.claims.scopes", errs) or d.scopes,
        attr=attr,
        actor=_str(c.get("actor"), "spec.claims.actor", errs, d.actor),
    )


def _claim_path_ok(v: Any, where: str, errs: _Errors) -> None:
    if isinstance(v, str) and v:  # wrong types are reported by _str/_strs
        try:
            parse_claim_path(v)
        except TemplateError as e:
            errs.add(where, str(e))


def _route(raw: Any, where: str, index: int, errs: _Errors, *, public: bool) -> Route | None:
    keys = ("path", "methods") if public else ("path", "methods", "action", "resource", "context")
    r = _obj(raw, where, errs, keys)
    path = r.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        errs.add(f"{where}.path", "must be a path template starting with `/`")
        return None
    params: list[tuple[int, str]] = []
    rest, rest_at = "", 0
    segments = [] if path == "/" else path[1:].rstrip("/").split("/")
    for i, seg in enumerate(segments):
        m = _PARAM.match(seg)
        if m is None:
            if not seg or "{" in seg or "}" in seg:
                errs.add(f"{where}.path", f"bad segment `{seg}` (a literal or a whole `{{name}}`)")
            continue
        name, star = m.groups()
        if name in {n for _, n in params} or name == rest:
            errs.add(f"{where}.path", f"parameter `{name}` appears twice")
        if star:
            if i != len(segments) - 1:
                errs.add(f"{where}.path", f"`{{{name}*}}` must be the last segment")
            rest, rest_at = name, i
        else:
            params.append((i, name))
    methods = _methods(r, where, errs, public)
    if public:
        return Route(index, path, methods, tuple(params), rest, rest_at, None, public=True)
    names = frozenset(n for _, n in params) | ({rest} if rest else set())
    res = _obj(r.get("resource"), f"{where}.resource", errs, ("kind", "id", "tenant", "attr"))
    kind = res.get("kind")
    if not isinstance(kind, str) or not kind:
        errs.add(f"{where}.resource.kind", "is required (a resource kind)")
        kind = ""
    fields: dict[str, Any] = {}
    for key in ("id", "tenant"):
        value = res.get(key, "")
        try:
            fields[key] = parse_value(value, names) if isinstance(value, str) else None
        except TemplateError as e:
            errs.add(f"{where}.resource.{key}", str(e))
            continue
        if fields[key] is None:
            errs.add(f"{where}.resource.{key}", "must be a string template")
    if not res.get("id"):
        errs.add(f"{where}.resource.id", 'is required (e.g. `"{id}"`)')
    attr = _values(res.get("attr"), f"{where}.resource.attr", errs, names)
    ctx = _obj(r.get("context"), f"{where}.context", errs, ("attr",))
    context_attr = _values(ctx.get("attr"), f"{where}.context.attr", errs, names)
    resource = ResourceTemplate(kind, fields.get("id"), fields.get("tenant"), attr)
    return Route(index, path, methods, tuple(params), rest, rest_at, resource, context_attr)


def _methods(r: dict[str, Any], where: str, errs: _Errors, public: bool) -> dict[str, str]:
    raw = r.get("methods")
    action = r.get("action")
    out: dict[str, str] = {}
    if isinstance(raw, dict) and not public:
        if action is not None:
            errs.add(f"{where}.action", "give either `action` or a `methods` mapping, not both")
        for method, act in raw.items():
            if not isinstance(act, str) or not act:
                errs.add(f"{where}.methods.{method}", "must name an action")
                continue
            out[str(method).upper()] = act
    else:
        listed = _strs(raw, f"{where}.methods", errs) if raw is not None else ("*",)
        if not public and (not isinstance(action, str) or not action):
            errs.add(
                f"{where}.action",
                "is required when `methods` is a list (or map methods to actions)",
            )
        for method in listed:
            out[method.upper()] = "" if public else str(action or "")
    for method in out:
        if method != "*" and method not in HTTP_METHODS:
            errs.add(f"{where}.methods", f"unknown HTTP method `{method}`")
    if not out:
        errs.add(f"{where}.methods", "must not be empty")
    return out


def _insert(root: _Node, route: Route) -> None:
    node = root
    segments = [] if route.path == "/" else route.path[1:].rstrip("/").split("/")
    for seg in segments:
        m = _PARAM.match(seg)
        if m is not None and m.group(2):
            node.rest.append(route)
            return
        if m is not None:
            if node.param is None:
                node.param = _Node()
            node = node.param
        else:
            node = node.literal.setdefault(seg, _Node())
    node.routes.append(route)

"""HTTP request attributes → decision request. Pure: no gRPC, no clock, no I/O.

`translate` answers what to do before the engine is asked: let a public path through,
refuse bad credentials (401), refuse an unmapped route, or build the `CheckRequest` for one
resource and one action.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from pdp.errors import RequestError
from pdp.gateway.forms import (
    MAX_FORM_BYTES,
    MAX_PARSED_BYTES,
    METHOD_PARAM,
    MULTIPART,
    URLENCODED,
    FormError,
    form_kind,
    is_json,
    json_method_values,
    json_prefix_method_values,
    method_views,
    multipart_method_values,
)
from pdp.gateway.mapping import Route, RouteMapping, RouteMatch
from pdp.gateway.paths import PathError, canonicalize
from pdp.gateway.templates import RenderEnv, Template, render_value
from pdp.gateway.tokens import AuthError, bearer_token, principal_from_claims
from pdp.model.request import DEFAULT_LIMITS, CheckRequest, Limits, id_problem, parse_check_request

UNMAPPED_ROUTE = "unmapped_route"
INVALID_REQUEST = "invalid_request"
PUBLIC_ROUTE = "public_route"
AMBIGUOUS_QUERY = "ambiguous_query"
AMBIGUOUS_HEADER = "ambiguous_header"
AMBIGUOUS_METHOD = "ambiguous_method"
UNMAPPED_VARIANT = "unmapped_variant"
AMBIGUOUS_PATH = "ambiguous_path"
FORM_BODY_REQUIRED = "form_body_required"
# Envoy's ext_authz filter sets it (`true` when the body was cut at `max_request_bytes`) on every
# call that carries a body under `with_request_body`; a client's own header of that name is
# dropped by Envoy, never forwarded to pdp.
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"

Kind = Literal["check", "allow", "deny", "unauthenticated", "bad_request"]


@dataclass(frozen=True, slots=True)
class HttpAttributes:
    """What ext_authz tells us about one HTTP request, as plain values."""

    method: str
    path: str  # the request target: path and query, not decoded
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    source_ip: str = ""
    request_id: str = ""
    # `metadata_context.filter_metadata[namespace]` of Envoy's jwt_authn filter, when sent.
    jwt_metadata: Mapping[str, Any] | None = None
    # The request body as Envoy forwarded it under `with_request_body`; None when not sent.
    body: bytes | None = None
    body_partial: bool = False  # cut at `max_request_bytes` (Envoy's x-envoy-auth-partial-body)


@dataclass(frozen=True, slots=True)
class Translation:
    kind: Kind
    reason: str = ""
    message: str = ""
    request: CheckRequest | None = None  # set when kind == "check"
    match: RouteMatch | None = None
    env: RenderEnv | None = None  # for the headers added on allow


Verify = Callable[[str], dict[str, Any]]


def client_ip(source_ip: str, forwarded_for: str, trusted_hops: int) -> str:
    """The client address: the peer's, or the entry `trusted_hops` from the right of XFF.

    Each trusted proxy appends the address it received the request from, so only the last
    `trusted_hops` entries were written by someone we trust; anything left of them is
    whatever the client chose to send. With fewer entries than trusted hops the request did
    not come through our proxies, and the peer address is the only fact we have.
    """
    if trusted_hops > 0 and forwarded_for:
        entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
        if len(entries) >= trusted_hops:
            ip = _normal_ip(entries[-trusted_hops])
            if ip:
                return ip
    return _normal_ip(source_ip)


def _normal_ip(text: str) -> str:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.5:443"
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def authenticate(
    attrs: HttpAttributes, mapping: RouteMapping, verify: Verify | None
) -> tuple[dict, dict]:
    """(claims, principal) for the request, or `AuthError`."""
    auth = mapping.auth
    if auth.source == "envoy_jwt_authn":
        payload = (attrs.jwt_metadata or {}).get(auth.metadata_key)
        if not isinstance(payload, Mapping):
            raise AuthError("missing_token", "no verified token in the jwt_authn metadata")
        claims = dict(payload)
    else:
        token = bearer_token(attrs.headers, auth)
        if verify is None:
            raise AuthError("no_keys", "no verification keys are configured")
        claims = verify(token)
    return claims, principal_from_claims(claims, mapping.claims)


def translate(
    attrs: HttpAttributes,
    mapping: RouteMapping,
    verify: Verify | None,
    limits: Limits = DEFAULT_LIMITS,
    *,
    claims: Mapping[str, Any] | None = None,
) -> Translation:
    """Decide what the request needs. `claims`, when given, stand for a verified token
    (the mapping tests use it); otherwise the credential is taken from `attrs`."""
    try:
        path = canonicalize(attrs.path)
    except PathError as e:
        return Translation("bad_request", e.reason, e.message)
    overridden = method_override(attrs.method, attrs.headers, path.query)
    if overridden:
        return Translation("bad_request", AMBIGUOUS_METHOD, overridden)
    reason, overridden = body_method_override(attrs, mapping.form_method_override)
    if reason:
        return Translation("bad_request", reason, overridden)
    rerouted = path_override(attrs.headers, path.target)
    if rerouted:
        return Translation("bad_request", AMBIGUOUS_PATH, rerouted)
    match = mapping.match(attrs.method, list(path.segments))
    if match is not None and match.route.public:
        return Translation("allow", PUBLIC_ROUTE, match=match)
    if match is not None:
        untrimmed = _untrimmed_parameter(match.params)
        if untrimmed:
            return Translation("bad_request", INVALID_REQUEST, untrimmed, match=match)
    if match is None and mapping.unmapped_allow:
        variant = mapping.variant(attrs.method, list(path.segments))
        if variant is not None and not variant.route.public:
            # Passed as unmapped, it may be served as the route it resembles: no decision.
            return Translation(
                "deny",
                UNMAPPED_VARIANT,
                f"`{attrs.method.upper()[:32]}` on this path is not mapped, but an upstream may "
                f"serve it as route `{variant.route.path}`: map it, or spell the path as mapped",
            )
        return Translation("allow", UNMAPPED_ROUTE)
    try:
        if claims is not None:
            verified, principal = dict(claims), principal_from_claims(claims, mapping.claims)
        else:
            verified, principal = authenticate(attrs, mapping, verify)
    except AuthError as e:
        return Translation("unauthenticated", e.reason, e.message, match=match)
    query = parse_qsl(path.query, keep_blank_values=True)
    env = RenderEnv(
        method=attrs.method.upper(),
        path=path.target,  # the canonical path: the one decided on
        params=match.params if match else {},
        headers=attrs.headers,
        query=dict(query),
        claims=verified,
        principal=principal,
    )
    if match is None:
        return Translation("deny", UNMAPPED_ROUTE, "no route maps this method and path", env=env)
    repeated = _repeated_read(query, mapping, match.route)
    if repeated:
        return Translation(
            "bad_request",
            AMBIGUOUS_QUERY,
            f"query parameter `{repeated[:64]}` is given more than once",
            match=match,
            env=env,
        )
    merged = _merged_header_id(match.route, env)
    if merged:
        return Translation(
            "bad_request",
            AMBIGUOUS_HEADER,
            f"header `{merged[:64]}` holds a comma (or has a twin spelled with `_`) where "
            "the route reads one id",
            match=match,
            env=env,
        )
    return build_check(attrs, mapping, match, env, principal, limits)


# Where frameworks read a method that replaces the request line's: Express's method-override,
# Symfony/Laravel (`http_method_override`), Spring, Google's APIs; `_method` in the query too.
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
METHOD_OVERRIDE_PARAM = METHOD_PARAM


def method_override(method: str, headers: Mapping[str, str], query: str) -> str:
    """Why the request may run another method upstream than the one decided on ("" if not).

    Routes match the request line's method; an upstream that honours an override header or
    `_method` runs the method named there: `GET` + `X-HTTP-Method-Override: DELETE` decided
    as a read, served as a delete. An override naming the request's own method is harmless;
    any other (or a repeated `_method`) is refused, since pdp cannot know which one runs."""
    asked = method.upper()
    for name in METHOD_OVERRIDE_HEADERS:
        value = headers.get(name)
        if value is not None and value.strip().upper() != asked:
            return (
                f"header `{name}` names method `{value.strip()[:32]}` on a `{asked[:32]}` "
                "request; pdp decides on the request line's method"
            )
    # parsed, not searched: `%5Fmethod` is `_method` to the upstream too
    try:
        views = method_views(query) if query else []
    except FormError as e:
        return f"query: {e}; pdp decides on the request line's method"
    if _names_another(views, asked):
        return (
            f"query parameter `{METHOD_OVERRIDE_PARAM}` names another method than "
            f"`{asked[:32]}`; pdp decides on the request line's method"
        )
    return ""


def _names_another(views: list[list[str]], asked: str) -> bool:
    """Whether the `_method` values of any view may run another method than `asked`: one
    naming another, or more than one (which copy the upstream takes is its choice)."""
    return any(len(vs) > 1 or any(v.strip().upper() != asked for v in vs) for vs in views)


def body_method_override(attrs: HttpAttributes, honoured: bool) -> tuple[str, str]:
    """(reason, message) when a form or JSON body may run another method upstream; ("", "")
    if not.

    A form body (urlencoded, multipart, or no content type at all, which Rack parses as one)
    or a JSON body (Laravel reads a top-level `_method` from one) that Envoy sent is parsed,
    and a `_method` naming another method than the request line's, or given twice, is refused
    whatever the mapping says. When the body was not sent, or cut, pdp cannot know what it
    holds: with `honoured` (the mapping's `bodyMethodOverride: true`, the upstream reads
    `_method` in bodies) that is refused too, telling the operator what Envoy must send (a
    POST without a content type included, unless it says `content-length: 0`: Envoy shows
    pdp no `transfer-encoding`, so its chunked body would pass unseen); without it the request
    is decided on what was read, a cut JSON body's top-level keys as far as the cut."""
    content_type = attrs.headers.get("content-type")
    try:
        kind = form_kind(content_type)
    except FormError as e:
        return AMBIGUOUS_METHOD, f"{e}; pdp decides on the request line's method"
    json_body = is_json(content_type)
    body = attrs.body
    untyped = content_type is None or not content_type.strip()
    if not kind and not json_body and (not untyped or body == b""):
        return "", ""
    what = "JSON" if json_body and not kind else "form"
    asked = attrs.method.upper()
    subject = (
        f"a `{asked[:32]}` without a content type (read as a form)"
        if untyped
        else f"a {what} `{asked[:32]}`"
    )
    declared = attrs.headers.get("content-length")
    if body is None:
        if not honoured or (declared is not None and declared.strip() == "0"):
            return "", ""
        if declared is None and asked in ("GET", "HEAD"):
            # Some clients label every request with a form content type; no framework reads
            # `_method` off a GET, and one without a length is as good as bodyless.
            return "", ""
        if untyped and asked != "POST":
            # Rack parses a body without a content type as a form, but every framework that
            # reads `_method` (Rack, Symfony, Spring, Express's method-override) reads it on a
            # POST only; a DELETE or PUT without a type and a length is most often bodyless.
            return "", ""
        # Untyped with no body from Envoy: a `content-length` above 0, or none at all.
        # Envoy drops `transfer-encoding` before ext_authz, so a chunked (or HTTP/2) body
        # shows exactly as a bodiless request without a length does; with
        # `with_request_body` a request carrying a body always has Envoy's marker, so only a
        # POST without either reaches here, and `content-length: 0` passes.
        return FORM_BODY_REQUIRED, (
            f"{subject} may name another method in its body's `{METHOD_PARAM}`, "
            "and Envoy sent pdp no body: set `with_request_body` on Envoy's ext_authz filter "
            "(`max_request_bytes` above the largest form, `allow_partial_message: true`, "
            "`pack_as_bytes: true`; docs/GATEWAY.md)"
            + ("; a POST without a body should say `content-length: 0`" if untyped else "")
        )
    cap = MAX_PARSED_BYTES if kind == MULTIPART or json_body else MAX_FORM_BYTES
    complete = (
        not attrs.body_partial
        and len(body) <= cap
        and (declared is None or (declared.strip().isdigit() and int(declared) == len(body)))
    )
    seen = body[:cap]
    try:
        if kind == URLENCODED or (not kind and not json_body):
            views = method_views(seen.decode("latin-1"))
        elif kind == MULTIPART:
            views = [multipart_method_values(content_type or "", seen, complete)]
        else:
            views = []
        if json_body:
            # A cut JSON text does not parse as a whole, but the top-level keys of its start
            # are the whole text's: they are read as far as the cut (docs/GATEWAY.md).
            views.append(json_method_values(seen) if complete else json_prefix_method_values(seen))
    except FormError as e:
        return AMBIGUOUS_METHOD, f"{e}; pdp decides on the request line's method"
    if _names_another(views, asked):
        return AMBIGUOUS_METHOD, (
            f"{what} body field `{METHOD_PARAM}` names another method than `{asked[:32]}` (or "
            "is given more than once); pdp decides on the request line's method"
        )
    encoding = attrs.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity") and honoured:
        # An upstream that inflates request bodies reads fields pdp, seeing gzip, did not.
        return FORM_BODY_REQUIRED, (
            f"{subject} may name another method in its body's `{METHOD_PARAM}`, "
            f"and its body is `{encoding[:32]}`-encoded, which pdp does not decode: send "
            "bodies unencoded"
        )
    if not complete and honoured:
        return FORM_BODY_REQUIRED, (
            f"{subject} may name another method in its body's `{METHOD_PARAM}`, "
            f"and pdp got or parsed only the first {len(seen)} bytes of it: raise "
            "`max_request_bytes` of Envoy's ext_authz filter above the largest form (pdp "
            "parses at most 1 MiB of a urlencoded body, 256 KiB of others; docs/GATEWAY.md)"
        )
    return "", ""


# Headers that IIS's URL Rewrite (and ASP.NET behind it), and Symfony before CVE-2018-14773,
# route by instead of the request line.
PATH_OVERRIDE_HEADERS = ("x-original-url", "x-rewrite-url")


def path_override(headers: Mapping[str, str], target: str) -> str:
    """Why the upstream may serve another path than the one decided on ("" if not): a path
    override header naming anything but the request's own (canonical) target."""
    for name in PATH_OVERRIDE_HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            same = canonicalize(value.strip()).target == target
        except PathError:
            same = False
        if not same:
            return (
                f"header `{name}` names another path than the request's; pdp decides on the "
                "request line's path"
            )
    return ""


def _merged_header_id(route: Route, env: RenderEnv) -> str:
    """A header the route's resource id or tenant reads whose value holds a comma ("" if none).

    A request that repeats a header (`X-Doc: public`, `X-Doc: secret`) reaches pdp as one
    value joined by commas (`public,secret`, as Envoy and HTTP's field combination do), and
    the upstream reads the first copy, the last, or all, by framework: pdp would decide on an
    id that no one serves. An id or tenant is one value, never a list, so a comma in the
    header it comes from is refused; a header that only an attribute reads may be a list
    (`Accept-Language: en, fr`) and is passed as it came."""
    res = route.resource
    if res is None:
        return ""
    for template in (res.id, res.tenant):
        if isinstance(template, Template):
            for ref in template.refs:
                if ref.namespace == "header" and "," in (env.headers.get(ref.key) or ""):
                    return ref.key
                if ref.namespace == "header" and _underscore_twin(ref.key, env.headers):
                    return ref.key
    return ""


def _underscore_twin(key: str, headers: Mapping[str, str]) -> bool:
    """Whether another header names `key` with `_` for `-`: CGI and WSGI servers put `X-Conv`
    and `X_Conv` in the one variable `HTTP_X_CONV` (the last wins), a copy pdp cannot see."""
    return any(
        "_" in name and name != key and name.replace("_", "-") == key.replace("_", "-")
        for name in headers
    )


def _untrimmed_parameter(params: Mapping[str, str]) -> str:
    """Why a route parameter cannot be decided on ("" if every one can): each segment it takes
    follows the id rule wherever a template puts it. In an attribute (`owner: "{user}"`),
    `ceo%20` or `ceo%EF%BB%BF` would miss a deny on `"ceo"` while an upstream that trims its
    route parameters serves ceo's resource."""
    for name, value in params.items():
        for segment in value.split("/"):
            problem = id_problem(segment)
            if problem:
                return f"path parameter `{name}`: {problem}"
    return ""


def _repeated_read(query: list[tuple[str, str]], mapping: RouteMapping, route: Route) -> str:
    """A query parameter the request repeats and a template of its route reads ("" if none).

    pdp's templates read one value of a parameter; the upstream may read another (first,
    last, or all, by framework): `?doc=theirs&doc=mine` would be decided on one document and
    served as the other. A repeated parameter that no template reads stays allowed.

    A raw `;` counts as a separator too: Go before 1.17, Rack and Python before 3.9.2 split
    `?conv=c1;conv=c2` at it, where pdp reads one parameter `conv` = `c1;conv=c2`."""
    names = [_param_name(key) for key, _ in query]
    for key, value in query:
        for piece in f"{key}={value}".split(";")[1:]:
            names.append(_param_name(piece.partition("=")[0]))
    counts = Counter(names)
    if len(counts) == len(names):
        return ""
    templates = [*mapping.context_attr.values(), *mapping.add_headers.values()]
    templates += route.context_attr.values()
    if route.resource is not None:
        res = route.resource
        templates += [res.id, res.tenant, *res.attr.values()]
    for template in templates:
        if isinstance(template, Template):
            for ref in template.refs:
                if ref.namespace == "query" and counts[_param_name(ref.key)] > 1:
                    return ref.key
    return ""


def _param_name(key: str) -> str:
    """A query parameter's name as lenient upstreams match it: ASP.NET's model binding ignores
    case, PHP and Rails read `owner[]` and `owner[0]` as `owner`. Two names equal under this
    are two copies of one parameter to such an upstream."""
    return key.partition("[")[0].casefold()


def build_check(
    attrs: HttpAttributes,
    mapping: RouteMapping,
    match: RouteMatch,
    env: RenderEnv,
    principal: dict[str, Any],
    limits: Limits = DEFAULT_LIMITS,
) -> Translation:
    res = match.route.resource
    assert res is not None
    context_attr = _render_map(mapping.context_attr, env) | _render_map(
        match.route.context_attr, env
    )
    obj = {
        "request_id": attrs.request_id,
        "principal": principal,
        "resources": [
            {
                "kind": res.kind,
                "id": _text(render_value(res.id, env)),
                "tenant": _text(render_value(res.tenant, env)),
                "attr": _render_map(res.attr, env),
                "actions": [match.action],
            }
        ],
        "context": {
            "ip": client_ip(
                attrs.source_ip, attrs.headers.get("x-forwarded-for", ""), mapping.trusted_hops
            ),
            "attr": context_attr,
        },
    }
    try:
        request = parse_check_request(obj, limits)
    except RequestError as e:
        return Translation("bad_request", INVALID_REQUEST, str(e), match=match, env=env)
    return Translation("check", request=request, match=match, env=env)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _render_map(templates: Mapping[str, Any], env: RenderEnv) -> dict[str, Any]:
    out = {}
    for key, template in templates.items():
        value = render_value(template, env)
        if value is not None:  # a missing claim or header is an absent attribute, not null
            out[key] = value
    return out

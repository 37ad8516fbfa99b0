from __future__ import annotations

import copy

import pytest

from pdp.errors import PolicyErrors
from pdp.gateway.mapping import load_route_mapping, split_path

from ._support import MAPPING


@pytest.fixture(scope="module")
def mapping():
    return load_route_mapping(MAPPING)


def _match(mapping, method, path):
    split = split_path(path)
    assert split is not None
    return mapping.match(method, split[0])


def test_templates_capture_params(mapping):
    m = _match(mapping, "DELETE", "/v1/tenants/acme/kb/k1/docs/d%201")
    assert m.action == "delete"
    assert m.params == {"tenant": "acme", "kb": "k1", "doc": "d 1"}
    assert m.route.resource.kind == "document"


def test_literal_segments_win_over_params(mapping):
    assert _match(mapping, "GET", "/v1/tenants/acme/kb/search").action == "search"
    assert _match(mapping, "GET", "/v1/tenants/acme/kb/k2").params == {"tenant": "acme", "kb": "k2"}


def test_method_not_mapped_is_no_match(mapping):
    assert _match(mapping, "POST", "/v1/tenants/acme/kb/k1/docs/d1") is None
    assert _match(mapping, "GET", "/v1/tenants/acme/nothing") is None


def test_trailing_slash_and_query_are_ignored(mapping):
    assert _match(mapping, "GET", "/v1/tenants/acme/kb/k1/?x=1").params["kb"] == "k1"


def test_rest_parameter(mapping):
    assert _match(mapping, "GET", "/v1/me/files/a/b/c.txt").params == {"path": "a/b/c.txt"}


def test_public_route(mapping):
    assert _match(mapping, "GET", "/healthz").route.public
    assert _match(mapping, "POST", "/healthz") is None


@pytest.mark.parametrize(
    "path", ["/v1/../admin", "/v1/%2e%2e/admin", "/v1/./x", "/v1//x", "relative", "/a/%00"]
)
def test_confusing_paths_are_refused(path):
    assert split_path(path) is None


def _broken(**spec_changes):
    doc = copy.deepcopy(MAPPING)
    doc["spec"].update(spec_changes)
    return doc


def test_every_error_is_reported_at_once():
    doc = _broken(
        unmapped="maybe",
        routes=[
            {"path": "/a/{x}", "methods": {"GET": "read"}, "resource": {"kind": "k", "id": "{y}"}},
            {
                "path": "/b/{x}/{x}",
                "methods": ["FETCH"],
                "action": "a",
                "resource": {"kind": "k", "id": "{x}"},
            },
            {
                "path": "/c",
                "methods": ["GET"],
                "resource": {"kind": "k", "id": "{claims.sub}", "tenant": "{nope.x}"},
            },
        ],
    )
    with pytest.raises(PolicyErrors) as e:
        load_route_mapping(doc, "policies/mapping.yaml")
    text = str(e.value)
    assert "spec.unmapped" in text
    assert "`{y}` is not a path parameter" in text
    assert "parameter `x` appears twice" in text
    assert "unknown HTTP method `FETCH`" in text
    assert "spec.routes[2].action: is required" in text
    assert "unknown placeholder `{nope.x}`" in text
    assert text.startswith("policies/mapping.yaml: ")


def test_symmetric_algorithms_are_refused():
    doc = copy.deepcopy(MAPPING)
    doc["spec"]["authentication"]["algorithms"] = ["HS256"]
    with pytest.raises(PolicyErrors, match="`HS256` is not allowed"):
        load_route_mapping(doc)


def test_unknown_keys_are_reported():
    with pytest.raises(PolicyErrors, match="unknown key `rutes`"):
        load_route_mapping({"kind": "RouteMapping", "spec": {"rutes": []}})

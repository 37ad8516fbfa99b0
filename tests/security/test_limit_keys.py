"""Rate-limit keys that two callers cannot share by choosing their ids: a list key
(`"[P.tenant, actor.id]"`) is one bucket per tuple, where joined strings blur (tenant `a/b`,
actor `c` is tenant `a`, actor `b/c`); a key of a type spelled several ways, reached through an
untyped attribute, denies (`rate_limit_error`) instead of counting per spelling.

Through a real gRPC server (in-memory counters) and the Python client."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from pdp.client import Client
from tests.limits.conftest import limits_server, write_policies

POLICIES = {
    "note.yaml": """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: []}
    write: {scopes: []}
    tag: {scopes: []}
  rules:
    - {id: members, actions: ["*"], effect: allow, roles: [member]}
""",
    "limits.yaml": """
apiVersion: pdp/v1
kind: LimitPolicy
metadata: {id: limits}
spec:
  limits:
    - {id: listed, resources: [note], actions: [read], key: "[P.tenant, actor.id]", limit: 2, per: 1d}
    - {id: joined, resources: [note], actions: [write], key: 'P.tenant + "/" + actor.id', limit: 2, per: 1d}
    - {id: by-tag, resources: [note], actions: [tag], key: context.attr.tag, limit: 2, per: 1d}
""",
}
_ids = itertools.count()


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with limits_server(write_policies(tmp_path_factory.mktemp("policies"), POLICIES)) as address:
        yield address


def agent(tenant: str, actor: str) -> dict[str, Any]:
    return {
        "id": "owner",
        "tenant": tenant,
        "roles": ["member"],
        "actor": {"id": actor, "type": "agent", "scopes": []},
    }


def effects(client: Client, principal: dict, action: str, n: int, **context: Any) -> list[str]:
    out = []
    for _ in range(n):
        note = {"kind": "note", "id": f"n{next(_ids)}", "tenant": principal["tenant"]}
        ctx = {"attr": context} if context else None
        decision = client.check(principal, [{**note, "actions": [action]}], ctx)
        result = decision.results[0].actions[action]
        out.append("allow" if result.allowed else ",".join(result.reasons))
    return out


def test_a_list_key_keeps_two_tenants_apart_where_a_joined_string_does_not(address: str) -> None:
    run = next(_ids)
    first, second = agent(f"t{run}/x", "bot"), agent(f"t{run}", "x/bot")
    with Client(address, timeout=10) as client:
        # The listed key: each (tenant, actor) its own 2 a day.
        assert effects(client, first, "read", 3) == ["allow", "allow", "rate_limited"]
        assert effects(client, second, "read", 2) == ["allow", "allow"]
        # The joined key: `t/x` + "/" + `bot` and `t` + "/" + `x/bot` are one bucket, which is
        # why the example policies and docs use a list.
        assert effects(client, first, "write", 2) == ["allow", "allow"]
        assert effects(client, second, "write", 1) == ["rate_limited"]


@pytest.mark.parametrize(
    ("tag", "reason"),
    [(1.5, "rate_limit_error"), (True, "rate_limit_error"), ({"a": 1}, "rate_limit_error")],
    ids=["double", "bool", "map"],
)
def test_an_untyped_key_of_another_type_denies(address: str, tag: Any, reason: str) -> None:
    with Client(address, timeout=10) as client:
        assert effects(client, agent("acme", "bot"), "tag", 1, tag=tag) == [reason]


def test_an_untyped_key_that_is_a_string_an_int_or_a_list_of_them_counts(address: str) -> None:
    with Client(address, timeout=10) as client:
        for tag in (f"s{next(_ids)}", next(_ids), [f"l{next(_ids)}", 7]):
            got = effects(client, agent("acme", "bot"), "tag", 3, tag=tag)
            assert got == ["allow", "allow", "rate_limited"], tag

"""Policy-semantics attacks that found nothing, pinned through a real `pdp serve`.

- A derived role whose condition reads `action` through a variable is decided per action:
  memoised per resource by name alone, a role held for `read` would also be held for
  `delete` in the same batch.
- Comprehension variables named like the activation (`P`, `R`, `C`, `V`) shadow it inside the
  macro, as CEL scopes them: `R.attr.tags.exists(P, P == "public")` compares the tag, not the
  principal, and `R.attr.items.exists(C, C.x == 1)` reads the item, not a constant `x`.
- A string where a list is expected is an error, never a list of characters (Python would
  iterate it): `R.attr.labels.all(l, l != "secret")` over `"abc"` does not allow.
- `in` on a string is an error, never a substring test: `"adm" in P.attr.group` with group
  `"admins"` does not allow.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format

from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .real_pdp import Served, pdp_serve

DEFINITIONS = """
    apiVersion: pdp/v1
    kind: Definitions
    metadata: {id: common}
    spec:
      constants:
        x: 2
      variables:
        is_read: action == "read"
      derivedRoles:
        reader:
          parentRoles: ["*"]
          condition: V.is_read
"""
POLICY = """
    apiVersion: pdp/v1
    kind: ResourcePolicy
    metadata: {id: docs}
    spec:
      resource: doc
      imports: [common]
      actions:
        read: {}
        delete: {}
        tag: {}
        list: {}
        view: {}
        share: {}
        join: {}
      rules:
        - {id: readers, actions: [read, delete], effect: allow, derivedRoles: [reader]}
        - id: public-tags
          actions: [tag]
          effect: allow
          condition: R.attr.tags.exists(P, P == "public")
        - id: admin-groups
          actions: [list]
          effect: allow
          condition: P.attr.groups.exists(R, R == "admins")
        - id: first-item
          actions: [view]
          effect: allow
          condition: R.attr.items.exists(C, C.x == 1) && C.x == 2
        - id: no-secret-label
          actions: [share]
          effect: allow
          condition: R.attr.labels.all(l, l != "secret")
        - id: admin-group
          actions: [join]
          effect: allow
          condition: '"adm" in P.attr.group'
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("pins17")
    (root / "common.yaml").write_text(textwrap.dedent(DEFINITIONS).lstrip())
    (root / "docs.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    with pdp_serve(root) as s:
        yield s


def effects(served: Served, actions: list[str], rattr: Any, pattr: Any = None) -> dict[str, str]:
    raw = {
        "principal": {"id": "ann", "tenant": "acme", "roles": ["user"], "attr": pattr or {}},
        "resources": [
            {"kind": "doc", "id": "d1", "tenant": "acme", "actions": actions, "attr": rattr}
        ],
    }
    got = served.check(json_format.ParseDict(raw, pb.CheckRequest()))
    return {a: pb.Effect.Name(r.effect)[7:] for a, r in got.results[0].actions.items()}


def test_a_derived_role_that_reads_the_action_is_decided_per_action(served: Served) -> None:
    assert effects(served, ["read", "delete"], {}) == {"read": "ALLOW", "delete": "DENY"}
    assert effects(served, ["delete", "read"], {}) == {"read": "ALLOW", "delete": "DENY"}


@pytest.mark.parametrize(
    ("action", "rattr", "pattr", "want"),
    [
        ("tag", {"tags": ["public"]}, {}, "ALLOW"),
        ("tag", {"tags": ["ann"]}, {}, "DENY"),
        ("list", {}, {"groups": ["admins"]}, "ALLOW"),
        ("list", {}, {"groups": ["users"]}, "DENY"),
        ("view", {"items": [{"x": 1}]}, {}, "ALLOW"),
        ("view", {"items": [{"x": 2}]}, {}, "DENY"),
        ("share", {"labels": ["x"]}, {}, "ALLOW"),
        ("share", {"labels": ["secret"]}, {}, "DENY"),
        ("share", {"labels": "abc"}, {}, "DENY"),
        ("share", {"labels": {"secret": 1}}, {}, "DENY"),
        ("join", {}, {"group": "admins"}, "DENY"),
        ("join", {}, {"group": ["adm"]}, "ALLOW"),
    ],
)
def test_shadowing_and_strings_decide_as_cel_says(
    served: Served, action: str, rattr: Any, pattr: Any, want: str
) -> None:
    assert effects(served, [action], rattr, pattr) == {action: want}

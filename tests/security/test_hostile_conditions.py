"""Hostile conditions: nesting meant to exhaust the compiler is a policy error with its
file:line, never a crash of the load, and never a policy that loads and then fails (or
allows) at run time."""

from __future__ import annotations

import pytest

from pdp.engine import compile_policy_set
from pdp.errors import PolicyErrors
from pdp.model.loader import load_policy_files

POLICY = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: hostile}}
spec:
  resource: doc
  actions:
    read: {{scopes: ["doc:read"]}}
  rules:
    - id: fine
      actions: [read]
      effect: allow
      condition: P.id == "alice"
    - id: hostile
      actions: [read]
      effect: allow
      condition: '{condition}'
"""

HOSTILE = {
    "long-chain": " + ".join(["P.attr.n"] * 3000) + " > 1",
    "deep-lists": "[" * 250 + "P.id" + "]" * 250 + " == []",
    "deep-calls": "int(" * 250 + "P.attr.n" + ")" * 250 + " > 1",
    "deep-negations": "-(" * 250 + "P.attr.n" + ")" * 250 + " > 1",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_nesting_meant_to_exhaust_the_compiler_is_a_policy_error(name: str) -> None:
    files = {"hostile.yaml": POLICY.format(condition=HOSTILE[name]).encode()}
    with pytest.raises(PolicyErrors) as info:
        compile_policy_set(load_policy_files(files))
    [error] = info.value.errors
    assert error.location is not None
    assert error.location.file == "hostile.yaml" and error.location.line == 16

"""Red-team 18: attacks on policy YAML that held, pinned so they keep holding.

YAML 1.1 (PyYAML's default) reads `no`, `off`, `y` as booleans and `<<` as a merge; the loader
reads YAML 1.2's core schema and composes nodes without constructing them. So a role or an
action named `no` stays the string `no` (and never matches a principal holding the role
`false`), a `<<` key is an unknown key rather than a way to pull a rule's fields from
elsewhere, and a Python tag constructs nothing.
"""

from __future__ import annotations

import pytest

from pdp.engine import Engine, compile_policy_set
from pdp.errors import PolicyErrors
from pdp.model.loader import load_policy_files
from pdp.model.request import parse_check_request

WORDS = ["no", "No", "NO", "off", "Off", "on", "yes", "y", "n"]


def _policy(word: str) -> str:
    return f"""apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: doc}}
spec:
  resource: document
  tenancy: global
  actions: {{{word}: {{}}, read: {{}}}}
  rules:
    - {{id: r, actions: [{word}], effect: allow, roles: [{word}], reason: ok}}
"""


def _decide(engine: Engine, roles: list[str], action: str) -> str:
    req = parse_check_request(
        {
            "principal": {"id": "alice", "roles": roles},
            "resources": [{"kind": "document", "id": "d1", "actions": [action]}],
        }
    )
    return engine.check(req).results[0].actions[action].effect


@pytest.mark.parametrize("word", WORDS)
def test_yaml_11_booleans_are_names_not_booleans(word: str) -> None:
    engine = Engine(compile_policy_set(load_policy_files({"doc.yaml": _policy(word).encode()})))
    assert _decide(engine, [word], word) == "allow"
    for confused in ("false", "False", "true", "True"):
        assert _decide(engine, [confused], word) == "deny"
    assert _decide(engine, [word], "read") == "deny"


def test_a_merge_key_is_an_unknown_key_not_a_merge() -> None:
    text = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: doc}
spec:
  resource: document
  tenancy: global
  actions: {read: {}}
  rules:
    - {id: r, actions: [read], effect: allow, roles: [reader], reason: ok, <<: {roles: ["*"]}}
"""
    with pytest.raises(PolicyErrors) as caught:
        load_policy_files({"doc.yaml": text.encode()})
    assert any("unknown key `<<`" in e.message for e in caught.value.errors)


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/object/apply:os.system ['true']",
        "!!python/name:os.system",
        "!!binary aGVsbG8=",
        "!custom reader",
        "!!set {reader}",
    ],
)
def test_tags_construct_nothing_and_are_errors(tagged: str) -> None:
    text = f"""apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: doc}}
spec:
  resource: document
  tenancy: global
  actions: {{read: {{}}}}
  rules:
    - {{id: r, actions: [read], effect: allow, roles: [{tagged}], reason: ok}}
"""
    with pytest.raises(PolicyErrors):
        load_policy_files({"doc.yaml": text.encode()})

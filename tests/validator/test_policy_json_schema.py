"""The editor-facing JSON Schema of policy files knows the validator's fields (`schemas`,
`suppress`, `unconditional`): it accepts the good corpus and refuses what the loader refuses."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from pdp.errors import PolicyError, PolicyErrors
from pdp.model._yaml import FileContext, parse_yaml, to_json
from pdp.model.loader import classify, load_policy_files

from .corpus import cases

POLICY = jsonschema.Draft202012Validator(
    json.loads(resources.files("pdp").joinpath("schema/policy.schema.json").read_text())
)


def as_json(name: str, content: bytes) -> Any:
    errors: list[PolicyError] = []
    ctx = FileContext(name, errors)
    node = parse_yaml(ctx, content.decode())
    assert node is not None and not errors
    return to_json(ctx, node)


def policy_documents() -> list[tuple[str, bytes]]:
    return [
        (f"{c.name}/{path}", content)
        for c in cases("good") + cases("bad")
        for path, content in c.files.items()
        if classify(path) == "policy"
    ]


@pytest.mark.parametrize(("name", "content"), policy_documents(), ids=lambda x: str(x)[:60])
def test_corpus_documents_validate(name: str, content: bytes) -> None:
    errors = list(POLICY.iter_errors(as_json(name, content)))
    assert not errors, [e.message for e in errors]


BASE = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: document
  actions: {read: {}}
  EXTRA
  rules:
    - id: r
      actions: [read]
      effect: allow
"""


@pytest.mark.parametrize(
    "extra",
    [
        "suppress: [{code: PDP109}]",
        "suppress: [{code: X1, reason: why}]",
        "schemas: {resource: doc.json, enforcement: block}",
        "schemas: {resource: doc.json, strict: true}",
        "crossTenant: [{id: c, actions: [read], unconditional: 'yes', reason: r}]",
    ],
)
def test_schema_and_loader_both_refuse(extra: str) -> None:
    text = BASE.replace("EXTRA", extra)
    assert list(POLICY.iter_errors(as_json("docs.yaml", text.encode())))
    with pytest.raises(PolicyErrors):
        load_policy_files({"docs.yaml": text.encode(), "schemas/doc.json": b'{"type": "object"}'})

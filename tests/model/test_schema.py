"""The shipped JSON Schemas accept every valid policy and reject unknown keys.

Files are read with the loader's own YAML 1.2 reader, as yaml-language-server reads them.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pdp.errors import PolicyError
from pdp.model._yaml import FileContext, parse_yaml, to_json
from pdp.model.loader import classify

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "policies", Path(__file__).parent / "fixtures" / "valid"]


def schema(name: str) -> jsonschema.Draft202012Validator:
    text = resources.files("pdp").joinpath(f"schema/{name}.schema.json").read_text()
    return jsonschema.Draft202012Validator(json.loads(text))


POLICY = schema("policy")
TEST = schema("test")


def read_yaml(path: Path) -> Any:
    errors: list[PolicyError] = []
    ctx = FileContext(path.name, errors)
    node = parse_yaml(ctx, path.read_text())
    assert node is not None and not errors, errors
    value = to_json(ctx, node)
    assert not errors, errors
    return value


def documents() -> list[Path]:
    found = []
    for root in SOURCES:
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                kind = classify(p.relative_to(root).as_posix())
                if p.is_file() and kind in ("policy", "test"):
                    found.append(p)
    return found


def validator_for(path: Path) -> jsonschema.Draft202012Validator:
    return TEST if classify(path.name) == "test" else POLICY


def test_schemas_are_valid_draft_2020_12() -> None:
    for v in (POLICY, TEST):
        jsonschema.Draft202012Validator.check_schema(v.schema)


def test_there_are_documents_to_validate() -> None:
    # The example policies may not exist yet; our own fixtures always do.
    names = {p.name for p in documents()}
    assert {"common.yaml", "documents.yaml", "documents_test.yaml", "guard.yaml"} <= names


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_document_validates(path: Path) -> None:
    errors = sorted(validator_for(path).iter_errors(read_yaml(path)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


VALID = Path(__file__).parent / "fixtures" / "valid"


def _policy() -> dict[str, Any]:
    return read_yaml(VALID / "docs" / "documents.yaml")


def _suite() -> dict[str, Any]:
    return read_yaml(VALID / "docs" / "documents_test.yaml")


def _put(doc: dict[str, Any], path: list[str | int], key: str = "bogus") -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target: Any = doc
    for step in path:
        target = target[step]
    target[key] = 1
    return doc


@pytest.mark.parametrize(
    ("which", "path"),
    [
        ("policy", []),
        ("policy", ["metadata"]),
        ("policy", ["spec"]),
        ("policy", ["spec", "rules", 0]),
        ("policy", ["spec", "crossTenant", 0]),
        ("policy", ["spec", "actions", "read"]),
        ("guard", ["spec", "rules", 0]),
        ("definitions", ["spec"]),
        ("definitions", ["spec", "derivedRoles", "owner"]),
        ("suite", []),
        ("suite", ["spec"]),
        ("suite", ["spec", "cases", 0]),
        ("suite", ["spec", "principals", "alice"]),
        ("suite", ["spec", "resources", "alice_doc"]),
        ("suite", ["spec", "contexts", "office"]),
        ("suite", ["spec", "cases", 0, "expect", "delete"]),
    ],
)
def test_schema_rejects_unknown_keys(which: str, path: list[str | int]) -> None:
    base = {
        "policy": _policy,
        "guard": lambda: read_yaml(VALID / "guard.yaml"),
        "definitions": lambda: read_yaml(VALID / "common.yaml"),
        "suite": _suite,
    }[which]()
    v = TEST if which == "suite" else POLICY
    assert v.is_valid(base)
    assert not v.is_valid(_put(base, path))


def test_schema_rejects_what_the_loader_rejects() -> None:
    p = _policy()
    bad_effect = copy.deepcopy(p)
    bad_effect["spec"]["rules"][0]["effect"] = "permit"
    bad_tenancy = copy.deepcopy(p)
    bad_tenancy["spec"]["tenancy"] = "nobody"
    string_actions = copy.deepcopy(p)
    string_actions["spec"]["rules"][0]["actions"] = "read"
    two_ops = copy.deepcopy(p)
    two_ops["spec"]["rules"][0]["condition"] = {"all": ["a"], "any": ["b"]}
    int_id = copy.deepcopy(p)
    int_id["metadata"]["id"] = 123
    unknown_kind = copy.deepcopy(p)
    unknown_kind["kind"] = "Resourcepolicy"
    for doc in (bad_effect, bad_tenancy, string_actions, two_ops, int_id, unknown_kind):
        assert not POLICY.is_valid(doc)
    guard = read_yaml(VALID / "guard.yaml")
    guard["spec"]["rules"][0]["effect"] = "allow"
    assert not POLICY.is_valid(guard)
    del guard["spec"]["rules"][0]["effect"]
    del guard["spec"]["rules"][0]["reason"]
    assert not POLICY.is_valid(guard)
    s = _suite()
    s["spec"]["now"] = "2026-01-01T00:00:00"  # no offset
    assert not TEST.is_valid(s)
    s = _suite()
    s["spec"]["cases"][0]["expect"]["read"] = "maybe"
    assert not TEST.is_valid(s)
    s = _suite()
    s["spec"]["cases"][0]["resources"] = ["alice_doc"]  # both resource and resources
    assert not TEST.is_valid(s)


def test_an_attribute_schema_is_compiled_once_for_load_and_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading a schema compiles its validator (generated code) to check that it compiles;
    compiling the policies compiled it again for the engine: start-up work done twice. The
    engine's is the loader's now. The `email` format's check still works, its regular
    expression compiled on first use (compiling those of every bounded format for every schema
    was ~20 ms of start-up)."""
    import uuid

    import fastjsonschema

    from pdp.engine import compile_policy_set
    from pdp.model import schema as schema_module
    from pdp.model.loader import load_policy_files

    calls = []
    real = fastjsonschema.compile

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(schema_module.fastjsonschema, "compile", counting)
    field = f"f{uuid.uuid4().hex}"  # a schema no other test compiled (the cache is per process)
    attr_schema = {
        "type": "object",
        "properties": {field: {"type": "string"}, "mail": {"type": "string", "format": "email"}},
    }
    files = {
        "schemas/doc.json": json.dumps(attr_schema).encode(),
        "doc.yaml": b"""
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: doc}
spec:
  resource: doc
  schemas: {resource: doc.json}
  actions: {read: {}}
  rules:
    - {id: r, actions: [read], effect: allow, roles: [user]}
""",
    }
    from pdp.model.request import parse_check_request

    engine_set = compile_policy_set(load_policy_files(files))
    assert len(calls) == 1
    from pdp.engine import Engine

    engine = Engine(engine_set)

    def read(mail: str) -> str:
        request = parse_check_request(
            {
                "principal": {"id": "u", "tenant": "t", "roles": ["user"]},
                "resources": [
                    {
                        "kind": "doc",
                        "id": "d",
                        "tenant": "t",
                        "attr": {"mail": mail},
                        "actions": ["read"],
                    }
                ],
            }
        )
        return engine.check(request).results[0].actions["read"].effect

    assert read("ann@example.com") == "allow"
    assert read("not an address") == "deny"
    assert read("a" * 250 + "@example.com") == "deny"  # past RFC 5321's bound

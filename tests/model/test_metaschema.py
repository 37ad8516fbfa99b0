"""pdp.model._metaschema's quick check never calls a schema valid that jsonschema's meta-schema
validator refuses, and it does judge the example policies' schemas (else loading them imports
jsonschema again, which is what it is for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.model._metaschema import DRAFT_2020_12, surely_valid

ROOT = Path(__file__).resolve().parents[2]
META = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)

# Per keyword, values on either side of its rule (right and wrong types, negative and float
# counts, duplicates, empty lists, unknown type names, booleans where numbers go), and keywords
# the check leaves to jsonschema.
COUNT = [0, 3, -1, 2.0, True, "1", None]
NUMBER = [0, -1, 2.5, True, "1", None, float("inf")]
TEXT = ["x", "", 1, None]
FLAG = [True, False, 0, 1, "true"]
ANY = [None, 1, "x", [1], {"a": 1}]
VALUES: dict[str, list[Any]] = {
    "title": TEXT, "description": TEXT, "$comment": TEXT, "format": ["email", 1],
    "default": ANY, "const": ANY, "examples": [[], [1], 1], "enum": [[], [1, "a"], "a", {}],
    "deprecated": FLAG, "readOnly": FLAG, "writeOnly": FLAG, "uniqueItems": FLAG,
    "type": ["string", "integer", ["string", "null"], [], ["string", "string"], "strnig", 1,
             ["x"], ["object", 1]],
    "multipleOf": [1, 0.5, 0, -1, True], "maximum": NUMBER, "exclusiveMaximum": NUMBER,
    "minimum": NUMBER, "exclusiveMinimum": NUMBER, "maxLength": COUNT, "minLength": COUNT,
    "maxItems": COUNT, "minItems": COUNT, "maxProperties": COUNT, "minProperties": COUNT,
    "required": [[], ["a"], ["a", "a"], ["a", 1], "a"],
    "$ref": ["#/$defs/a", 1], "pattern": ["^a", 1], "minContains": COUNT, "$id": ["x", 1],
    "$schema": [DRAFT_2020_12, 1], "unknownKeyword": ANY,
}  # fmt: skip
ONE = ["additionalProperties", "items", "contains", "propertyNames", "not"]
MANY = ["allOf", "anyOf", "oneOf", "prefixItems"]
MAPS = ["properties", "$defs"]


def schemas() -> st.SearchStrategy[Any]:
    def build(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        pairs = [st.tuples(st.just(k), st.sampled_from(v)) for k, v in VALUES.items()]
        pairs += [st.tuples(st.sampled_from(ONE), inner | st.sampled_from([1, "x", []]))]
        pairs += [st.tuples(st.sampled_from(MANY), st.lists(inner, max_size=2) | inner)]
        maps = st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
        pairs += [st.tuples(st.sampled_from(MAPS), maps | st.lists(inner, max_size=1))]
        return st.lists(st.one_of(pairs), max_size=5).map(dict) | st.booleans()

    return st.recursive(st.just({}) | st.booleans(), build, max_leaves=10)


def meta_valid(schema: Any) -> bool:
    return not any(META.iter_errors(schema))


@settings(max_examples=1500, deadline=None)
@given(schemas())
def test_a_schema_judged_valid_is_valid_for_jsonschema(schema: Any) -> None:
    if surely_valid(schema):
        assert meta_valid(schema), json.dumps(schema)


@settings(max_examples=300, deadline=None)
@given(schemas(), st.sampled_from([DRAFT_2020_12, "http://json-schema.org/draft-07/schema#", 1]))
def test_only_draft_2020_12_is_judged(schema: Any, declared: Any) -> None:
    if isinstance(schema, dict):
        schema = {**schema, "$schema": declared}
        if surely_valid(schema):
            assert declared == DRAFT_2020_12 and meta_valid(schema), json.dumps(schema)


def test_the_example_schemas_are_judged_without_jsonschema() -> None:
    files = sorted((ROOT / "policies" / "schemas").glob("*.json"))
    assert files
    for path in files:
        assert surely_valid(json.loads(path.read_text())), path.name
    # A fresh interpreter, as `pdp serve` starts: loading the example policies imports no
    # jsonschema (~55 ms of CPU).
    code = (
        "import sys\n"
        "from pdp.model.loader import load_policy_dir\n"
        f"load_policy_dir({str(ROOT / 'policies')!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'jsonschema'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_schema_it_cannot_judge_still_gets_jsonschemas_findings(tmp_path: Path) -> None:
    from pdp.model.loader import load_policy_dir

    (tmp_path / "schemas").mkdir()
    # `minLength: -1` breaks a rule the check knows, `$ref` is one it leaves to jsonschema.
    bad = {"type": "object", "properties": {"a": {"type": "string", "minLength": -1}}}
    (tmp_path / "schemas" / "principal.json").write_text(json.dumps(bad))
    assert not surely_valid(bad)
    try:
        load_policy_dir(str(tmp_path))
    except Exception as exc:  # PolicyErrors: every finding, each at file:line:column
        assert "invalid json schema at `properties/a/minLength`" in str(exc), str(exc)
    else:
        raise AssertionError("an invalid schema loaded")

"""Hostile or broken schema files: each is refused at load as a PDP100 finding (or a load
error) with a position, never a crash; fetching a remote `$ref` is never attempted."""

from __future__ import annotations

import pytest

from pdp.cel import TypeEnv, check_cel, type_from_schema
from pdp.errors import PolicyErrors
from pdp.model.findings import Finding
from pdp.model.loader import load_policy_files

DEEP = '{"type":"object","properties":{"a":' + '{"type":"object","properties":{"a":' * 80
DEEP += "{}" + "}}" * 80 + "}}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type":"object","properties":{"a":{"$ref":"#/$defs/nope"}}}', "cannot be compiled"),
        (
            '{"type":"object","properties":{"a":{"type":"string","pattern":"^(a+)+$"}}}',
            "backtracking",
        ),
        (
            '{"type":"object","patternProperties":{"^x":{"type":"string"}}}',
            "backtracking",
        ),
        (
            '{"type":"object","$defs":{"e":{"type":"string","pattern":"(a|a)*b"}},'
            '"properties":{"a":{"$ref":"#/$defs/e"}}}',
            "backtracking",
        ),
        (
            '{"type":"object","properties":{"a":{"$ref":"http://127.0.0.1:9/x.json"}}}',
            "leaves the file",
        ),
        ('{"type":"object","properties":{"a":{"$ref":"file:///etc/passwd"}}}', "leaves the file"),
        ('{"type":"object","properties":{"a":{"type":"strin"}}}', "invalid json schema"),
        ('{"type":"object","required":"a"}', "invalid json schema"),
        ('{"properties":{}}', '"type": "object"'),
        ("[1, 2]", "must be a json object"),
        ("null", "must be a json object"),
    ],
)
def test_broken_schema_is_a_positioned_finding(text: str, message: str) -> None:
    with pytest.raises(PolicyErrors) as info:
        load_policy_files({"schemas/x.json": text.encode()})
    (err,) = info.value.errors
    assert isinstance(err, Finding) and err.code == "PDP100" and err.severity == "error"
    assert err.location is not None and err.location.file == "schemas/x.json"
    assert message in err.message


@pytest.mark.parametrize(
    "text",
    [DEEP, '{"type": ', '{"type":"object","type":"object"}', "\xff\xfe", "x" * (1024 * 1024 + 1)],
)
def test_malformed_schema_files_are_load_errors(text: str) -> None:
    with pytest.raises(PolicyErrors) as info:
        load_policy_files({"schemas/x.json": text.encode("latin-1")})
    assert info.value.errors[0].location.file == "schemas/x.json"


def test_a_property_named_pattern_is_just_a_property() -> None:
    text = '{"type":"object","properties":{"pattern":{"type":"string"}}}'
    source = load_policy_files({"schemas/x.json": text.encode()})
    assert source.schemas["x.json"].schema["properties"]["pattern"] == {"type": "string"}


def test_a_recursive_schema_loads_and_types_terminate() -> None:
    text = '{"type":"object","properties":{"name":{"type":"string"},"child":{"$ref":"#"}}}'
    source = load_policy_files({"schemas/tree.json": text.encode()})
    schema = source.schemas["tree.json"].schema
    env = TypeEnv(resource_attr=type_from_schema(schema, schema, "schemas/tree.json"))
    near = "R.attr" + ".child" * 10 + ".name"
    assert not check_cel(f'{near} == "x"', env).issues
    assert [i.code for i in check_cel(f"{near} == 1", env).issues] == ["PDP121"]
    # Past a bounded depth the type is `dyn`: checking stays finite, and only warns.
    far = "R.attr" + ".child" * 200 + ".name"
    assert all(i.warning for i in check_cel(f"{far} == 1", env).issues)


def test_a_schema_position_points_into_the_file() -> None:
    text = '{\n  "type": "object",\n  "properties": {\n    "a": {"type": "strin"}\n  }\n}\n'
    with pytest.raises(PolicyErrors) as info:
        load_policy_files({"schemas/x.json": text.encode()})
    err = info.value.errors[0]
    assert (err.location.line, err.location.column) == (4, 19)
    assert err.render().splitlines()[-1].endswith("^")

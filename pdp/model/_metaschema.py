"""A quick check that an attribute schema is valid under JSON Schema 2020-12's meta-schema,
for the keywords attribute schemas mostly use, so that loading them need not import
`jsonschema` (~55 ms of CPU at start-up, more than loading the example policies' other 24
files) to find nothing wrong.

It answers True only when it is sure: every keyword it meets is one of `_CHECKS`, with a value
of the shape the meta-schema requires (the meta-schema's own rules, restated). Anything else —
another keyword, a `$ref`, a subschema's `$schema`, an unusual value (a float where an integer
is wanted, a duplicate in `required`) — answers False, and the caller runs `jsonschema`, whose
findings name what is wrong. So it never decides that a schema is invalid: a False costs the
import, never a wrong verdict. tests/model/test_metaschema.py compares the two on schemas
built to sit on either side of each rule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_SIMPLE_TYPES = frozenset(("array", "boolean", "integer", "null", "number", "object", "string"))


def surely_valid(schema: Any) -> bool:
    """True when `schema` (a file's top-level value, whose draft `jsonschema` would take to be
    2020-12: no `$schema`, or 2020-12's) is valid under the meta-schema; False when it is not,
    or when this check cannot tell."""
    if not isinstance(schema, dict):
        return False
    declared = schema.get("$schema", DRAFT_2020_12)
    if declared != DRAFT_2020_12:
        return False
    return _schema({k: v for k, v in schema.items() if k != "$schema"})


def _schema(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if not isinstance(value, dict):
        return False
    for key, item in value.items():
        check = _CHECKS.get(key)
        if check is None or not check(item):
            return False
    return True


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _string(value: Any) -> bool:
    return type(value) is str


def _boolean(value: Any) -> bool:
    return type(value) is bool


def _unique_strings(value: Any) -> bool:
    return (
        type(value) is list and all(type(v) is str for v in value) and len(set(value)) == len(value)
    )


def _type(value: Any) -> bool:
    if type(value) is str:
        return value in _SIMPLE_TYPES
    return bool(value) and _unique_strings(value) and all(v in _SIMPLE_TYPES for v in value)


def _schema_map(value: Any) -> bool:
    return type(value) is dict and all(_schema(v) for v in value.values())


def _schema_list(value: Any) -> bool:
    return type(value) is list and bool(value) and all(_schema(v) for v in value)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    # meta-data
    "title": _string,
    "description": _string,
    "$comment": _string,
    "default": lambda _v: True,
    "examples": lambda v: type(v) is list,
    "deprecated": _boolean,
    "readOnly": _boolean,
    "writeOnly": _boolean,
    # validation
    "type": _type,
    "const": lambda _v: True,
    "enum": lambda v: type(v) is list,
    "multipleOf": lambda v: _number(v) and v > 0,
    "maximum": _number,
    "exclusiveMaximum": _number,
    "minimum": _number,
    "exclusiveMinimum": _number,
    "maxLength": _count,
    "minLength": _count,
    "maxItems": _count,
    "minItems": _count,
    "uniqueItems": _boolean,
    "maxProperties": _count,
    "minProperties": _count,
    "required": _unique_strings,
    # format-annotation: any string (the meta-schema asserts no format)
    "format": _string,
    # applicator
    "properties": _schema_map,
    "$defs": _schema_map,
    "additionalProperties": _schema,
    "items": _schema,
    "contains": _schema,
    "propertyNames": _schema,
    "not": _schema,
    "allOf": _schema_list,
    "anyOf": _schema_list,
    "oneOf": _schema_list,
    "prefixItems": _schema_list,
}

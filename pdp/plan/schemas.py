"""A kind's attribute schemas, planned: Check denies (or rejects) a resource whose attributes
break its kind's schema before any rule runs, so a plan must leave such resources out.

The principal's and the context's schemas are decided at plan time (a violation denies every
resource: ALWAYS_DENIED `schema_violation`, or the request is refused in `reject` mode). The
resource's schema becomes a conjunct of the filter, exactly, for the keywords that have one:
`type` (string, boolean, number, array, object, null), `enum` of strings and `properties`
(nested). Any other keyword (`items`, `required`, `integer` types, ...) makes the plan refuse
rather than approximate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fastjsonschema

from pdp.engine.schemas import SCHEMA_VIOLATION, KindSchemas, SchemaViolation

from .partial import Unplannable
from .tree import ATTR, TRUE, Formula, Path, and_, atom, not_, or_

# JSON Schema type -> the filter's `is` types (a number is an int or a double; never a bool).
_TYPES: Mapping[str, tuple[str, ...]] = {
    "string": ("string",),
    "boolean": ("bool",),
    "number": ("int", "double"),
    "array": ("list",),
    "object": ("map",),
    "null": ("null",),
}
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples"})
_PLANNED = frozenset({"type", "enum", "properties"})


class SchemaDenied(Exception):
    """The principal's or context's attributes break the kind's schema: every resource is denied."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = SCHEMA_VIOLATION
        self.message = message


def schema_filter(
    schemas: KindSchemas, principal: Mapping[str, Any], context: Mapping[str, Any]
) -> Formula:
    """The conjunct a kind's schemas add to a plan; raises SchemaDenied, SchemaViolation
    (reject mode) or Unplannable."""
    for part, value, where in (
        (schemas.principal, principal.get("attr"), "principal.attr"),
        (schemas.context, context.get("attr"), "context.attr"),
    ):
        if part is None:
            continue
        try:
            part.validate(value or {})
        except fastjsonschema.JsonSchemaValueException as e:
            message = f"`{where}` breaks schema `{part.name}`: {e.message}"
            if schemas.reject:
                raise SchemaViolation(where, message) from None
            raise SchemaDenied(message) from None
    if schemas.resource is None:
        return TRUE
    return _formula(schemas.resource.schema, ATTR, schemas.resource.name)


def _formula(schema: Any, path: Path, name: str) -> Formula:
    if not isinstance(schema, Mapping):
        raise Unplannable(f"schema `{name}`: a boolean subschema cannot be planned")
    unknown = sorted(set(schema) - _ANNOTATIONS - _PLANNED)
    if unknown:
        raise Unplannable(
            f"schema `{name}`: keyword `{unknown[0]}` has no exact filter (the plan would "
            "have to guess which resources break the schema)"
        )
    parts: list[Formula] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if any(n not in _TYPES for n in names):
            raise Unplannable(f"schema `{name}`: type {names} has no exact filter")
        parts.append(or_(*(atom("is", path, ty) for n in names for ty in _TYPES[n])))
    if "enum" in schema:
        values = schema["enum"]
        if not all(isinstance(v, str) for v in values):
            raise Unplannable(f"schema `{name}`: only an `enum` of strings is planned")
        parts.append(atom("in", path, tuple(values)))
    if "properties" in schema:
        children = [
            or_(not_(atom("exists", (*path, key))), _formula(sub, (*path, key), name))
            for key, sub in schema["properties"].items()
        ]
        # `properties` constrains objects only; anything else passes it.
        object_only = types == "object"
        parts.append(
            and_(*children) if object_only else or_(not_(atom("is", path, "map")), and_(*children))
        )
    return and_(*parts)

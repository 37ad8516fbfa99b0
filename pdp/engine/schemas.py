"""Run-time attribute schemas: a kind's principal, resource and context attributes are
validated against the JSON Schemas its policy names, before any rule runs.

What a violation does is the policy's choice (`schemas.enforcement`): `deny` (the default:
every action of that resource is denied with reason `schema_violation`, the message naming the
attribute and the schema rule) or `reject` (the whole request fails with INVALID_ARGUMENT,
`SchemaViolation` being a `RequestError`). Either way nothing is allowed on attributes the
conditions were not written for. Validators are generated once at compile time
(fastjsonschema: ~1.4 µs per valid map; bench/schema_validation.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema

from pdp.errors import RequestError
from pdp.model.schema import compile_validator

SCHEMA_VIOLATION = "schema_violation"


class SchemaViolation(RequestError):
    """A request whose attributes break a schema of a kind in `reject` mode."""


@dataclass(frozen=True, slots=True)
class Violation:
    field: str  # `resources[0].attr.archived`
    message: str  # `must be boolean (schema `conversation.json`: `type: boolean`)`


@dataclass(frozen=True, slots=True)
class _Part:
    name: str  # the schema's name under schemas/
    validate: Callable[[Any], Any]
    # `{}` satisfies the schema (nothing required): an empty attribute map, the common case
    # for principals and contexts, needs no call.
    empty_ok: bool
    schema: Mapping[str, Any] = field(default_factory=dict)  # as written (the planner reads it)


@dataclass(frozen=True, slots=True)
class KindSchemas:
    principal: _Part | None
    resource: _Part | None
    context: _Part | None
    reject: bool

    def violation(
        self,
        principal: Mapping[str, Any],
        resource: Mapping[str, Any],
        context: Mapping[str, Any],
        index: Callable[[], int],
    ) -> Violation | None:
        # Straight-line: this runs for every resource of a kind with schemas.
        try:
            part = self.principal
            if part is not None:
                value = principal.get("attr")
                if value or not part.empty_ok:
                    part.validate(value or _EMPTY)
            part = self.resource
            if part is not None:
                value = resource.get("attr")
                if value or not part.empty_ok:
                    part.validate(value or _EMPTY)
            part = self.context
            if part is not None:
                value = context.get("attr")
                if value or not part.empty_ok:
                    part.validate(value or _EMPTY)
        except fastjsonschema.JsonSchemaValueException as e:
            where = (
                "principal.attr"
                if part is self.principal
                else f"resources[{index()}].attr"
                if part is self.resource
                else "context.attr"
            )
            return _describe(e, part.name, where)  # type: ignore[union-attr]
        return None


_EMPTY: Mapping[str, Any] = {}


def compile_kind_schemas(
    names: tuple[str | None, str | None, str | None],
    schemas: Mapping[str, Any],
    reject: bool,
) -> KindSchemas | None:
    """The validators of one kind; None when it names no schema."""
    parts: list[_Part | None] = []
    for name in names:
        schema = schemas.get(name) if name else None
        if schema is None or not name:
            parts.append(None)
            continue
        validate = compile_validator(schema.schema)
        parts.append(_Part(name, validate, _accepts(validate, {}), schema.schema))
    if not any(parts):
        return None
    return KindSchemas(parts[0], parts[1], parts[2], reject)


def _accepts(validate: Callable[[Any], Any], value: Any) -> bool:
    try:
        validate(value)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def _describe(e: fastjsonschema.JsonSchemaValueException, schema: str, where: str) -> Violation:
    path = [str(p) for p in (e.path or [])[1:]]  # the first element is the root, `data`
    field = ".".join([where, *path])
    # "data.archived must be boolean" -> "must be boolean"
    text = e.message
    name = e.name or "data"
    if text.startswith(name):
        text = text[len(name) :].lstrip()
    rule = e.rule or "schema"
    definition = e.rule_definition
    shown = _short(definition)
    return Violation(field, f"{text} (schema `{schema}`: `{rule}: {shown}`)")


def _short(value: Any) -> str:
    text = str(value).replace("'", '"')
    return text if len(text) <= 80 else text[:77] + "..."

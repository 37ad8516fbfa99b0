"""Attribute schemas: JSON Schema files under `schemas/`, checked when they load.

A schema describes a JSON object: a principal's `attr`, a resource kind's `attr`, or
`context.attr`. It must itself be a valid JSON Schema (checked against its meta-schema: by
pdp.model._metaschema for the common keywords, by `jsonschema` for the rest), have
`type: object` at the top, and refer to nothing outside itself (`$ref` to `#...` only: a bundle
is self-contained, and a validator must never fetch a URL). Problems are `PDP100` findings at
the schema's own line and column.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import fastjsonschema
from yaml.nodes import MappingNode, Node, SequenceNode

from pdp.errors import SourceLocation
from pdp.model._metaschema import surely_valid
from pdp.model._values import load_json
from pdp.model._yaml import FileContext, parse_yaml
from pdp.model.findings import Finding, caret

SCHEMA_ERROR = "PDP100"


def load_schema(ctx: FileContext, text: str) -> dict[str, Any] | None:
    """The schema of one file, or None after recording why it cannot be used."""
    before = len(ctx.errors)
    value = load_json(ctx, text)
    if len(ctx.errors) > before:
        return None
    raw = text.encode()

    @functools.cache
    def tree() -> Node | None:
        # JSON is YAML 1.2: the position-keeping composer gives every value its line and
        # column. Composed for a schema with an error only (a served one has none).
        return parse_yaml(FileContext(ctx.file, []), text)

    def report(message: str, path: list[str | int]) -> None:
        node = _node_at(tree(), path) if tree() is not None else None
        loc = (
            SourceLocation(ctx.file, node.start_mark.line + 1, node.start_mark.column + 1)
            if node is not None
            else SourceLocation(ctx.file, 1, 1)
        )
        ctx.errors.append(
            Finding(SCHEMA_ERROR, "error", message, loc, snippet=caret({ctx.file: raw}, loc))
        )

    if not isinstance(value, dict):
        report("a schema must be a json object", [])
        return None
    # A schema of the common keywords is judged here; jsonschema (imported only for the
    # others, or to say what is wrong) would take longer to import than the check takes.
    bad = False
    if not surely_valid(value):
        for err in _meta_errors(value):
            bad = True
            where = "/".join(map(str, err.absolute_path)) or "the schema"
            report(
                f"invalid json schema at `{where}`: {_short(err.message)}", list(err.absolute_path)
            )
        if bad:
            return None
    if value.get("type") != "object":
        report('an attribute schema must have `"type": "object"` at the top', ["type"])
        return None
    for path in _regex_keywords(value, []):
        if path[-1] == "format":  # `format: regex`: the caller's value is the pattern
            report(
                "`format: regex` compiles each caller's value as a pattern of a backtracking "
                "regular-expression engine (0.1 s and hundreds of KB kept per 60 KB value), so "
                "a caller could stall the server and fill its memory; drop it, or check the "
                "value with CEL",
                path,
            )
        else:
            report(
                f"`{path[-1]}` is matched by a backtracking regular-expression engine, so a "
                "caller's attribute could stall the server; use `enum`, or a CEL `matches` "
                "condition (RE2, linear time)",
                path,
            )
        bad = True
    for path, ref in _refs(value, []):
        if not isinstance(ref, str) or not ref.startswith("#"):
            report(
                f"`$ref` `{ref}` leaves the file; only local `#...` references are allowed", path
            )
            bad = True
    if bad:
        return None
    try:
        compile_validator(value)
    except Exception as e:  # an unresolvable `$ref`, a bad `pattern` (re.error), ...
        report(f"schema cannot be compiled: {_short(str(e))}", [])
        return None
    return value


def _meta_errors(schema: dict[str, Any]) -> list[Any]:
    """jsonschema's findings against the meta-schema of `schema`'s draft, in path order."""
    import jsonschema  # here, not at the top: ~55 ms of start-up, needless for most schemas

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    errors = _meta_validator(cls).iter_errors(schema)
    return sorted(errors, key=lambda e: list(map(str, e.absolute_path)))


@functools.cache
def _meta_validator(cls: Any) -> Any:
    """One meta-schema validator per draft, for every schema loaded: each new one resolves
    the draft's vocabularies again on its first use."""
    return cls(cls.META_SCHEMA)


def compile_validator(schema: dict[str, Any]) -> Any:
    """A fast validator (generated code) for `schema`. Loading a schema compiles it to check
    that it compiles, and compiling the policies compiles it again for the engine: the second
    is the first one's (same JSON, same validator; the generated code keeps no state).

    `handlers={}`: a remote `$ref` fails instead of being fetched (load_schema refuses those
    anyway). `formats`: the length-bounded checks of `_bounded_formats`.
    """
    return _compile_validator(json.dumps(schema))


@functools.lru_cache(maxsize=256)
def _compile_validator(text: str) -> Any:
    schema = json.loads(text)
    formats = _bounded_formats(_generator(schema).FORMAT_REGEXS)
    return fastjsonschema.compile(schema, handlers={}, formats=formats, use_default=False)


# fastjsonschema checks a `format` with its own regular expressions on Python's backtracking
# `re`, on caller-supplied attributes. Those of `email` and `idn-email` take time quadratic in
# the value (a 64 KB `idn-email` of dots: about 20 s per validation, the GIL held, for each
# resource of a batch). The formats whose grammar bounds their length are checked only within
# that length, a longer value failing as its RFC says it must: RFC 5321's 256-octet path less
# its `<>` for an address, RFC 1035's 255 octets (253 characters as text) for a host name.
FORMAT_MAX_LENGTH = {
    "email": 254,
    "idn-email": 254,
    "hostname": 253,
    "idn-hostname": 253,
    "ipv4": 15,
    "ipv6": 45,
}


def _generator(schema: dict[str, Any]) -> Any:
    """The code generator fastjsonschema picks for `schema` (by its `$schema`)."""
    from fastjsonschema import _get_code_generator_class

    return _get_code_generator_class(schema)


def _bounded_formats(regexes: dict[str, str]) -> dict[str, Any]:
    """The draft's own format checks, for the formats of `FORMAT_MAX_LENGTH` it checks at
    all, run only on values within the bound."""
    out: dict[str, Any] = {}
    for name, limit in FORMAT_MAX_LENGTH.items():
        if name in regexes:
            # Compiled on first use: most schemas use none of these formats, and compiling
            # them all for every schema was ~20 ms of start-up.
            match = _lazy_match(regexes[name])
            out[name] = lambda value, match=match, limit=limit: (
                len(value) <= limit and match(value) is not None
            )
    return out


def _lazy_match(pattern: str) -> Callable[[str], Any]:
    def match(value: str) -> Any:
        return _compiled(pattern).match(value)

    return match


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _short(message: str) -> str:
    message = message.replace("'", "`").strip().rstrip(".")
    return message if len(message) <= 200 else message[:197] + "..."


# Where a JSON Schema keeps subschemas: maps of them, lists of them, and single ones.
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
)


def _regex_keywords(schema: Any, path: list[str | int]) -> Iterator[list[str | int]]:
    """Paths of `pattern` and `patternProperties` keywords (not of properties so named), and
    of `format: regex`.

    fastjsonschema runs them on Python's backtracking `re` (`format: regex` compiles the
    caller's value): pdp's regexes run on RE2 only.
    """
    if not isinstance(schema, dict):
        return
    for keyword in ("pattern", "patternProperties"):
        if keyword in schema:
            yield [*path, keyword]
    if schema.get("format") == "regex":
        yield [*path, "format"]
    for key in _SCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            for name, sub in schema[key].items():
                yield from _regex_keywords(sub, [*path, key, name])
    for key in _SCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                yield from _regex_keywords(sub, [*path, key, i])
    for key in _SCHEMA_ONE:
        if key in schema:
            yield from _regex_keywords(schema[key], [*path, key])


def _refs(value: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref":
                yield [*path, k], v
            else:
                yield from _refs(v, [*path, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _refs(v, [*path, i])


def _node_at(node: Node, path: list[str | int]) -> Node:
    """The deepest node along `path` (a mapping value, or the key when the value is a scalar)."""
    for step in path:
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if k.value == step:
                    node = v
                    break
            else:
                return node
        elif isinstance(node, SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            return node
    return node

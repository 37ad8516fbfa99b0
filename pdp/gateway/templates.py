"""Value templates of the route mapping: `"{doc}"`, `"{claims.org.id}"`, `"kb-{kb}"`.

A template is parsed once at load. A template that is exactly one placeholder yields the raw
value (so `"{claims.mfa}"` stays a bool); anything else renders to a string. Unknown
namespaces and unknown path parameters are load errors, never an empty string at run time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACES = ("claims", "header", "query", "principal")
# Bare names are path parameters; `method` and `path` are the request's own.
BUILTINS = ("method", "path")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEY = re.compile(r"^[A-Za-z0-9_.:\-]+$")
# A claim path: `org.id` reaches into objects; `["org.id"]` names one claim whose name has dots.
_CLAIM_BARE = re.compile(r"[A-Za-z0-9_\-]+")
_CLAIM_QUOTED = re.compile(r"\[(?:\"([^\"]+)\"|'([^']+)')\]")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Ref:
    namespace: str  # "param", "claims", "header", "query", "principal", "method", "path"
    key: str
    steps: tuple[str, ...] = ()  # claims: the parsed claim path


@dataclass(slots=True)
class RenderEnv:
    """What a template can read; built once per HTTP request."""

    method: str = ""
    path: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case keys
    query: Mapping[str, str] = field(default_factory=dict)
    claims: Mapping[str, Any] = field(default_factory=dict)
    principal: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Template:
    raw: str
    parts: tuple[str | Ref, ...]

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.parts if isinstance(p, Ref))

    def render(self, env: RenderEnv) -> Any:
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return _lookup(self.parts[0], env)
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _lookup(part, env)
            out.append("" if value is None else value if isinstance(value, str) else _text(value))
        return "".join(out)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def dig(obj: Any, dotted: str) -> Any:
    """`a.b.c` inside nested dicts; None when any step is missing."""
    for step in dotted.split("."):
        if not isinstance(obj, Mapping) or step not in obj:
            return None
        obj = obj[step]
    return obj


def parse_claim_path(text: str) -> tuple[str, ...]:
    """`org.id` -> ("org", "id"); `["org.id"]` -> ("org.id",); `["https://x/c"].t` -> 2 steps.

    A dot always reaches into an object, as in Envoy's `claim_name` and Rego's `claims.org.id`;
    a claim whose own name holds a dot (or anything but letters, digits, `_`, `-`) is named in
    brackets. One spelling, one claim: a token cannot add a flat `org.id` to override the nested
    `org: {id}` the operator meant (nor the reverse).
    """
    steps: list[str] = []
    pos = 0
    while pos < len(text):
        if text.startswith("[", pos):
            quoted = _CLAIM_QUOTED.match(text, pos)
            if quoted is None:
                raise TemplateError(
                    f'bad claim path `{text}`: a bracketed name is quoted, as in `["org.id"]`'
                )
            steps.append(quoted.group(1) if quoted.group(1) is not None else quoted.group(2))
            pos = quoted.end()
            continue
        if steps:
            if not text.startswith(".", pos):
                raise TemplateError(f"bad claim path `{text}`: expected `.` or `[` at {pos}")
            pos += 1
        bare = _CLAIM_BARE.match(text, pos)
        if bare is None or (bare.end() < len(text) and text[bare.end()] not in ".["):
            raise TemplateError(
                f"bad claim path `{text}`: a dot reaches into an object; name a claim "
                'holding `.`, `/` or `:` in brackets, as in `["https://example.com/tenant"]`'
            )
        steps.append(bare.group(0))
        pos = bare.end()
    if not steps:
        raise TemplateError("empty claim path")
    return tuple(steps)


def claim_at(claims: Any, steps: tuple[str, ...]) -> Any:
    for step in steps:
        if not isinstance(claims, Mapping) or step not in claims:
            return None
        claims = claims[step]
    return claims


def _lookup(ref: Ref, env: RenderEnv) -> Any:
    ns, key = ref.namespace, ref.key
    if ns == "param":
        return env.params.get(key)
    if ns == "claims":
        return claim_at(env.claims, ref.steps)
    if ns == "header":
        return env.headers.get(key)
    if ns == "query":
        return env.query.get(key)
    if ns == "principal":
        return dig(env.principal, key)
    if ns == "method":
        return env.method
    return env.path


def parse_template(raw: str, params: frozenset[str] | None) -> Template:
    """Parse `raw`; `params` are the path parameters in scope (None: none allowed)."""
    parts: list[str | Ref] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(raw):
        if m.start() > pos:
            parts.append(raw[pos : m.start()])
        parts.append(_ref(m.group(1).strip(), params))
        pos = m.end()
    tail = raw[pos:]
    if "{" in tail or "}" in tail:
        raise TemplateError(f"unbalanced braces in template `{raw}`")
    if tail:
        parts.append(tail)
    return Template(raw=raw, parts=tuple(parts))


def _ref(text: str, params: frozenset[str] | None) -> Ref:
    if params is not None and text in params:  # a route's own names win over the builtins
        return Ref("param", text)
    if text in BUILTINS:
        return Ref(text, "")
    if text.startswith(("claims.", "claims[")):
        key = text[len("claims") :]
        key = key[1:] if key.startswith(".") else key
        return Ref("claims", key, parse_claim_path(key))
    ns, dot, key = text.partition(".")
    if dot:
        if ns not in NAMESPACES:
            choices = ", ".join(f"`{n}.`" for n in NAMESPACES)
            raise TemplateError(f"unknown placeholder `{{{text}}}`: namespaces are {choices}")
        if not _KEY.match(key):
            raise TemplateError(f"bad key in placeholder `{{{text}}}`")
        return Ref(ns, key.lower() if ns == "header" else key)
    if not _NAME.match(text):
        raise TemplateError(f"bad placeholder `{{{text}}}`")
    if params is None or text not in params:
        known = ", ".join(f"`{p}`" for p in sorted(params or ()))
        raise TemplateError(
            f"`{{{text}}}` is not a path parameter of this route"
            + (f" (it has {known})" if known else "")
        )
    return Ref("param", text)


def parse_value(value: Any, params: frozenset[str] | None) -> Template | Any:
    """A mapping value: strings are templates, other JSON values are literals."""
    if isinstance(value, str):
        return parse_template(value, params)
    return value


def render_value(value: Template | Any, env: RenderEnv) -> Any:
    if isinstance(value, Template):
        return value.render(env)
    return value

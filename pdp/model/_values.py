"""Value helpers of the policy loader: conditions, variables, rule fields, JSON data files."""

from __future__ import annotations

import json
import re
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pdp.errors import SourceLocation
from pdp.model._yaml import (
    BOOL,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    NULL,
    Fields,
    FileContext,
    did_you_mean,
    expr_location,
    is_str,
    type_name,
)
from pdp.model.policy import WILDCARD, Condition, ConditionGroup, Expr, Suppression

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def seq_items(node: SequenceNode | None) -> list[Node]:
    return list(node.value) if node is not None else []


def name_list(
    items: list[tuple[str, Node]] | None, ctx: FileContext, sink: list[tuple[str, SourceLocation]]
) -> tuple[str, ...]:
    for name, node in items or ():
        sink.append((name, ctx.loc(node)))
    return tuple(name for name, _ in items or ())


def opt_name_list(items: list[tuple[str, Node]] | None) -> tuple[str, ...] | None:
    return None if items is None else tuple(name for name, _ in items)


def rule_id(ctx: FileContext, r: Fields, seen: dict[str, SourceLocation], what: str) -> str:
    rid = r.str("id", required=True)
    if rid:
        if rid in seen:
            ctx.error(
                f"duplicate {what} id `{rid}` (first defined at line {seen[rid].line})", r.get("id")
            )
        else:
            seen[rid] = ctx.loc(r.get("id"))
    return rid


def refuse_null(ctx: FileContext, f: Fields, *keys: str) -> None:
    """Report each of `keys` written without a value (`condition:`, `roles: ~`).

    A null reads as an absent key, and an absent `condition` or `roles` means "everyone": an
    allow rule whose condition was left blank (or emptied by a template) would allow every
    principal. The author must either give the value or remove the key.
    """
    for key in keys:
        entry = f.items.get(key)
        if entry is not None and isinstance(entry[1], ScalarNode) and entry[1].tag == NULL:
            ctx.error(f"`{key}` has no value; give it one, or remove the key", entry[1])


def rule_actions(ctx: FileContext, r: Fields, declared: set[str], check: bool) -> tuple[str, ...]:
    items = r.str_list("actions", required=True) or []
    for name, node in items:
        if check and name != WILDCARD and name not in declared:
            hint = did_you_mean(name, declared)
            ctx.error(f"action `{name}` is not declared in the policy's `actions`{hint}", node)
    return tuple(name for name, _ in items)


def parse_variables(ctx: FileContext, node: MappingNode | None) -> dict[str, Expr]:
    out: dict[str, Expr] = {}
    if node is None:
        return out
    for name, (key, value) in Fields(ctx, node, None, "`variables`").items.items():
        if not _IDENT.match(name):
            ctx.error(f"variable name `{name}` is not a valid identifier", key)
            continue
        expr = condition(ctx, value, what=f"variable `{name}`")
        if isinstance(expr, ConditionGroup):
            ctx.error(f"variable `{name}` must be a CEL string, got a mapping", value)
        elif expr is not None:
            out[name] = expr
    return out


_GROUP_OPS = ("all", "any", "none")


def condition(ctx: FileContext, node: Node | None, what: str = "`condition`") -> Condition | None:
    """A CEL string → `Expr`; `{all|any|none: [...]}` → `ConditionGroup`; else an error."""
    if node is None:
        return None
    if isinstance(node, ScalarNode) and (is_str(node) or node.tag == BOOL):
        if not node.value.strip():
            ctx.error(f"{what} must not be empty", node)
            return None
        # A bare `true`/`false` is valid CEL, so the raw text is kept as the expression.
        return Expr(node.value, expr_location(ctx, node))
    if isinstance(node, MappingNode) and len(node.value) == 1:
        key, items = node.value[0]
        if is_str(key) and key.value in _GROUP_OPS:
            if not isinstance(items, SequenceNode) or not items.value:
                ctx.error(f"`{key.value}` must be a non-empty list of conditions", items)
                return None
            parts = [condition(ctx, item, what="a condition") for item in items.value]
            if any(p is None for p in parts):
                return None
            return ConditionGroup(
                key.value, tuple(p for p in parts if p is not None), ctx.loc(node)
            )  # type: ignore[arg-type]
    ctx.error(
        f"{what} must be a CEL string or a mapping with one key of `all`, `any`, `none`, got {type_name(node)}",
        node,
    )
    return None


def load_json(ctx: FileContext, text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate key `{k}`")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"`{name}` is not valid json")

    def integer(text: str) -> int:
        n = int(text)
        if not INT64_MIN <= n <= INT64_MAX:
            raise ValueError(f"`{text[:64]}` is out of range (integers are 64-bit)")
        return n

    try:
        value = json.loads(
            text, object_pairs_hook=pairs, parse_constant=constant, parse_int=integer
        )
    except json.JSONDecodeError as e:
        ctx.error_at(
            f"malformed json: {e.msg.lower()}", SourceLocation(ctx.file, e.lineno, e.colno)
        )
        return None
    except (ValueError, RecursionError) as e:
        ctx.error(
            f"malformed json: {e}"
            if isinstance(e, ValueError)
            else "malformed json: nested too deeply"
        )
        return None
    if _depth(value) > MAX_DEPTH:
        ctx.error(f"json nested deeper than {MAX_DEPTH} levels")
        return None
    if "\\u" in text and not _json_text(ctx, text):
        return None
    return value


# An escaped backslash (skipped), a high surrogate escape with its low one (a character), or a
# surrogate escape on its own (no character at all).
_SURROGATE_ESCAPE = re.compile(
    r"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


def _json_text(ctx: FileContext, text: str) -> bool:
    """False (errors recorded at each escape) when a JSON string holds a lone surrogate."""
    ok = True
    for m in _SURROGATE_ESCAPE.finditer(text):
        if len(m.group()) == 6:
            line = text.count("\n", 0, m.start()) + 1
            column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
            ctx.error_at(
                "string holds an unpaired surrogate (a `\\ud800`-style escape)",
                SourceLocation(ctx.file, line, column),
            )
            ok = False
    return ok


def _depth(value: Any) -> int:
    # Iterative: the value may be nested just under the recursion limit.
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


_CODE = re.compile(r"^PDP[0-9]{3}$")


def suppressions(ctx: FileContext, f: Fields) -> tuple[Suppression, ...]:
    """`suppress: [{code: PDP109, reason: why}]`; a suppression without a reason is an error."""
    out = []
    for item in seq_items(f.sequence("suppress")):
        s = Fields(ctx, item, ("code", "reason"), "a `suppress` entry")
        if not s.ok:
            continue
        code = s.str("code", required=True)
        reason = s.str("reason", required=True)
        if code and not _CODE.match(code):
            ctx.error(f"`{code}` is not a finding code (`PDP` and three digits)", s.get("code"))
            continue
        if code and reason.strip():
            out.append(Suppression(code=code, reason=reason, location=ctx.loc(item)))
    return tuple(out)

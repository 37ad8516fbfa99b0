"""`LimitPolicy` documents: rate limits and quotas, written and reviewed like access rules.

```yaml
kind: LimitPolicy
spec:
  limits:
    - id: tenant-model-tokens
      resources: [model]
      actions: [invoke]
      key: P.tenant                 # who is counted (CEL)
      cost: context.attr.tokens     # what one call takes (CEL, default 1)
      limit: 100000                 # units per `per`
      per: 1m                       # 1s, 10s, 1m, 1h, 1d, or second/minute/hour/day
      burst: 150000                 # bucket size (default: limit)
```
"""

from __future__ import annotations

import re

from yaml.nodes import Node, ScalarNode

from pdp.errors import SourceLocation
from pdp.model._values import (
    condition,
    name_list,
    parse_variables,
    refuse_null,
    rule_id,
    seq_items,
    suppressions,
)
from pdp.model._yaml import INT, Fields, FileContext, type_name
from pdp.model.policy import Expr, Limit, LimitPolicy

_SPEC_KEYS = ("imports", "variables", "limits", "suppress")
_LIMIT_KEYS = (
    "id",
    "description",
    "resources",
    "actions",
    "key",
    "cost",
    "limit",
    "per",
    "burst",
    "condition",
    "onStoreError",
    "suppress",
)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_WORDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_DURATION = re.compile(r"^([1-9][0-9]{0,8})(ms|s|m|h|d)$")
# Beyond this a counter would outlive any reasonable retention of its key, and a bucket
# this large is a typo, not a limit.
MAX_WINDOW_SECONDS = 366 * 86400.0
MAX_AMOUNT = 10**12


def parse_period(text: str) -> float | None:
    """`per` in seconds, or None when it is not a duration we accept."""
    if text in _WORDS:
        return _WORDS[text]
    m = _DURATION.match(text)
    if m is None:
        return None
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    return seconds if 0 < seconds <= MAX_WINDOW_SECONDS else None


def _amount(ctx: FileContext, f: Fields, key: str, *, required: bool) -> int | None:
    node = f.get(key, required=required)
    if node is None:
        return None
    if not (isinstance(node, ScalarNode) and node.tag == INT):
        ctx.error(f"`{key}` must be a whole number, got {type_name(node)}", node)
        return None
    text = node.value.lower()
    value = int(text, 0) if text.startswith(("0x", "0o")) else int(text)
    if not 0 < value <= MAX_AMOUNT:
        ctx.error(f"`{key}` must be between 1 and {MAX_AMOUNT}, got {value}", node)
        return None
    return value


def _expr(ctx: FileContext, node: Node | None, what: str) -> Expr | None:
    cond = condition(ctx, node, what=what)
    if cond is not None and not isinstance(cond, Expr):
        ctx.error(f"{what} must be a CEL string", node)
        return None
    return cond


def load_limit_policy(
    ctx: FileContext,
    spec: Node,
    doc_id: str,
    description: str,
    location: SourceLocation,
    imports_sink: list[tuple[str, SourceLocation]],
) -> LimitPolicy | None:
    f = Fields(ctx, spec, _SPEC_KEYS, "`spec`")
    if not f.ok:
        return None
    imports = name_list(f.str_list("imports"), ctx, imports_sink)
    variables = parse_variables(ctx, f.mapping("variables"))
    limits: list[Limit] = []
    ids: dict[str, SourceLocation] = {}
    for item in seq_items(f.sequence("limits", required=True)):
        r = Fields(ctx, item, _LIMIT_KEYS, "a limit")
        if not r.ok:
            continue
        refuse_null(ctx, r, "condition")
        lid = rule_id(ctx, r, ids, "limit")
        resources = tuple(n for n, _ in r.str_list("resources", required=True) or ())
        actions = tuple(n for n, _ in r.str_list("actions", required=True) or ())
        key = _expr(ctx, r.get("key", required=True), "`key`")
        amount = _amount(ctx, r, "limit", required=True)
        burst = _amount(ctx, r, "burst", required=False)
        per_text = r.str("per", required=True)
        per = parse_period(per_text) if per_text else None
        if per_text and per is None:
            ctx.error(
                f"`per` must be a duration such as `1s`, `10m`, `1h`, `1d` (at most 366 days) "
                f"or one of `second`, `minute`, `hour`, `day`, got `{per_text}`",
                r.get("per"),
            )
        on_error = r.choice("onStoreError", ("deny", "allow"), default="deny")
        if key is None or amount is None or per is None:
            continue
        limits.append(
            Limit(
                id=lid,
                resources=resources,
                actions=actions,
                key=key,
                limit=amount,
                per_seconds=per,
                location=ctx.loc(item),
                burst=burst,
                cost=_expr(ctx, r.get("cost"), "`cost`"),
                condition=condition(ctx, r.get("condition")),
                on_store_error=on_error,  # type: ignore[arg-type]
                description=r.str("description"),
                suppress=suppressions(ctx, r),
            )
        )
    return LimitPolicy(
        id=doc_id,
        file=ctx.file,
        location=location,
        limits=tuple(limits),
        imports=imports,
        variables=variables,
        description=description,
        suppress=suppressions(ctx, f),
        import_locations=tuple(loc for _, loc in imports_sink),
    )

"""Human-readable decisions for `pdp check`: a table, and the explain trace as a story.

Works on the JSON shape of `CheckResponse.to_dict()` (the same one `--output json` prints), so
what a reader sees and what a program reads never disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# Outcomes as a sentence fragment.
_OUTCOME = {
    "matched": "matched",
    "not_matched": "did not match",
    "error": "failed with an error",
    "skipped": "skipped",
    "passed": "passed",
    "failed": "failed",
}
_SKIPPED_BECAUSE = {
    "roles": "the principal holds none of its roles or derived roles",
    "derived_roles": "none of its derived roles applies",
    "actions": "it does not cover this action",
}
# Request paths a condition reads: `principal.attr.x`, `R.attr.owner`, `context.ip`, ...
_PATH = re.compile(r"\b(principal|resource|context|actor|P|R)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_ALIAS = {"P": "principal", "R": "resource"}
_MISSING = object()


def table(response: Mapping[str, Any]) -> str:
    """One line per resource and action: effect, deciding rule, reasons, obligations."""
    rows = [("RESOURCE", "ACTION", "EFFECT", "RULE", "REASONS", "OBLIGATIONS")]
    for result in response.get("results", []):
        resource = f"{result['kind']}/{result['id']}"
        for action, d in result["actions"].items():
            rule = f"{d['policy']}/{d['rule']}" if d.get("rule") else "-"
            obligations = ", ".join(f"{k}={_short(v)}" for k, v in d["obligations"].items())
            rows.append(
                (resource, action, d["effect"], rule, ", ".join(d["reasons"]), obligations or "-")
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [_header(response)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    messages = [
        f"  {r['kind']}/{r['id']} {a}: {d['message']}"
        for r in response.get("results", [])
        for a, d in r["actions"].items()
        if d.get("message")
    ]
    if messages:
        lines += ["", "messages:", *messages]
    return "\n".join(lines)


def story(response: Mapping[str, Any], request: Mapping[str, Any]) -> str:
    """Each action's trace as numbered steps naming the policy, rule, condition and values."""
    lines = [_header(response)]
    resources = request.get("resources") or []
    for i, result in enumerate(response.get("results", [])):
        raw = resources[i] if i < len(resources) and isinstance(resources[i], dict) else {}
        activation = _activation(request, raw)
        for action, d in result["actions"].items():
            rule = f" by {d['policy']}/{d['rule']}" if d.get("rule") else ""
            reasons = f" ({', '.join(d['reasons'])})" if d["reasons"] else ""
            lines += ["", f"{result['kind']}/{result['id']} {action}: {d['effect']}{rule}{reasons}"]
            for n, step in enumerate(d.get("trace", []), 1):
                lines += _step(n, step, activation)
            trace = d.get("trace") or [{}]
            if d.get("message") and d["message"] != trace[-1].get("detail"):
                lines.append(f"   => {d['message']}")
            for error in d.get("errors", []):
                lines.append(f"   error: {error}")
            if d["obligations"]:
                lines.append(f"   obligations: {json.dumps(d['obligations'], sort_keys=True)}")
    return "\n".join(lines)


def _header(response: Mapping[str, Any]) -> str:
    b = response.get("bundle", {})
    revision = f", revision {b['revision'][:12]}" if b.get("revision") else ""
    return f"bundle {b.get('name')} {b.get('version')}{revision}; decision {response.get('decision_id')}"


def _step(n: int, step: Mapping[str, Any], activation: Mapping[str, Any]) -> list[str]:
    stage, outcome, detail = step["stage"], step["outcome"], step.get("detail", "")
    subject = "/".join(p for p in (step.get("policy"), step.get("rule")) if p)
    head = f"{n:>4}. {stage} {subject}: {_OUTCOME.get(outcome, outcome)}"
    if outcome == "skipped":
        return [f"{head} ({_SKIPPED_BECAUSE.get(detail, detail)})" if detail else head]
    if stage in ("tenant", "scope") or not _PATH.search(detail):
        return [f"{head} ({detail})" if detail else head]
    lines = [head, f"        when {detail}"]
    values = _values(detail, activation)
    if values:
        lines.append("        with " + ", ".join(f"{k} = {v}" for k, v in values))
    return lines


def _activation(request: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any]:
    principal = request.get("principal") or {}
    return {
        "principal": principal,
        "resource": resource,
        "context": request.get("context") or {},
        "actor": principal.get("actor") if isinstance(principal, dict) else None,
    }


def _values(condition: str, activation: Mapping[str, Any]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for m in _PATH.finditer(condition):
        root = _ALIAS.get(m[1], m[1])
        path = f"{root}{m[2]}"
        if path in seen:
            continue
        value: Any = activation.get(root)
        for part in m[2][1:].split("."):
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                break
        seen[path] = "(absent)" if value is _MISSING else _short(value)
    return list(seen.items())


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""Print `make mutation`'s result: the score per module and every surviving mutant, triaged.

Reads what mutmut left under `mutants/` (its per-file `.meta` results and the mutated copies,
from which each mutant's diff is rebuilt) and `tests/mutation/triage.toml`, the committed list
of survivors judged harmless, each with its reason. A survivor not in that list is printed as
UNTRIAGED and makes the exit status 1: it is either a missing test or a new entry to justify.

    python tests/mutation/report.py [--markdown]
"""

from __future__ import annotations

import ast
import difflib
import json
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = ROOT / "mutants"
TRIAGE = Path(__file__).with_name("triage.toml")

# mutmut's exit codes (mutmut/stats.py): a mutant is killed when its tests fail or time out.
KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout"}
SURVIVED = 0
NO_TESTS = {5, 33}


def modules() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(pyproject["tool"]["mutmut"]["only_mutate"])


def function_sources(path: Path) -> dict[str, str]:
    """Every function in a mutated file by name, the trampoline variants included."""
    text = path.read_text()
    lines = text.splitlines()
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            out[node.name] = "\n".join(lines[node.lineno - 1 : node.end_lineno])
    return out


def diff_of(key: str, sources: dict[str, str]) -> str:
    local = key.rsplit(".", 1)[-1] if "ǁ" not in key else "xǁ" + key.split(".xǁ", 1)[-1]
    base = local.rsplit("__mutmut_", 1)[0]
    orig, mutant = sources.get(base + "__mutmut_orig"), sources.get(local)
    if orig is None or mutant is None:
        return "(source not found)"
    name = local.split("__mutmut_")[0]
    mutant = mutant.replace(local, base + "__mutmut_orig", 1)
    lines = difflib.unified_diff(orig.splitlines(), mutant.splitlines(), lineterm="", n=0)
    body = [x for x in lines if x[:1] in "+-" and x[:3] not in ("+++", "---")]
    return f"{name}: " + " | ".join(x.strip() if x[0] != "-" else x.rstrip() for x in body)


def main() -> int:
    markdown = "--markdown" in sys.argv
    tables = tomllib.loads(TRIAGE.read_text())
    triage: dict[str, str] = tables.get("equivalent", {})
    # Survivors of the last run that a test added since kills (checked by applying the mutation
    # by hand); the next run confirms them, and then these entries are simply unused.
    killed_since = set(tables.get("killed_after_run", {}))
    triage |= {k: f"KILLED since: {v}" for k, v in tables.get("killed_after_run", {}).items()}
    untriaged = 0
    total_killed = total_live = 0
    lines: list[str] = []
    for module in modules():
        meta_path = MUTANTS / (module + ".meta")
        if not meta_path.exists():
            lines.append(f"{module}: not run")
            continue
        codes = json.loads(meta_path.read_text())["exit_code_by_key"]
        timeouts = sum(1 for c in codes.values() if KILLED.get(c) == "timeout")
        counts = Counter(
            "killed"
            if c in KILLED
            else "survived"
            if c == SURVIVED
            else "no tests"
            if c in NO_TESTS
            else "not checked"
            if c is None
            else "other"
            for c in codes.values()
        )
        judged = counts["killed"] + counts["survived"] + counts["no tests"]
        score = 100.0 * counts["killed"] / judged if judged else 0.0
        total_killed += counts["killed"]
        total_live += judged
        since = sum(
            1 for k, c in codes.items() if k in killed_since and (c == SURVIVED or c in NO_TESTS)
        )
        after = 100.0 * (counts["killed"] + since) / judged if judged else 0.0
        lines.append(
            f"{module}: score {score:.1f}% — {counts['killed']} killed ({timeouts} by timeout), "
            f"{counts['survived']} survived, {counts['no tests']} not covered, "
            f"{counts['not checked']} not run; {since} survivors killed since by new tests "
            f"(score with them {after:.1f}%)"
        )
        sources = function_sources(MUTANTS / module)
        for key, code in sorted(codes.items()):
            if code != SURVIVED and code not in NO_TESTS:
                continue
            reason = triage.get(key)
            if reason is None:
                untriaged += 1
                reason = "UNTRIAGED"
            what = "survived" if code == SURVIVED else "not covered"
            entry = f"{key} [{what}] {diff_of(key, sources)}\n      → {reason}"
            lines.append(f"- `{entry}`" if markdown else f"  {entry}")
    overall = 100.0 * total_killed / total_live if total_live else 0.0
    lines.append(f"overall: {overall:.1f}% of {total_live} judged mutants killed")
    lines.append(f"untriaged survivors: {untriaged}")
    print("\n".join(lines))
    return 1 if untriaged else 0


if __name__ == "__main__":
    sys.exit(main())

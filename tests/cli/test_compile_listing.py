"""`pdp compile`: the Python each CEL condition runs, readable and faithful.

Each block it prints must be valid Python, indented by four spaces, under a comment naming the
policy, the rule and the file:line where the condition is written; and compiling the block as
shown must give the function the engine runs (same values, same errors, same decisions).
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pdp.cel import CelEvalError
from pdp.cli._common import load_and_compile
from pdp.cli.main import main
from pdp.engine import Engine
from pdp.engine.compile_listing import opaque_globals, python_listing, runtime_globals
from pdp.model.loader import load_policy_dir
from pdp.model.request import parse_check_request

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "policies"
HEADER = re.compile(r"^# policy `([^`]+)`, ([a-z -]+) `([^`]+)` \(([^:]+):(\d+):(\d+)\)$")

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {}
    edit: {}
    share: {}
  rules:
    - id: owner-or-level
      actions: [read]
      effect: allow
      condition: R.attr.owner == P.id || P.attr.level >= 3
    - id: editors
      actions: [edit]
      effect: allow
      condition: >-
        P.id in R.attr.editors &&
        !(R.attr.locked == true) &&
        R.attr.tags.exists(t, t.startsWith("draft"))
    - id: share-small
      actions: [share]
      effect: allow
      condition: size(R.attr.editors) < 3 && R.attr.title.size() > 0
"""


def blocks(text: str) -> list[str]:
    return [b for b in text.strip().split("\n\n") if b]


def run_listing(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["compile", *args])
    return code, capsys.readouterr().out


def shown_function(block: str, opaque: dict[str, Any] | None = None) -> Any:
    # The runtime helpers, plus what the block can only name in a comment (library
    # functions, regexes, CIDR sets); its literal constants come from its own text.
    namespace = {**runtime_globals(), **(opaque or {})}
    exec(compile(block, "<shown>", "exec"), namespace)
    return namespace["_cel"]


def outcome(fn: Any, activation: dict[str, Any]) -> tuple[str, Any]:
    try:
        return ("value", fn(activation))
    except CelEvalError as e:
        return ("error", str(e))


def test_every_example_condition_is_shown_readable_and_located(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run_listing(capsys, "--policies", str(EXAMPLES))
    assert code == 0
    shown = blocks(out)
    listed = python_listing(load_policy_dir(EXAMPLES))
    assert len(shown) == len(listed) > 10
    for block, item in zip(shown, listed, strict=True):
        ast.parse(block)  # valid Python as printed
        header = HEADER.match(block.splitlines()[0])
        assert header, block.splitlines()[0]
        policy, _what, rule, file, line, _col = header.groups()
        assert (policy, rule) == (item.policy, item.rule)
        # The line named holds the start of the condition's source.
        written = (EXAMPLES / file).read_text().splitlines()[int(line) - 1]
        assert item.expr.source.strip().splitlines()[0][:20] in written
        body = block[block.index("def _cel(act):") :].splitlines()
        indents = {len(s) - len(s.lstrip(" ")) for s in body}
        assert indents >= {0, 4, 8} and all(n % 4 == 0 for n in indents), indents
        assert "\t" not in block


def request_activations() -> list[dict[str, Any]]:
    out = []
    for path in sorted((EXAMPLES / "requests").glob("*.json")):
        raw = json.loads(path.read_text())
        for res in raw["resources"]:
            for action in res["actions"]:
                out.append(
                    {
                        "principal": raw["principal"],
                        "resource": {k: x for k, x in res.items() if k != "actions"},
                        "action": action,
                        "context": raw.get("context", {}),
                        "now": datetime(2026, 1, 5, 12, tzinfo=UTC),
                    }
                )
    return out


def test_the_shown_python_computes_what_the_engine_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, out = run_listing(capsys, "--policies", str(EXAMPLES))
    listed = python_listing(load_policy_dir(EXAMPLES))
    activations = request_activations()
    assert len(activations) > 5
    values = set()
    for block, item in zip(blocks(out), listed, strict=True):
        assert item.compiled is not None
        opaque = opaque_globals(item.compiled)
        assert all(f"# {name}: " in block for name in opaque)
        fn = shown_function(block, opaque)
        for activation in activations:
            mine = outcome(fn, activation)
            assert mine == outcome(item.compiled, activation), (item.rule, activation)
            values.add(mine[1] if mine[0] == "value" else "error")
    assert {True, False} <= values  # the requests exercise both outcomes


def test_one_rule_and_the_same_decisions_as_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    code, out = run_listing(capsys, "--policies", str(tmp_path), "--rule", "editors")
    assert code == 0
    [block] = blocks(out)
    assert block.startswith("# policy `notes`, rule `editors` (notes.yaml:19:")
    assert "# CEL: P.id in R.attr.editors &&" in block
    [item] = python_listing(load_policy_dir(tmp_path), rule="editors")
    assert item.compiled is not None and "# _fn" in block  # startsWith: a library function
    fn = shown_function(block, opaque_globals(item.compiled))
    engine = Engine(load_and_compile(tmp_path)[1])
    cases = [
        {"editors": ["ann"], "locked": False, "tags": ["draft-1"], "title": "t"},
        {"editors": ["ann"], "locked": True, "tags": ["draft-1"], "title": "t"},
        {"editors": ["bob"], "locked": False, "tags": ["draft-1"], "title": "t"},
        {"editors": ["ann"], "locked": False, "tags": ["final"], "title": "t"},
        {"editors": ["ann"], "locked": False, "tags": "not-a-list", "title": "t"},
    ]
    effects = []
    for attr in cases:
        raw = {
            "principal": {"id": "ann", "tenant": "t1", "roles": ["user"], "attr": {"level": 1}},
            "resources": [
                {"kind": "note", "id": "n1", "tenant": "t1", "attr": attr, "actions": ["edit"]}
            ],
        }
        request = parse_check_request(raw)
        decided = engine.check(request).results[0].actions["edit"]
        activation = {
            "principal": request.principal,
            "resource": request.resources[0].resource,
            "action": "edit",
            "context": request.context,
            "now": datetime.now(UTC),
        }
        shown = outcome(fn, activation)
        assert decided.effect == ("allow" if shown == ("value", True) else "deny"), attr
        effects.append(decided.effect)
    assert effects == ["allow", "deny", "deny", "deny", "deny"]


def test_filters_that_match_nothing_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.yaml").write_text(textwrap.dedent(POLICY).lstrip())
    code, out = run_listing(capsys, "--policies", str(tmp_path), "--rule", "nope")
    assert code == 2 and "no condition of rule `nope`" in out
    code, out = run_listing(capsys, "--policies", str(tmp_path), "--policy", "notes")
    assert code == 0 and len(blocks(out)) == 3

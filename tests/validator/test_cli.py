"""The validator through the CLI: `pdp validate [--strict]`, `pdp test`, `pdp bundle build`."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from pdp.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: tools}
spec:
  resource: agent_tool
  actions:
    call: {}
  rules:
    - id: tool-disabled
      actions: [call]
      effect: deny
      condition: R.attr.enabled == false
      reason: tool_disabled
    - id: members
      actions: [call]
      effect: allow
      roles: [user]
"""
SUITE = """
apiVersion: pdp/v1
kind: TestSuite
metadata: {id: tools-tests}
spec:
  principals:
    ann: {id: ann, tenant: t1, roles: [user], scopes: []}
  cases:
    - name: enabled tool
      principal: ann
      resource: {kind: agent_tool, id: x, tenant: t1, attr: {enabled: true}}
      expect: {call: allow}
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def test_examples_pass_strict_and_count_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "policies"), "--strict"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("ok: 7 resource policies, 3 guard policies, 2 definitions, ")
    assert re.search(r" \d+ rules, 9 schemas, \d+ test suites$", out.out.strip())
    assert out.err == ""


def test_a_warning_fails_only_under_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, {"tools.yaml": POLICY, "tools_test.yaml": SUITE})
    assert main(["validate", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("ok: 1 resource policies") and out.out.rstrip().endswith("1 warning")
    assert "tools.yaml:12:18: warning PDP205:" in out.err
    assert "  12 |       condition: R.attr.enabled == false" in out.err
    assert main(["validate", str(tmp_path), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "PDP205" in err and err.rstrip().endswith("0 errors, 1 warning")
    # `pdp test` reports error findings only; this one is a warning.
    assert main(["test", str(tmp_path)]) == 0


def test_bundle_build_is_strict_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "p", {"tools.yaml": POLICY, "tools_test.yaml": SUITE})
    out = tmp_path / "out"
    assert main(["bundle", "build", str(src), "-o", str(out)]) == 1
    assert "PDP205" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert main(["bundle", "build", str(src), "-o", str(out), "--no-strict"]) == 0
    assert len(list(out.glob("*.pdpb"))) == 1


def test_error_findings_fail_validate_test_and_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = POLICY.replace("roles: [user]", "roles: []")
    src = write(tmp_path / "p", {"tools.yaml": bad, "tools_test.yaml": SUITE})
    assert main(["validate", str(src)]) == 1
    err = capsys.readouterr().err
    assert "tools.yaml:17:14: error PDP106:" in err
    assert main(["test", str(src)]) == 1
    assert "PDP106" in capsys.readouterr().err
    assert main(["bundle", "build", str(src), "-o", str(tmp_path / "o"), "--no-strict"]) == 1


def test_a_reasoned_suppression_silences_the_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = POLICY.replace(
        "      reason: tool_disabled\n",
        "      reason: tool_disabled\n"
        '      suppress: [{code: PDP205, reason: "the tool registry sends booleans"}]\n',
    )
    write(tmp_path, {"tools.yaml": quiet})
    assert main(["validate", str(tmp_path), "--strict"]) == 0
    assert capsys.readouterr().err == ""
    no_reason = quiet.replace(', reason: "the tool registry sends booleans"', "")
    write(tmp_path, {"tools.yaml": no_reason})
    assert main(["validate", str(tmp_path)]) == 1
    assert "missing required field `reason`" in capsys.readouterr().err

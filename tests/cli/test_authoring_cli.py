"""The authoring CLI: validate, test (coverage, junit, filter) and check, through `main()`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from pdp.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "policies"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}
spec:
  resource: note
  actions:
    read: {scopes: ["notes:read"]}
    edit: {}
  rules:
    - id: owner-read
      actions: [read]
      effect: allow
      condition: resource.attr.owner == principal.id
    - id: never-matched
      actions: [edit]
      effect: allow
      roles: [editor]
"""

SUITE = """
apiVersion: pdp/v1
kind: TestSuite
metadata: {id: notes-tests}
spec:
  principals:
    ann: {id: ann, tenant: t1, roles: [user], scopes: ["notes:read"]}
  resources:
    mine: {kind: note, id: n1, tenant: t1, attr: {owner: ann}}
  cases:
    - name: owner reads
      principal: ann
      resource: mine
      expect: {read: allow}
    - name: wrong expectation
      principal: ann
      resource: mine
      expect: {edit: allow}
"""


def test_validate_ok_on_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    assert capsys.readouterr().out.startswith("ok: 7 resource policies")


def test_validate_reports_every_error_with_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = POLICY.replace(
        "condition: resource.attr.owner == principal.id",
        "condition: resource.attr.owner == principal.id &&",
    ).replace("roles: [editor]", "roles: [editor]\n      condition: nosuchfn(principal.id)")
    write(tmp_path, {"notes.yaml": bad, "other.yaml": "apiVersion: pdp/v1\nkind: Bogus\n"})
    assert main(["validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    # CEL syntax error: caret under the position, in the file's coordinates.
    assert "notes.yaml:13:56: syntax error" in err
    assert "^" in err
    # Unknown function: a compile error, not a run-time surprise.
    assert "notes.yaml:18:18:" in err and "nosuchfn" in err
    assert "other.yaml:2:" in err
    assert err.strip().endswith("errors")


def test_test_reports_failures_coverage_and_junit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, {"notes.yaml": POLICY, "notes_test.yaml": SUITE})
    junit = tmp_path / "junit.xml"
    assert main(["test", str(tmp_path), "--coverage", "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "wrong expectation" in out
    assert "effect: expected allow, got deny" in out
    assert "never matched: never-matched" in out
    assert "total rule coverage: 1/2 (50.0%)" in out
    assert out.strip().splitlines()[-1] == "1 passed, 1 failed"
    tree = ET.parse(junit).getroot()
    assert tree.get("tests") == "2" and tree.get("failures") == "1"


def test_test_filter_selects_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, {"notes.yaml": POLICY, "notes_test.yaml": SUITE})
    assert main(["test", str(tmp_path), "--filter", "owner"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 passed, 0 failed"


def test_examples_pass_with_full_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(EXAMPLES), "--coverage"]) == 0
    out = capsys.readouterr().out
    assert "(100.0%)" in out
    assert out.strip().splitlines()[-1].endswith(" 0 failed")


def test_check_outputs_decisions_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = EXAMPLES / "requests" / "object_level.json"
    argv = ["check", "--policies", str(EXAMPLES), "--request", str(request), "--explain"]
    assert main([*argv, "--output", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    first = out["results"][0]
    assert first["id"] == "d-150"
    assert first["actions"]["read"]["effect"] == "allow"
    assert first["actions"]["read"]["trace"]
    foreign = out["results"][3]
    assert foreign["actions"]["read"]["reasons"] == ["tenant_mismatch"]


def test_check_rejects_bad_request_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"principal": {"id": 7}, "resources": []}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp.cli.main",
            "check",
            "--policies",
            str(EXAMPLES),
            "--request",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "principal.id" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


MAPPING = """
apiVersion: pdp/v1
kind: RouteMapping
metadata: {id: notes-gateway}
spec:
  authentication: {source: jwt, issuer: https://idp.test, audience: notes}
  claims: {id: sub, tenant: tid, roles: roles, scopes: [scope]}
  routes:
    - path: /v1/tenants/{tenant}/notes/{note}
      methods: {GET: read}
      resource: {kind: note, id: "{note}", tenant: "{tenant}", attr: {owner: "{claims.sub}"}}
  tests:
    - name: owner reads
      request:
        method: GET
        path: /v1/tenants/t1/notes/n1
        claims: {sub: ann, tid: t1, roles: [user], scope: "notes:read"}
      expect: {kind: note, action: read, effect: allow}
    - name: wrongly expected to be refused
      request:
        method: GET
        path: /v1/tenants/t1/notes/n1
        claims: {sub: ann, tid: t1, roles: [user], scope: "notes:read"}
      expect: {effect: deny}
"""


def test_test_runs_the_gateway_mapping_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = SUITE.split("    - name: wrong expectation")[0]
    write(tmp_path, {"notes.yaml": POLICY, "notes_test.yaml": suite, "mapping.yaml": MAPPING})
    assert main(["test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "route-mapping / wrongly expected to be refused" in out
    assert "owner reads" not in out  # passing cases are not listed
    assert out.strip().splitlines()[-1] == "2 passed, 1 failed"

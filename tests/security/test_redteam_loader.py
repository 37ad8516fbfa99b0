"""Red-team the policy loader: a key written without a value (`condition:`, `roles: ~`) read
as an absent key, and for `condition` and `roles` absent means "everyone". A rule whose
condition was left blank, or emptied by a template, passed `pdp validate --strict` and allowed
every principal. Now it is a load error at the key's value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RESOURCE = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: doc}}
spec:
  resource: document
  tenancy: global
  imports: [defs]
  actions: {{read: {{}}}}
  rules:
    - id: owner-reads
      actions: [read]
      effect: allow
      {rule}
      reason: owner
"""

DEFS = """apiVersion: pdp/v1
kind: Definitions
metadata: {{id: defs}}
spec:
  derivedRoles:
    owner:
      parentRoles: [user]
      {derived}
"""

REQUEST = {
    "principal": {"id": "mallory", "tenant": "acme", "roles": ["user"]},
    "resources": [
        {"kind": "document", "id": "d1", "attr": {"owner": "alice"}, "actions": ["read"]}
    ],
}

OWNER = "condition: R.attr.owner == P.id"

# (rule lines, derived role lines, where the error is expected: file, line)
CASES = {
    "blank condition": ("roles: [user]\n      condition:", OWNER, ("doc.yaml", 14)),
    "null condition": ("roles: [user]\n      condition: null", OWNER, ("doc.yaml", 14)),
    "tilde condition": ("roles: [user]\n      condition: ~", OWNER, ("doc.yaml", 14)),
    "blank roles": ("roles:\n      condition: R.attr.owner == P.id", OWNER, ("doc.yaml", 13)),
    "blank derived role condition": ("derivedRoles: [owner]", "condition:", ("defs.yaml", 8)),
}


def pdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def write(tmp_path: Path, rule: str, derived: str) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "doc.yaml").write_text(RESOURCE.format(rule=rule))
    (policies / "defs.yaml").write_text(DEFS.format(derived=derived))
    (tmp_path / "req.json").write_text(json.dumps(REQUEST))
    return policies


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_blank_condition_or_roles_is_a_load_error_not_everyone(tmp_path: Path, case: str) -> None:
    rule, derived, (file, line) = CASES[case]
    policies = write(tmp_path, rule, derived)
    result = pdp("validate", "--strict", str(policies))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{file}:{line}:" in result.stdout + result.stderr
    assert "has no value" in result.stdout + result.stderr
    check = pdp("check", "--policies", str(policies), "--request", str(tmp_path / "req.json"))
    assert check.returncode != 0 and "allow" not in check.stdout, check.stdout + check.stderr
    assert "has no value" in check.stderr and "Traceback" not in check.stderr


def test_the_same_policy_with_its_condition_denies_mallory(tmp_path: Path) -> None:
    # The control: written out, the rule allows the owner only, so mallory is denied.
    policies = write(tmp_path, "roles: [user]\n      " + OWNER, OWNER)
    check = pdp(
        "check", "--policies", str(policies),
        "--request", str(tmp_path / "req.json"), "--output", "json",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    decision = json.loads(check.stdout)["results"][0]["actions"]["read"]
    assert decision["effect"] == "deny", decision

"""Validator findings on rate-limit policies (`LimitPolicy`): PDP201 (an import nothing uses)
and PDP202 (a local variable nothing uses), as other policies get them, and `suppress` on the
policy and on each limit, with the same spelling and rules as everywhere else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pdp.errors import PolicyErrors
from pdp.lint import analyze
from pdp.model.loader import load_policy_files

ROOT = Path(__file__).resolve().parents[2]

DOCS = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: docs}
spec:
  resource: document
  actions:
    read: {}
  rules:
    - id: members
      actions: [read]
      effect: allow
      roles: [user]
"""

DEFS = """\
apiVersion: pdp/v1
kind: Definitions
metadata: {id: keys}
spec:
  constants:
    weight: 2
  variables:
    tenant_key: P.tenant
"""


def limits(body: str, *, spec_extra: str = "", limit_extra: str = "") -> str:
    return (
        "apiVersion: pdp/v1\n"
        "kind: LimitPolicy\n"
        "metadata: {id: quotas}\n"
        "spec:\n"
        f"{spec_extra}"
        "  limits:\n"
        "    - id: per-tenant\n"
        "      resources: [document]\n"
        "      actions: [read]\n"
        f"{body}"
        "      limit: 10\n"
        "      per: 1m\n"
        f"{limit_extra}"
    )


def findings(limit_policy: str) -> list[str]:
    """`CODE file:line:column` of every finding."""
    files = {"docs.yaml": DOCS, "defs.yaml": DEFS, "limits.yaml": limit_policy}
    source = load_policy_files({k: v.encode() for k, v in files.items()})
    return [
        f"{f.code} {f.location.file}:{f.location.line}:{f.location.column}"
        for f in analyze(source)
        if f.location is not None
    ]


# --- PDP201 --------------------------------------------------------------------------------------


def test_an_import_no_limit_uses_is_pdp201_at_the_import() -> None:
    policy = limits("      key: P.tenant\n", spec_extra="  imports: [keys]\n")
    assert findings(policy) == ["PDP201 limits.yaml:5:13"]


@pytest.mark.parametrize(
    "body",
    [
        "      key: V.tenant_key\n",  # a variable of the import, in the key
        "      key: P.tenant\n      cost: C.weight\n",  # a constant, in the cost
        "      key: P.tenant\n      condition: V.tenant_key != ''\n",  # in the condition
        "      key: V.mine\n",  # through a local variable that uses the import's
    ],
)
def test_an_import_a_limit_uses_is_not_pdp201(body: str) -> None:
    spec = "  imports: [keys]\n  variables:\n    mine: V.tenant_key + '/x'\n"
    if "V.mine" not in body:
        spec = "  imports: [keys]\n"
    assert findings(limits(body, spec_extra=spec)) == []


# --- PDP202 --------------------------------------------------------------------------------------


def test_a_local_variable_no_limit_uses_is_pdp202_at_the_variable() -> None:
    spec = "  variables:\n    used: P.tenant\n    unused: P.id\n"
    assert findings(limits("      key: V.used\n", spec_extra=spec)) == ["PDP202 limits.yaml:7:13"]


def test_a_variable_used_only_by_another_used_variable_is_not_pdp202() -> None:
    spec = "  variables:\n    inner: P.tenant\n    outer: V.inner + '/' + P.id\n"
    assert findings(limits("      key: V.outer\n", spec_extra=spec)) == []


# --- PDP102 / PDP103 -------------------------------------------------------------------------------


def test_two_imports_defining_the_same_name_are_an_error_on_a_limit_policy_too() -> None:
    # The later import silently won: here `C.weight` would be 0 and the limit would count
    # nothing, `V.tenant_key` would key by principal instead of tenant.
    other = DEFS.replace("{id: keys}", "{id: other}").replace("weight: 2", "weight: 0")
    other = other.replace("tenant_key: P.tenant", "tenant_key: P.id")
    policy = limits(
        "      key: V.tenant_key\n      cost: C.weight\n", spec_extra="  imports: [keys, other]\n"
    )
    files = {"docs.yaml": DOCS, "defs.yaml": DEFS, "other.yaml": other, "limits.yaml": policy}
    found = analyze(load_policy_files({k: v.encode() for k, v in files.items()}))
    assert sorted(f"{f.code} {f.location}" for f in found) == [
        "PDP102 limits.yaml:5:19",
        "PDP103 limits.yaml:5:19",
    ]


# --- suppress --------------------------------------------------------------------------------------


def test_policy_level_suppress_silences_a_limits_finding() -> None:
    # PDP108: a limit whose condition can never hold (parked until the next release).
    body = "      key: P.tenant\n      condition: 1 == 2\n"
    suppress = "  suppress:\n    - {code: PDP108, reason: switched on next release}\n"
    assert findings(limits(body)) == ["PDP108 limits.yaml:6:7"]
    assert findings(limits(body, spec_extra=suppress)) == []


def test_limit_level_suppress_silences_that_limits_findings_only() -> None:
    # PDP126: a bool key puts every caller in one of two buckets, silenced on purpose here.
    body = '      key: P.id == "root"\n'
    suppress = "      suppress:\n        - {code: PDP126, reason: two buckets are what we want}\n"
    assert findings(limits(body)) == ["PDP126 limits.yaml:9:12"]
    assert findings(limits(body, limit_extra=suppress)) == []


def test_policy_level_suppress_silences_pdp201_and_pdp202() -> None:
    spec = (
        "  imports: [keys]\n"
        "  variables:\n    unused: P.id\n"
        "  suppress:\n"
        "    - {code: PDP201, reason: the next release keys by it}\n"
        "    - {code: PDP202, reason: the next release keys by it}\n"
    )
    assert findings(limits("      key: P.tenant\n", spec_extra=spec)) == []


def test_limit_level_suppress_does_not_silence_a_policy_level_finding() -> None:
    spec = "  variables:\n    unused: P.id\n"
    suppress = "      suppress:\n        - {code: PDP202, reason: not here}\n"
    got = findings(limits("      key: P.tenant\n", spec_extra=spec, limit_extra=suppress))
    assert got == ["PDP202 limits.yaml:6:13", "PDP206 limits.yaml:15:11"]


def test_a_suppression_that_silences_nothing_is_pdp206() -> None:
    spec = "  suppress:\n    - {code: PDP108, reason: in case}\n"
    assert findings(limits("      key: P.tenant\n", spec_extra=spec)) == ["PDP206 limits.yaml:6:7"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{code: PDP2O1, reason: typo}", "`PDP2O1` is not a finding code"),
        ("{code: PDP126}", "missing required field `reason`"),
        ("{code: PDP126, reason: x, until: never}", "unknown key `until`"),
    ],
)
@pytest.mark.parametrize("where", ["policy", "limit"])
def test_a_malformed_suppression_is_a_load_error(entry: str, message: str, where: str) -> None:
    suppress = f"  suppress: [{entry}]\n"
    policy = (
        limits("      key: P.tenant\n", spec_extra=suppress)
        if where == "policy"
        else limits("      key: P.tenant\n", limit_extra="    " + suppress)
    )
    with pytest.raises(PolicyErrors) as info:
        findings(policy)
    assert any(message in e.message and e.location.file == "limits.yaml" for e in info.value.errors)


def test_the_example_policies_stay_clean_under_strict_validation() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "validate", "--strict", str(ROOT / "policies")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

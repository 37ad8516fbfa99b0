"""`pdp check --deadline-ms`: the one-shot decision stops as a served call does.

A policy whose one resource takes ~15 s (tests/security/test_deadline_one_resource.py's 150
slow rules) is stopped inside the resource: exit 3, the servers' message, no decision
printed. A deadline the decision meets changes nothing; a bad value is refused naming the flag.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pdp.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from security.serving import HEAVY_PRINCIPAL
from security.test_deadline_one_resource import POLICY

EXAMPLES = Path(__file__).resolve().parents[2] / "policies"


def _heavy(tmp_path: Path) -> list[str]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "ledger.yaml").write_text(POLICY)
    request = tmp_path / "request.json"
    resource = {"kind": "ledger", "id": "l-1", "tenant": "acme", "actions": ["read"]}
    request.write_text(json.dumps({"principal": HEAVY_PRINCIPAL, "resources": [resource]}))
    return ["check", "--policies", str(policies), "--request", str(request)]


def test_a_decision_past_the_deadline_is_stopped_and_not_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_heavy(tmp_path), "--deadline-ms", "200"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "error: deadline exceeded before the decision was complete (decided 0 of 1 resources)\n"
    )


def test_a_deadline_met_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    request = EXAMPLES / "requests" / "object_level.json"
    argv = ["check", "--policies", str(EXAMPLES), "--request", str(request), "--output", "json"]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*argv, "--deadline-ms", "600000"]) == 0
    timed = json.loads(capsys.readouterr().out)
    effects = [[a["effect"] for a in r["actions"].values()] for r in plain["results"]]
    assert [[a["effect"] for a in r["actions"].values()] for r in timed["results"]] == effects


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_a_bad_deadline_is_refused_naming_the_flag(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_heavy(tmp_path), "--deadline-ms", value]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "--deadline-ms" in err and "Traceback" not in err, err

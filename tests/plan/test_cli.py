"""`pdp plan` on the example policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdp.cli.main import main

from . import _gen as g

REQUEST = {
    "principal": {"id": "carol", "tenant": "acme", "roles": ["user"], "scopes": ["docs:read"]},
    "resource": {"kind": "document"},
    "action": "read",
    "context": {"ip": "10.20.30.40", "time": g.NOW},
}


def _write(tmp_path: Path, body: object) -> str:
    path = tmp_path / "req.json"
    path.write_text(json.dumps(body))
    return str(path)


def test_plan_prints_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["plan", "--policies", str(g.POLICIES), "--request", _write(tmp_path, REQUEST)]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["planVersion"] == 1 and out["kind"] == "CONDITIONAL"
    # Tenant isolation is one conjunct (beside the schema's and the rules').
    assert {"op": "eq", "args": [{"field": "resource.tenant"}, {"value": "acme"}]} in out["filter"][
        "args"
    ]


def test_plan_cel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--policies", str(g.POLICIES), "--request", _write(tmp_path, REQUEST), "--cel"]
    assert main(args) == 0
    assert 'R.tenant == "acme"' in capsys.readouterr().out


def test_plan_refusal_and_bad_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = tmp_path / "policies"
    for rel, data in g.policy_files_with_refusal().items():
        (policies / rel).parent.mkdir(parents=True, exist_ok=True)
        (policies / rel).write_bytes(data)
    refused = {**REQUEST, "resource": {"kind": "note"}}
    assert main(["plan", "--policies", str(policies), "--request", _write(tmp_path, refused)]) == 3
    assert "cannot plan" in capsys.readouterr().err
    bad = {**REQUEST, "action": 7}
    assert main(["plan", "--policies", str(g.POLICIES), "--request", _write(tmp_path, bad)]) == 2
    assert "action" in capsys.readouterr().err

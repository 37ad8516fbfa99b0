"""`pdp check` reads as a table and its `--explain` as a story; `pdp test --filter X
--coverage` counts only the selected policies; one vocabulary for effects and bundle names."""

from __future__ import annotations

import json

import pytest

from pdp.cli.main import main

from ._support import ROOT

EXAMPLES = ROOT / "policies"
REQUEST = EXAMPLES / "requests/object_level.json"


def check(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["check", "--policies", str(EXAMPLES), "--request", str(REQUEST), *extra]) == 0
    return capsys.readouterr().out


def test_table_has_a_line_per_resource_and_action(capsys: pytest.CaptureFixture[str]) -> None:
    out = check(capsys)
    lines = out.splitlines()
    assert lines[0].startswith("bundle policies 0.0.0")
    assert lines[1].split() == ["RESOURCE", "ACTION", "EFFECT", "RULE", "REASONS", "OBLIGATIONS"]
    rows = {tuple(line.split()[:3]) for line in lines[2:] if line.startswith("document/")}
    assert rows == {
        ("document/d-150", "read", "allow"),
        ("document/d-150", "write", "allow"),
        ("document/d-100", "read", "allow"),
        ("document/d-100", "write", "deny"),
        ("document/d-200", "read", "deny"),
        ("document/g-900", "read", "deny"),
    }
    shared = next(line for line in lines if line.startswith("document/d-100  read"))
    assert "documents/shared-read" in shared and 'mask_fields=["email", "phone"]' in shared
    assert "tenant_mismatch" in next(line for line in lines if line.startswith("document/g-900"))
    assert "principal tenant `acme` differs from resource tenant `globex`" in out


def test_explain_tells_rule_condition_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    out = check(capsys, "--explain")
    assert "document/d-150 read: allow by documents/owner-full-access (owner)" in out
    story = out.split("document/d-150 read:")[1].split("\n\n")[0]
    assert "1. tenant documents: passed (tenant `acme`)" in story
    assert "guard network-fences/secret-documents-from-corp-only: did not match" in story
    assert 'when has(R.attr.classification) && R.attr.classification == "secret"' in story
    assert 'with resource.attr.classification = "internal"' in story
    assert "allow documents/owner-full-access: matched" in story
    denied = out.split("document/g-900 read:")[1]
    assert denied.startswith(" deny (tenant_mismatch)")
    assert "2. default documents: deny (principal tenant `acme` differs" in denied


def test_output_json_is_the_response(capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(check(capsys, "--output", "json"))
    assert data["bundle"]["name"] == "policies"  # as `pdp serve --policies policies` names it
    assert data["results"][0]["actions"]["read"]["effect"] == "allow"
    assert "trace" not in data["results"][0]["actions"]["read"]
    explained = json.loads(check(capsys, "--output", "json", "--explain"))
    assert explained["results"][0]["actions"]["read"]["trace"]


def test_filtered_coverage_counts_only_the_selected_policies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["test", str(EXAMPLES), "--filter", "documents", "--coverage"]) == 0
    out = capsys.readouterr().out
    listed = {line.split(":")[0].strip() for line in out.splitlines() if line.endswith(" rules")}
    assert "documents" in listed
    assert not listed & {"models", "conversations", "api-keys", "knowledge-bases", "agent-tools"}
    assert "documents: 9/9 rules" in out
    assert main(["test", str(EXAMPLES), "--coverage"]) == 0
    assert "total rule coverage: 45/45" in capsys.readouterr().out


def test_bundle_build_reports_its_stages(tmp_path) -> None:
    from pdp.bundle import build_bundle

    heard: list[str] = []
    built = build_bundle(EXAMPLES, version="1.2.3", progress=heard.append)
    assert built.manifest.version == "1.2.3"
    assert heard[0].startswith("collecting policy files")
    assert heard[1].startswith("loading, compiling and testing ") and heard[1].endswith(" files")
    assert heard[-1].endswith("test cases passed; packing")

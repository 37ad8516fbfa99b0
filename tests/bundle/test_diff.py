"""`pdp bundle diff`: the decisions a change flips, and an exit code that can gate a PR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundle_helpers import make_bundle, policy_files, write_tree

from pdp.cli.main import main


@pytest.fixture
def bundles(tmp_path: Path) -> tuple[str, str]:
    old, new = tmp_path / "things-1.0.0.pdpb", tmp_path / "things-2.0.0.pdpb"
    old.write_bytes(make_bundle(1))
    new.write_bytes(make_bundle(2))  # one rule differs: allow-a1 became allow-a2
    return str(old), str(new)


def test_no_change_exits_0(bundles: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    old, _ = bundles
    assert main(["bundle", "diff", old, old]) == 0
    assert "0 of 2 decisions changed" in capsys.readouterr().out


def test_changed_decisions_are_listed_and_exit_1(
    bundles: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = bundles
    assert main(["bundle", "diff", old, new]) == 1
    out = capsys.readouterr().out
    assert "u1 thing/r1 a1: allow -> deny (things/allow-a1 -> no_matching_rule)" in out
    assert "u1 thing/r1 a2: deny -> allow (no_matching_rule -> things/allow-a2)" in out
    assert "2 of 3 decisions changed" in out  # a1, a2 from suite 1; a3 from suite 2 unchanged


def test_requests_file_plain_and_wrapped_records(
    bundles: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = bundles
    request = {
        "principal": {"id": "bob", "tenant": "t1", "roles": ["user"]},
        "resources": [{"kind": "thing", "id": "r9", "tenant": "t1", "actions": ["a1", "a5"]}],
    }
    wrapped = {
        "decision_id": "x",
        "request": {**request, "principal": {**request["principal"], "id": "carol"}},
    }
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(request) + "\n\n" + json.dumps(wrapped) + "\n")
    assert main(["bundle", "diff", old, new, "--requests", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    flipped = {(c["principal"], c["resource"]["id"], c["action"]) for c in report["changes"]}
    assert ("bob", "r9", "a1") in flipped
    assert ("carol", "r9", "a1") in flipped
    assert not any(a == "a5" for _, _, a in flipped)
    assert report["old"]["version"] == "1.0.0" and report["new"]["version"] == "2.0.0"
    assert report["errors"] == []


def test_errors_exit_2(
    bundles: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = bundles
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"principal": {"id": "x"}, "resources": "nope"}\nnot json\n')
    assert main(["bundle", "diff", old, new, "--requests", str(bad)]) == 2
    out = capsys.readouterr().out
    assert f"{bad}:1: bad request" in out and f"{bad}:2: not JSON" in out
    assert main(["bundle", "diff", old, str(tmp_path / "missing.pdpb")]) == 2


def test_diff_a_bundle_against_a_working_tree(
    bundles: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, _ = bundles
    tree = write_tree(tmp_path / "tree", policy_files(1))
    assert main(["bundle", "diff", old, str(tree)]) == 0
    write_tree(tree, policy_files(3))
    assert main(["bundle", "diff", old, str(tree)]) == 1
    assert "a3: deny -> allow" in capsys.readouterr().out


def test_requests_json_document_holding_a_list(
    bundles: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = bundles
    request = {
        "principal": {"id": "dave", "tenant": "t1", "roles": ["user"]},
        "resources": [{"kind": "thing", "id": "r2", "tenant": "t1", "actions": ["a2"]}],
    }
    path = tmp_path / "requests.json"
    path.write_text(json.dumps([request], indent=2))
    assert main(["bundle", "diff", old, new, "--requests", str(path)]) == 1
    assert f"dave thing/r2 a2: deny -> allow (no_matching_rule -> things/allow-a2) [{path}[0]]" in (
        capsys.readouterr().out
    )

"""What `pdp serve --policies DIR` reads and does to load a directory (pdp.cli.serve's load
path), in process: the decisions are what a server makes, without a server to start."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from pdp.cel import _ast
from pdp.cli import serve
from pdp.cli._common import load_and_compile
from pdp.cli.main import main
from pdp.engine import EngineHolder, run_test_suites

EXAMPLES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def broken_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example policies with one test file that does not even parse, and another whose
    case expects an action its policy does not declare (a cross-file check of the loader)."""
    root = tmp_path_factory.mktemp("broken") / "policies"
    shutil.copytree(EXAMPLES, root)
    (root / "resources" / "document_test.yaml").write_text("kind: TestSuite\n  spec: [\n")
    model = root / "resources" / "model_test.yaml"
    text = model.read_text()
    assert "        invoke:" in text
    model.write_text(text.replace("        invoke:", "        no_such_action:", 1))
    return root


def test_a_served_directory_skips_its_test_files_and_decides_the_same(
    broken_tests: Path,
) -> None:
    """Cerbos's server ignores `_test` files: a broken one does not stop the policies being
    served, through a lone server's load and the supervisor's preload alike, and every
    example test case is decided as the full load decides it (all pass)."""
    holder = EngineHolder()
    serve.start_policy_source(_args(broken_tests), holder)()
    engine = holder.current
    assert engine is not None
    assert serve._preload_policy_dir(_args(broken_tests)) is not None
    full, _ = load_and_compile(EXAMPLES)
    assert full.test_suites  # the comparison below runs cases
    report = run_test_suites(engine.policy_set, full.test_suites)
    assert report.results and report.failed == 0, [r for r in report.results if not r.passed]


def test_the_checking_verbs_still_read_and_report_the_test_files(
    broken_tests: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for verb in ("test", "validate"):
        assert main([verb, str(broken_tests)]) == 1
        err = capsys.readouterr().err
        assert "resources/document_test.yaml:" in err, (verb, err)
        assert "resources/model_test.yaml:" in err and "`no_such_action`" in err, (verb, err)


def _args(directory: Path) -> argparse.Namespace:
    return argparse.Namespace(policies=str(directory), bundle=None, watch=False)


def test_a_load_parses_each_cel_source_once_and_changes_no_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiler and the validator read the same trees (`pdp.cel.shared_parses`), and
    neither changes one: each tree is still what a fresh parse of its source gives."""
    trees: dict[str, list[_ast.Node]] = {}
    parse = _ast._parse

    def counted(source: str) -> _ast.Node:
        tree = parse(source)
        trees.setdefault(source, []).append(tree)
        return tree

    monkeypatch.setattr(_ast, "_parse", counted)
    serve._load_policy_dir(str(EXAMPLES))
    assert len(trees) > 40  # the example policies' expressions and variables
    assert {s: len(t) for s, t in trees.items() if len(t) > 1} == {}
    monkeypatch.setattr(_ast, "_parse", parse)
    assert all(t == [_ast.parse(s)] for s, t in trees.items())

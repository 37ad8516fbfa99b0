"""What `pdp serve --policies DIR` reads and does to load a directory (pdp.cli.serve's load
path), in process: the decisions are what a server makes, without a server to start."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pdp.cel import _ast, _checker
from pdp.cel._checker import TypeEnv
from pdp.cli import serve
from pdp.cli._common import load_and_compile
from pdp.cli.main import main
from pdp.engine import EngineHolder, run_test_suites
from pdp.model._yaml import FileContext

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


def test_the_validator_builds_each_environments_roots_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The activation's types (`TypeEnv.roots`) are built once per environment, not once per
    expression and variable checked in it."""
    built: list[TypeEnv] = []  # kept alive: their ids are not reused
    build = TypeEnv._build_roots

    def counted(env: TypeEnv) -> dict[str, Any]:
        built.append(env)
        return build(env)

    monkeypatch.setattr(TypeEnv, "_build_roots", counted)
    checkers: list[int] = []
    init = _checker._Checker.__init__

    def counted_init(checker: Any, env: TypeEnv, variable: str | None) -> None:
        checkers.append(id(env))
        init(checker, env, variable)

    monkeypatch.setattr(_checker._Checker, "__init__", counted_init)
    serve._load_policy_dir(str(EXAMPLES))
    assert len(checkers) > 2 * len(built) > 0  # many checkers per environment
    assert len({id(env) for env in built}) == len(built)


def test_a_valid_schema_is_read_as_json_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema file is composed as YAML too only to place an error in it: the examples'
    nine, all valid, are not."""
    from pdp.model import schema

    composed: list[str] = []
    parse = schema.parse_yaml

    def counted(ctx: Any, text: str) -> Any:
        composed.append(ctx.file)
        return parse(ctx, text)

    monkeypatch.setattr(schema, "parse_yaml", counted)
    serve._load_policy_dir(str(EXAMPLES))
    assert composed == []
    bad = FileContext("schemas/bad.json", [])
    assert schema.load_schema(bad, '{\n  "type": "array"\n}') is None
    assert composed == ["schemas/bad.json"]
    assert [str(e.location) for e in bad.errors] == ["schemas/bad.json:2:11"]


# Run as `python -c PROBE DIR...`: each directory loaded as `pdp serve --policies` loads it and
# decided once, then the modules imported so far, as JSON, one line per directory.
PROBE = """
import json, sys
from pdp.cli import serve
from pdp.model.request import parse_check_request
request = {"principal": {"id": "p", "tenant": "t", "roles": ["user"]}, "resources": [
    {"kind": "document", "id": "d", "tenant": "t", "actions": ["read"]}]}
for directory in sys.argv[1:]:
    serve._load_policy_dir(directory).check(parse_check_request(request))
    print(json.dumps(sorted(sys.modules)))
"""
# Imported only where a policy set (or a request) needs it: test suites (never, serving a
# directory), attribute schemas, `matches`, a named time zone, a hashed rate-limit key, a
# misspelt name.
NEVER = ("pdp.engine.suites", "pdp.model._suite", "pdp.model.testsuite", "re2", "zoneinfo")
NEVER += ("hashlib", "difflib")
WITH_SCHEMAS = ("fastjsonschema", "pdp.engine.schemas", "pdp.model.schema")


def test_a_served_directory_imports_only_what_its_policies_use(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "document.yaml").write_text(DOCUMENT)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(plain), str(EXAMPLES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    without, examples = (set(json.loads(line)) for line in probe.stdout.splitlines())
    assert "pdp.engine.engine" in without and "yaml" in without  # the probe's own trace
    assert without.isdisjoint(NEVER + WITH_SCHEMAS), sorted(without & {*NEVER, *WITH_SCHEMAS})
    assert examples.isdisjoint(NEVER), sorted(examples & set(NEVER))
    assert set(WITH_SCHEMAS) <= examples  # what the first check looks for is named right


DOCUMENT = """\
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: documents}
spec:
  resource: document
  tenancy: global
  actions: {read: {}}
  rules:
    - {id: readers, actions: [read], effect: allow, roles: [user], condition: "R.attr.open == true"}
"""

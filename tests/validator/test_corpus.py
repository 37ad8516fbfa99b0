"""The validator against its corpus: every known-bad policy set produces exactly the findings
(code and file:line:column) its `# expect:` lines name; every good one produces none; the
example policies produce none, and every finding code is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pdp.engine import compile_policy_set
from pdp.lint import CODES, analyze
from pdp.model.loader import load_policy_dir, load_policy_files

from .corpus import cases, findings_of, shown

ROOT = Path(__file__).resolve().parents[2]
BAD = cases("bad")
GOOD = cases("good")


def test_the_corpus_is_large_and_covers_every_code() -> None:
    assert len(BAD) >= 40
    expected = {e.split()[0] for c in BAD for e in c.expect}
    assert expected == set(CODES), f"codes without a bad case: {set(CODES) - expected}"


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_bad_policy_gives_its_findings(case) -> None:
    assert case.expect, f"{case.name} names no expected finding"
    got = [shown(f) for f in findings_of(case.files)]
    assert sorted(got) == sorted(case.expect), "\n".join(
        f.render() for f in findings_of(case.files)
    )


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_bad_findings_render_a_caret_under_the_column(case) -> None:
    for f in findings_of(case.files):
        lines = f.render().splitlines()
        assert lines[0].startswith(f"{f.location}: {f.severity} {f.code}: ")
        assert len(lines) == 3 and lines[2].endswith("^")
        # The caret sits under the column the location names.
        assert lines[2].index("^") - lines[2].index("|") - 2 == f.location.column - 1


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.name)
def test_bad_policies_still_compile(case) -> None:
    """The findings are what the validator adds: these sets all compile (bar broken schemas),
    which is why they used to pass `pdp validate` and reach production."""
    if any(e.startswith("PDP100") for e in case.expect):
        return
    compile_policy_set(load_policy_files(case.files))


@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.name)
def test_good_policy_gives_no_finding(case) -> None:
    assert not case.expect
    findings = findings_of(case.files)
    assert not findings, "\n".join(f.render() for f in findings)
    compile_policy_set(load_policy_files(case.files))


def test_example_policies_give_no_finding() -> None:
    findings = analyze(load_policy_dir(ROOT / "policies"))
    assert not findings, "\n".join(f.render() for f in findings)


def test_every_code_is_documented() -> None:
    doc = (ROOT / "docs" / "POLICY_FORMAT.md").read_text()
    for code, info in CODES.items():
        assert re.search(rf"\| `{code}` \| {info.severity} \|", doc), f"{code} is not documented"

"""Red-team `pdp fmt`: a rewrite must mean to the policy loader exactly what its source meant.

ruamel (which rewrites) resolves plain scalars with its own YAML 1.2 rules, which accept `_`
in numbers; the loader uses the strict YAML 1.2 core schema; PyYAML's 1.1 reading (the meaning
check used to compare with it) agrees with neither. `1_0.5` is a string to the loader, ruamel
rewrote it as `010.5`, a number; PyYAML reads both as 10.5, so the check let it through.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp.cli.fmt import FormatError, format_text
from pdp.errors import PolicyErrors
from pdp.model.loader import load_policy_files


def loaded(text: str) -> object:
    """What the policy loader reads in a data file holding `text` (or its error messages)."""
    try:
        return repr(load_policy_files({"data/x.yaml": text.encode()}).data["x"])
    except PolicyErrors as e:
        return [err.message for err in e.errors]


def run_fmt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdp.cli.main", "fmt", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("scalar", ["1_0.5", "+0x1", "-0x1", "1__0", "1_", ".1_0"])
def test_fmt_never_turns_a_string_into_a_number(scalar: str) -> None:
    text = f"codes: [{scalar}]\nlimit: {scalar}\n"
    assert isinstance(loaded(text), str)  # the loader reads the source fine
    try:
        out = format_text(text)
    except FormatError as e:
        assert "meaning" in str(e)
        return
    assert loaded(out) == loaded(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("0123456789_.+-xXoObeE:~nN ")), max_size=10))
def test_fmt_keeps_what_the_loader_reads_of_any_number_like_scalar(scalar: str) -> None:
    text = f"a: {scalar}\nb: [{scalar}, x]\n"
    try:
        out = format_text(text)
    except FormatError:
        return
    assert loaded(out) == loaded(text)


def test_fmt_cli_leaves_a_file_it_would_change_in_meaning_untouched(tmp_path: Path) -> None:
    policy = tmp_path / "defs.yaml"
    source = (
        "apiVersion: pdp/v1\nkind: Definitions\nmetadata: {id: d}\n"
        "spec:\n    constants:\n        codes: [1_0.5, ab]\n"
    )
    policy.write_text(source)
    result = run_fmt(str(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "meaning" in result.stderr and "Traceback" not in result.stderr
    assert policy.read_text() == source


@pytest.mark.parametrize("directive", ["%YAML 1.3", "%YAML 1.9"])
def test_fmt_cli_refuses_an_unknown_yaml_minor_version_without_a_traceback(
    tmp_path: Path, directive: str
) -> None:
    policy = tmp_path / "p.yaml"
    source = f"{directive}\n---\napiVersion: pdp/v1\n"
    policy.write_text(source)
    result = run_fmt("--check", str(policy))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot parse" in result.stderr and "Traceback" not in result.stderr
    assert policy.read_text() == source

"""`pdp fmt`: the canonical layout keeps comments and meaning, is idempotent, and `--check`
fails CI on an unformatted file without writing it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.cli.fmt import FormatError, format_text
from pdp.cli.main import main

from ._support import ROOT

MESSY = """\
# the notes policy: who reads what
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: notes}   # flow style stays
spec:
    resource: note
    actions:
        read:   {scopes: ["notes:read"]}     # aligned by hand
        edit:     {}
    rules:
    -   id: owner-read       # the owner always reads
        actions: [read]
        effect: allow
        condition: >-
          resource.attr.owner == principal.id
    - id: "quoted"
      actions: ['edit']
      effect: deny
"""


def test_canonical_layout_keeps_comments_and_meaning() -> None:
    out = format_text(MESSY)
    assert out != MESSY
    for comment in (
        "# the notes policy: who reads what",
        "# flow style stays",
        "# aligned by hand",
        "# the owner always reads",
    ):
        assert comment in out
    assert yaml.safe_load(out) == yaml.safe_load(MESSY)
    assert "  resource: note\n" in out  # two-space mappings
    assert '    read: {scopes: ["notes:read"]}' in out  # padding removed, flow kept
    assert "  - id: owner-read" in out  # sequences indented under their key
    assert '"quoted"' in out and "['edit']" in out  # quoting as written


def test_formatting_is_idempotent_on_every_example_policy() -> None:
    for path in sorted((ROOT / "policies").rglob("*.yaml")):
        text = path.read_text()
        once = format_text(text)
        if once == text:  # already canonical: formatting `once` again is this very call
            continue
        assert format_text(once) == once, path
        assert list(yaml.safe_load_all(once)) == list(yaml.safe_load_all(text))


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=12),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_any_data_keeps_its_meaning(data: object) -> None:
    text = yaml.safe_dump({"root": data}, default_flow_style=False, allow_unicode=True)
    try:
        out = format_text(text)
    except FormatError:
        return  # refused, never rewritten into something else
    # The meaning of the text fmt was given: PyYAML's own dump does not always read back as
    # the data it dumped (`\x85`, NEL, is dumped raw and read as a space), and fmt keeps
    # what the file means, not what produced it.
    assert yaml.safe_load(out) == yaml.safe_load(text)
    assert format_text(out) == out


@pytest.mark.parametrize("key", ["-_", "._", "+_", "-._"])
def test_a_key_ruamel_misreads_as_a_number_is_refused_not_crashed(key: str) -> None:
    """Hypothesis found these: PyYAML reads them as strings, ruamel's resolver as numbers and
    its constructor then raised IndexError/ValueError out of `pdp fmt`."""
    text = f"root:\n  {key}: null\n"
    assert yaml.safe_load(text) == {"root": {key: None}}  # a string key for the loader
    with pytest.raises(FormatError, match="cannot format a plain scalar"):
        format_text(text)


def test_check_reports_and_writes_nothing_then_fmt_fixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.yaml").write_text(MESSY)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("a:    1\n")
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    assert (tmp_path / "notes.yaml").read_text() == MESSY
    assert "would reformat" in capsys.readouterr().out
    assert main(["fmt", str(tmp_path)]) == 0
    assert main(["fmt", "--check", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("0 of 1 files would be reformatted")
    assert (tmp_path / ".hidden" / "x.yaml").read_text() == "a:    1\n"


def test_formatted_examples_still_pass_their_tests(tmp_path: Path) -> None:
    d = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", d)
    assert main(["fmt", str(d)]) == 0
    assert main(["test", str(d)]) == 0


def test_unparsable_file_is_an_error_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    assert main(["fmt", str(bad)]) == 2
    assert bad.read_text() == "a: [1, 2\n"
    assert "cannot parse" in capsys.readouterr().err

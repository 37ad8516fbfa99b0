"""Hostile input to the author's and operator's tools: `pdp fmt` on YAML bombs, deep nesting,
tags and random text; `pdp serve --config` with hostile files and variables. Each is a clear
error naming the problem — never a hang, a traceback or a rewritten file that means something
else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.cli.fmt import FormatError, format_text
from pdp.cli.main import main

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9)
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BILLION_LAUGHS, "aliases"),
        ("a: " + "[" * 200 + "]" * 200 + "\n", "nested deeper"),
        ("a: !!python/object/apply:os.system [echo pwned]\n", "cannot parse"),
        ("a: [1, 2\n", "cannot parse"),
        ("a: 1\na: 2\n", "cannot parse"),  # duplicate keys: ruamel refuses, the loader too
        ("x: " + "y" * (1024 * 1024 + 1) + "\n", "larger than"),
    ],
)
def test_fmt_refuses_hostile_yaml(text: str, needle: str) -> None:
    with pytest.raises(FormatError, match=needle):
        format_text(text)


def test_fmt_leaves_a_bomb_file_untouched(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert main(["fmt", str(tmp_path)]) == 2
    assert bomb.read_text() == BILLION_LAUGHS
    err = capsys.readouterr().err
    assert "aliases" in err and "Traceback" not in err


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab: -[]{}#'\"\n\t&*!|>%@`,?~0")), max_size=80))
def test_fmt_on_any_text_keeps_meaning_or_refuses(text: str) -> None:
    try:
        out = format_text(text)
    except FormatError:
        return
    if not text.strip():
        assert out == ""
        return
    assert list(yaml.safe_load_all(out)) == list(yaml.safe_load_all(text))
    assert format_text(out) == out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (BILLION_LAUGHS.replace("a:", "listen:", 1), "unknown key(s)"),
        ("listen: &l [127.0.0.1:1]\nunix: *l\nmask: [*l]\n", "takes plain values"),
        ("workers: !!python/object/apply:os.system [echo pwned]\n", "config"),
        ("decision_log: [" + ", ".join(["x"] * 3) + "]\nworkers: -1e309\n", "workers"),
        ("threads: 1\n" * 2, "config"),
        ("grace: {$gt: 1}\n", "takes one value"),
        ("\xff\xfe", "not UTF-8"),
        ("x: " + "y" * 300_000, "larger than"),
    ],
)
def test_hostile_config_is_a_clear_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    needle: str,
) -> None:
    monkeypatch.delenv("PDP_WORKERS", raising=False)  # tests/conftest.py: it would beat the file
    conf = tmp_path / "pdp.yaml"
    conf.write_bytes(text.encode("latin-1") if text == "\xff\xfe" else text.encode())
    assert main(["serve", "--config", str(conf), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("PDP_WORKERS", "1; rm -rf /", "takes a whole number from 1 to 256, or `auto`"),
        ("PDP_WATCH", "perhaps", "takes true or false"),
        ("PDP_TELEMETRY_WRITER", "../../etc/passwd", "invalid choice"),
    ],
)
def test_hostile_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    name: str,
    value: str,
    needle: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["serve", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert needle in err and name in err and "Traceback" not in err

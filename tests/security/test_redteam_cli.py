"""Red-team the author's CLI verbs that read a request file: a hostile file is a clear error
(exit 2), never a traceback. `pdp plan` crashed on JSON nested deeper than Python's recursion
limit; `pdp check` is the control (it always refused it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_redteam_bundle import POLICY, pdp

HOSTILE = {
    "deep": ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    "long-integer": ('{"principal": 1' + "0" * 5000 + "}", "(4300 digits)"),
}


@pytest.mark.parametrize("verb", ["plan", "check"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_request_file_is_a_clear_error(tmp_path: Path, verb: str, name: str) -> None:
    text, needle = HOSTILE[name]
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "doc.yaml").write_text(POLICY)
    (tmp_path / "req.json").write_text(text)
    result = pdp(
        verb, "--policies", str(tmp_path / "policies"), "--request", str(tmp_path / "req.json")
    )
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out and "error:" in out and needle in out, out

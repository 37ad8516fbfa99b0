"""`pdp serve` pauses the garbage collector for its imports (pdp.cli.main): it must be on again
however serve returns (and on in a running server: tests/server/test_serve_imports.py)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from pdp.cli import main as cli


def test_the_collector_is_on_again_whatever_way_serve_returns(tmp_path: Path) -> None:
    assert gc.isenabled()
    assert cli.main(["serve", "--policies", str(tmp_path), "--print-config"]) == 0
    assert gc.isenabled()
    with pytest.raises(SystemExit):  # a refused flag: argparse exits
        cli.main(["serve", "--print-config", "--workers", "many"])
    assert gc.isenabled()


def test_serving_turns_it_on_and_freezes_what_was_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen = gc.get_freeze_count()
    monkeypatch.setattr(cli, "_gc_paused", [True])
    gc.disable()
    try:
        cli.resume_gc()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
        gc.enable()
    cli.resume_gc()  # not paused: nothing to do
    assert gc.get_freeze_count() == 0

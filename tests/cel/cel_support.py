"""State shared by the CEL tests and their conftest (tests/cel is on sys.path, no package:
a `tests.cel` package named `cel` would shadow the generated `cel.expr` protobuf modules)."""

from __future__ import annotations

from pathlib import Path

# The vendored cel-spec conformance data (see its README.md for the upstream revision).
CONFORMANCE = Path(__file__).resolve().parent / "conformance"
SUMMARY: list[str] = []


def record_summary(line: str) -> None:
    """Keep a line for the terminal summary, so `pytest -q` shows it too."""
    SUMMARY.append(line)

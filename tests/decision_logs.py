"""Reading a decision log that a running server is still writing.

The server's file sink writes through a buffer, so a record can reach the file in two pieces,
and a test that polls the file can read the first: only newline-terminated lines are records.
(Two stress runs failed so: tests/limits/test_replicas.py, then test_gateway_xff.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def complete_lines(path: Path) -> list[str]:
    """The lines of `path` that end in a newline (none when it does not exist yet)."""
    if not path.exists():
        return []
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def complete_records(path: Path) -> list[dict[str, Any]]:
    """The records of `path` written so far, each whole."""
    return [json.loads(line) for line in complete_lines(path) if line]

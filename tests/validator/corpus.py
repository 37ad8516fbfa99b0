"""The validator corpus: one `.txt` per policy set, in a txtar-like layout.

    # what is wrong, in a sentence
    # expect: PDP106 docs.yaml:12:17
    -- docs.yaml --
    <file content>
    -- schemas/doc.json --
    <file content>

`# expect:` lines list every finding the set must produce (code and file:line:column) —
no more, no fewer. Good cases have none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pdp.errors import PolicyErrors
from pdp.lint import analyze
from pdp.model.findings import Finding
from pdp.model.loader import load_policy_files

CORPUS = Path(__file__).parent / "corpus"
_FILE = re.compile(r"^-- (.+) --$")


@dataclass(frozen=True)
class Case:
    name: str
    note: str
    expect: tuple[str, ...]  # "PDP106 docs.yaml:12:17"
    files: dict[str, bytes]


def read_case(path: Path) -> Case:
    note, expect, files = "", [], {}
    current: str | None = None
    lines: list[str] = []
    for line in path.read_text().splitlines():
        m = _FILE.match(line)
        if m:
            if current is not None:
                files[current] = ("\n".join(lines) + "\n").encode()
            current, lines = m.group(1), []
        elif current is not None:
            lines.append(line)
        elif line.startswith("# expect:"):
            expect.append(line.removeprefix("# expect:").strip())
        elif line.startswith("# ") and not note:
            note = line[2:]
    if current is not None:
        files[current] = ("\n".join(lines) + "\n").encode()
    return Case(path.stem, note, tuple(expect), files)


def cases(kind: str) -> list[Case]:
    return [read_case(p) for p in sorted((CORPUS / kind).glob("*.txt"))]


def findings_of(files: dict[str, bytes]) -> list[Finding]:
    """Load errors that are findings (PDP100) count too; other load errors fail the case."""
    try:
        source = load_policy_files(files)
    except PolicyErrors as exc:
        coded = [e for e in exc.errors if isinstance(e, Finding)]
        if len(coded) != len(exc.errors) or exc.partial is None:
            raise
        return coded + analyze(exc.partial)  # type: ignore[arg-type]
    return analyze(source)


def shown(f: Finding) -> str:
    return f"{f.code} {f.location}"

"""Findings: what the validator reports about a policy, each with a stable code.

A finding is a `PolicyError` (file:line:column, message) with a `code` (`PDP1xx` errors,
`PDP2xx` warnings; the list is in docs/POLICY_FORMAT.md) and a severity, rendered with the
source line and a caret under the column:

    resources/conversation.yaml:27:40: error PDP121: no matching overload for `_==_` ...
       27 |       condition: R.attr.archived == true
          |                                  ^
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pdp.errors import PolicyError, SourceLocation

Severity = Literal["error", "warning"]


class Finding(PolicyError):
    def __init__(
        self,
        code: str,
        severity: Severity,
        message: str,
        location: SourceLocation | None,
        *,
        snippet: str = "",
    ) -> None:
        self.code = code
        self.severity: Severity = severity
        super().__init__(message, location, snippet=snippet)

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        text = f"{where}{self.severity} {self.code}: {self.message}"
        return f"{text}\n{self.snippet}" if self.snippet else text

    def key(self) -> tuple[str, int, int, str, str]:
        loc = self.location
        if loc is None:
            return ("", 0, 0, self.code, self.message)
        return (loc.file, loc.line, loc.column, self.code, self.message)


def caret(files: Mapping[str, bytes], location: SourceLocation | None) -> str:
    """The source line of `location` with a caret under its column ("" when unknown)."""
    if location is None or location.file not in files:
        return ""
    try:
        lines = files[location.file].decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        return ""
    if not 1 <= location.line <= len(lines):
        return ""
    text = lines[location.line - 1].rstrip("\n")
    number = str(location.line)
    pad = " " * len(number)
    col = max(location.column - 1, 0)
    # Tabs keep their width under the caret.
    lead = "".join(c if c == "\t" else " " for c in text[:col])
    return f"  {number} | {text}\n  {pad} | {lead}^"


def make(
    files: Mapping[str, bytes],
    code: str,
    severity: Severity,
    message: str,
    location: SourceLocation | None,
) -> Finding:
    return Finding(code, severity, message, location, snippet=caret(files, location))

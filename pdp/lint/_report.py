"""Collects findings with the suppressions that may silence them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pdp.errors import SourceLocation
from pdp.lint.codes import severity
from pdp.model.findings import Finding, make
from pdp.model.policy import Suppression


class Reporter:
    def __init__(self, files: Mapping[str, bytes]) -> None:
        self.files = files
        self.findings: dict[tuple[str, int, int, str, str], Finding] = {}
        self.used: set[int] = set()  # id() of suppressions that silenced something

    def add(
        self,
        code: str,
        message: str,
        location: SourceLocation | None,
        suppress: Iterable[Suppression] = (),
    ) -> None:
        for s in suppress:
            if s.code == code:
                self.used.add(id(s))
                return
        f = make(self.files, code, severity(code), message, location)  # type: ignore[arg-type]
        self.findings.setdefault(f.key(), f)

    def result(self) -> list[Finding]:
        return sorted(self.findings.values(), key=lambda f: f.key())

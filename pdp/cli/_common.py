"""Helpers shared by the CLI verbs: load and compile a policy directory, report errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pdp.engine import PolicySet, compile_policy_set
from pdp.errors import PolicyError, PolicyErrors
from pdp.model.decision import BundleInfo
from pdp.model.findings import Finding
from pdp.model.loader import load_policy_dir
from pdp.model.policy import PolicySource

if TYPE_CHECKING:
    from pdp.engine import SuiteCheck


def load_and_compile(
    directory: str | Path, *, tests: bool = True
) -> tuple[PolicySource, PolicySet]:
    """Load and compile; raises PolicyErrors with every problem, loader's and compiler's.
    `tests=False`: without the test suites (`load_policy_dir`)."""
    try:
        source = load_policy_dir(directory, tests=tests)
    except PolicyErrors as exc:
        if not isinstance(exc.partial, PolicySource):
            raise
        errors = list(exc.errors)
        try:
            compile_policy_set(exc.partial)
        except PolicyErrors as more:
            errors.extend(more.errors)
        errors.sort(key=_position)
        raise PolicyErrors(errors) from None
    return source, compile_policy_set(source)


def _position(err: PolicyError) -> tuple[str, int, int]:
    loc = err.location
    return (loc.file, loc.line, loc.column) if loc else ("", 0, 0)


def policy_checks() -> tuple[SuiteCheck, ...]:
    """Checks beyond the YAML test suites that building, testing and serving all run."""
    from pdp.gateway.mapping_tests import mapping_check

    return (mapping_check,)


def directory_bundle_info(directory: str | Path) -> BundleInfo:
    """How a policy directory served or checked directly is named: the directory's name,
    version 0.0.0, and its git revision (`-dirty` with local changes), as a bundle would be."""
    return start_directory_bundle_info(directory)()


def start_directory_bundle_info(directory: str | Path) -> Callable[[], BundleInfo]:
    """`directory_bundle_info`, its git commands started now (they run while the caller loads
    the policies): call the result for it. A caller that fails before it does leaves them to
    finish on their own, reaped by `subprocess`."""
    from pdp.bundle.git import PendingGitInfo

    pending = PendingGitInfo(Path(directory))

    def result() -> BundleInfo:
        git = pending.result()
        revision = f"{git.revision}-dirty" if git.revision and git.dirty else git.revision
        return BundleInfo(name=Path(directory).resolve().name, version="0.0.0", revision=revision)

    return result


def print_policy_errors(exc: PolicyErrors) -> None:
    for err in exc.errors:
        print(err.render(), file=sys.stderr)
    n = len(exc.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


def print_findings(findings: list[Finding]) -> None:
    """Every finding with its caret, then a count by severity (nothing when there are none)."""
    if not findings:
        return
    for f in findings:
        print(f.render(), file=sys.stderr)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    print(
        f"{errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}",
        file=sys.stderr,
    )

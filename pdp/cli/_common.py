"""Helpers shared by the CLI verbs: load and compile a policy directory, report errors."""

from __future__ import annotations

import sys
from pathlib import Path

from pdp.engine import PolicySet, compile_policy_set
from pdp.errors import PolicyErrors
from pdp.model.loader import load_policy_dir
from pdp.model.policy import PolicySource


def load_and_compile(directory: str | Path) -> tuple[PolicySource, PolicySet]:
    """Load and compile; raises PolicyErrors with every problem, loader's and compiler's."""
    source = load_policy_dir(directory)
    return source, compile_policy_set(source)


def print_policy_errors(exc: PolicyErrors) -> None:
    for err in exc.errors:
        print(err.render(), file=sys.stderr)
    n = len(exc.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)

"""`pdp validate DIR [--strict]`: load, compile and lint every policy; print every finding.

Exit 1 when anything is an error: a load or compile error, an error finding (`PDP1xx`), or,
with `--strict`, a warning (`PDP2xx`). Findings are listed in docs/POLICY_FORMAT.md.
"""

from __future__ import annotations

import argparse

from pdp.errors import PolicyErrors
from pdp.lint import analyze, blocking

from ._common import load_and_compile, print_findings, print_policy_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate", help="check policies for errors")
    p.add_argument("directory", help="policy directory")
    p.add_argument(
        "--strict", action="store_true", help="warnings are errors too (as `pdp bundle build`)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        source, policy_set = load_and_compile(args.directory)
    except PolicyErrors as exc:
        print_policy_errors(exc)
        return 1
    findings = analyze(source)
    print_findings(findings)
    if blocking(findings, strict=args.strict):
        return 1
    warnings = len(findings)
    tail = f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    print(
        f"ok: {len(source.resource_policies)} resource policies, "
        f"{len(source.guard_policies)} guard policies, {len(source.definitions)} definitions, "
        f"{policy_set.rule_count} rules, {len(source.schemas)} schemas, "
        f"{len(source.test_suites)} test suites{tail}"
    )
    return 0

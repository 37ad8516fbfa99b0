"""`pdp validate DIR`: load and compile every policy, print every error, exit 1 if any."""

from __future__ import annotations

import argparse

from pdp.errors import PolicyErrors

from ._common import load_and_compile, print_policy_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate", help="check policies for errors")
    p.add_argument("directory", help="policy directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        source, policy_set = load_and_compile(args.directory)
    except PolicyErrors as exc:
        print_policy_errors(exc)
        return 1
    print(
        f"ok: {len(source.resource_policies)} resource policies, "
        f"{len(source.guard_policies)} guard policies, {len(source.definitions)} definitions, "
        f"{policy_set.rule_count} rules, {len(source.test_suites)} test suites"
    )
    return 0

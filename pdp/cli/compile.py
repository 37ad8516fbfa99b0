"""`pdp compile --policies DIR [--policy ID] [--rule ID]`: show the Python each condition runs.

A debugging aid: every CEL condition compiles to one Python function (`def _cel(act):`), and
this prints it under a comment naming the policy, rule and file:line:column, with the CEL
source and the constants the function reads. Exit 1 on policy errors, 2 when the filters
match no condition.
"""

from __future__ import annotations

import argparse

from pdp.engine.compile_listing import python_listing
from pdp.errors import PolicyErrors

from ._common import load_and_compile, print_policy_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compile", help="show the Python each CEL condition compiles to")
    p.add_argument("--policies", required=True, metavar="DIR", help="policy directory")
    p.add_argument("--policy", metavar="ID", help="only the conditions of this policy")
    p.add_argument(
        "--rule", metavar="ID", help="only the conditions of this rule (derived role, limit)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        source, _policy_set = load_and_compile(args.policies)
    except PolicyErrors as exc:
        print_policy_errors(exc)
        return 1
    listed = python_listing(source, policy=args.policy, rule=args.rule)
    if not listed:
        wanted = " and ".join(
            f"{what} `{value}`"
            for what, value in (("policy", args.policy), ("rule", args.rule))
            if value is not None
        )
        print(f"error: no condition of {wanted or 'any rule'} in `{args.policies}`")
        return 2
    print("\n\n".join(item.render() for item in listed))
    return 0

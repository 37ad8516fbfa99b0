"""`pdp plan --policies DIR --request FILE|-`: which resources of a kind may a principal act on.

The request is `{"principal", "resource": {"kind", "tenant"?}, "action", "context"?}`; the plan
(docs/PLANNING.md) is printed as JSON. Exit 0 with a plan, 2 for a bad request, 3 when the
policies cannot be planned exactly (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

from pdp.engine import Engine
from pdp.errors import PolicyErrors, RequestError
from pdp.plan import PlanRefused, parse_plan_request, plan

from ._common import load_and_compile, print_policy_errors


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="plan which resources of a kind a principal may access")
    p.add_argument("--policies", required=True, metavar="DIR", help="policy directory")
    p.add_argument("--request", required=True, metavar="FILE", help="plan request JSON, or -")
    p.add_argument("--cel", action="store_true", help="print only the filter as CEL")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        _source, policy_set = load_and_compile(args.policies)
    except PolicyErrors as exc:
        print_policy_errors(exc)
        return 1
    try:
        if args.request == "-":
            text = sys.stdin.read()
        else:
            with open(args.request) as f:
                text = f.read()
        raw = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read request: {exc}", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: cannot read request: JSON nested too deeply", file=sys.stderr)
        return 2
    try:
        result = plan(Engine(policy_set), parse_plan_request(raw))
    except RequestError as exc:
        print(f"error: invalid request: {exc}", file=sys.stderr)
        return 2
    except PlanRefused as exc:
        print(f"error: cannot plan: {exc.message}", file=sys.stderr)
        return 3
    if args.cel:
        print(result.cel)
    else:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
    return 0

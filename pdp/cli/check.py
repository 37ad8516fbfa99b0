"""`pdp check --policies DIR --request FILE|-`: one decision request (JSON) in, decisions out."""

from __future__ import annotations

import argparse
import json
import sys

from pdp.engine import Engine
from pdp.errors import PolicyErrors, RequestError
from pdp.model.request import load_json_request, parse_check_request

from ._common import directory_bundle_info, load_and_compile, print_policy_errors
from .render import story, table


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check", help="decide one request given as JSON")
    p.add_argument("--policies", required=True, metavar="DIR", help="policy directory")
    p.add_argument("--request", required=True, metavar="FILE", help="request JSON file, or -")
    p.add_argument(
        "--explain", action="store_true", help="tell every step: policy, rule, condition, values"
    )
    p.add_argument(
        "--output",
        choices=("table", "json"),
        default="table",
        help="a readable table (default) or the JSON response",
    )
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
    except (OSError, ValueError) as exc:
        print(f"error: cannot read request: {exc}", file=sys.stderr)
        return 2
    try:
        raw = load_json_request(text)  # duplicate keys refused, as over gRPC's JSON
        if args.explain and isinstance(raw, dict):
            raw = {**raw, "explain": True}
        request = parse_check_request(raw)
    except RequestError as exc:
        print(f"error: invalid request: {exc}", file=sys.stderr)
        return 2
    # Named as `pdp serve --policies DIR` names it, so the two print the same bundle.
    response = Engine(policy_set, directory_bundle_info(args.policies)).check(request).to_dict()
    if args.output == "json":
        json.dump(response, sys.stdout, indent=2, default=str)
        print()
    elif args.explain:
        print(story(response, raw))
    else:
        print(table(response))
    return 0

"""`pdp check --policies DIR --request FILE|-`: one decision request (JSON) in, decisions out."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from pdp.engine import DeadlineExceeded, Engine
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
    p.add_argument(
        "--deadline-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="stop a decision not complete within this many milliseconds of the request being "
        "read, as a served call's deadline stops it (exit 3, no decision printed); default: none",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    deadline_ms = args.deadline_ms
    if not (deadline_ms >= 0 and math.isfinite(deadline_ms)):  # NaN too
        print(
            "error: --deadline-ms takes a positive number of milliseconds (0: no deadline)",
            file=sys.stderr,
        )
        return 2
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
    # Counted from here, as a server counts from the call's arrival: loading and compiling the
    # policies is the server's start-up, not the call's.
    stop_at = time.monotonic() + deadline_ms / 1000 if deadline_ms else math.inf
    # Named as `pdp serve --policies DIR` names it, so the two print the same bundle.
    engine = Engine(policy_set, directory_bundle_info(args.policies))
    try:
        response = engine.check(request, stop_at=stop_at).to_dict()
    except DeadlineExceeded as exc:
        print(
            "error: deadline exceeded before the decision was complete "
            f"(decided {exc.done} of {exc.total} resources)",
            file=sys.stderr,
        )
        return 3
    if args.output == "json":
        json.dump(response, sys.stdout, indent=2, default=str)
        print()
    elif args.explain:
        print(story(response, raw))
    else:
        print(table(response))
    return 0

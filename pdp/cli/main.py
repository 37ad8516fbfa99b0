"""`pdp` command line: one verb per module, each exposing `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers) -> None`, and its parsers set `func=run(args) -> int`.
VERB_MODULES = (
    "pdp.cli.validate",
    "pdp.cli.test",
    "pdp.cli.check",
    "pdp.cli.compile",
    "pdp.cli.plan",
    "pdp.cli.serve",
    "pdp.cli.bundle",
    "pdp.cli.keygen",
    "pdp.cli.fmt",
    "pdp.cli.health",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdp", description="pdp policy decision point")
    from pdp import __version__

    parser.add_argument("--version", action="version", version=f"pdp {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # verb not written yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pdp ... | head`: the reader left; say nothing more (and not at interpreter exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

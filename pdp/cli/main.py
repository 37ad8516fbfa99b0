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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv` naming a verb first (each module is named after its verb), only
    that verb's: importing every verb's module costs `pdp serve` a second of start-up here
    (the linter, the bundle builder, ...)."""
    parser = argparse.ArgumentParser(prog="pdp", description="pdp policy decision point")
    from pdp import __version__

    parser.add_argument("--version", action="version", version=f"pdp {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND")
    modules = VERB_MODULES
    if argv and f"pdp.cli.{argv[0]}" in VERB_MODULES:
        modules = (f"pdp.cli.{argv[0]}",)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # verb not written yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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

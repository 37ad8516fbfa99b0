"""`pdp` command line: one verb per module, each exposing `register(subparsers)`."""

from __future__ import annotations

import argparse
import gc
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


# Whether `main` paused the garbage collector for `pdp serve`'s start-up (`resume_gc`).
_gc_paused = [False]


def resume_gc() -> None:
    """The collector back on once `pdp serve` has imported what it serves with, and what it
    imported frozen (kept out of every later pass; a forked worker's pages stay shared). A
    no-op unless `main` paused it."""
    if _gc_paused[0]:
        _gc_paused[0] = False
        gc.freeze()
        gc.enable()


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
    # `pdp serve` starts with the collector off: its start-up is mostly imports, whose objects
    # live as long as the process, and the ~80 passes over them were ~6% of its CPU to the
    # first decision (bench/RESULTS.md, session 23). serve turns it on (`resume_gc`) once its
    # imports are done; here, whatever way this returns.
    if argv[:1] == ["serve"] and gc.isenabled():
        gc.disable()
        _gc_paused[0] = True
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `pdp ... | head`: the reader left; say nothing more (and not at interpreter exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if _gc_paused[0]:
            _gc_paused[0] = False
            gc.enable()


if __name__ == "__main__":
    sys.exit(main())

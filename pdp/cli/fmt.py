"""`pdp fmt PATH...`: rewrite policy YAML in one canonical layout, keeping every comment.

The layout: two-space mappings, sequences indented under their key (`- ` at +2), no padding
to align values, LF line endings, one final newline; flow collections (`{scopes: [...]}`),
quoting, key order, anchors and comments stay as written. ruamel.yaml's round-trip parser does
the rewrite (it keeps comments, which a plain YAML dump drops); every result is checked to
load to exactly the same data as its source and to be a fixed point (formatting it again
changes nothing) before it is written, so `pdp fmt` can never change what a policy means.

`--check` writes nothing and exits 1 when a file would change (for CI); `--diff` prints the
changes.
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import sys
from pathlib import Path

from pdp.model.loader import MAX_DEPTH, MAX_FILE_BYTES

YAML_SUFFIXES = (".yaml", ".yml")


class FormatError(Exception):
    """A file that cannot be formatted safely (it does not parse, or would change meaning)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fmt", help="rewrite policy YAML in the canonical layout")
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or directories")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file would change"
    )
    p.add_argument("--diff", action="store_true", help="print a unified diff of the changes")
    p.set_defaults(func=run)


def _yaml(explicit_start: bool):  # -> ruamel.yaml.YAML
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096  # never re-wrap a long condition: a line break inside CEL reads badly
    y.preserve_quotes = True
    y.explicit_start = explicit_start
    return y


def format_text(text: str) -> str:
    """The canonical layout of one YAML file's text; raises FormatError."""
    import yaml
    from ruamel.yaml.error import YAMLError

    from pdp.model.loader import meaning  # the meaning check reads as the policy loader does

    src = text.replace("\r\n", "\n")
    if not src.strip():
        return ""
    if len(src.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise FormatError(f"larger than {MAX_FILE_BYTES} bytes (the policy loader's limit)")
    explicit = src.lstrip().startswith("---")
    try:
        _refuse_what_the_loader_refuses(src)
        y = _yaml(explicit)
        docs = list(y.load_all(src))
        out = io.StringIO()
        y.dump_all(docs, out)
        new = out.getvalue()
        # An already canonical file (the usual one under `fmt --check`) prints back as itself:
        # the stability and meaning checks below would compare it with itself, so it is read
        # once (still by both readers, for what they refuse).
        texts = [src] if new == src else [src, new]
        again = new
        if new != src:
            printed = io.StringIO()
            y.dump_all(list(_yaml(explicit).load_all(new)), printed)
            again = printed.getvalue()
    except (YAMLError, AssertionError) as exc:  # ruamel asserts on `%YAML 1.3`
        raise FormatError(f"cannot parse: {_one_line(exc)}") from None
    except (ValueError, IndexError) as exc:
        # ruamel's resolver reads some plain scalars PyYAML (the loader) reads as strings as
        # numbers, and its constructors then fail on them: `-_` as an int, `._` as a float.
        raise FormatError(
            f"cannot format a plain scalar: {_one_line(exc)}; left as it is"
        ) from None
    try:
        # The loader's reading is what a policy means; PyYAML's safe reading as well refuses
        # tags no policy may hold (`!!python/object`), as it always has.
        meanings = [meaning(t) for t in texts]
        safe = [list(yaml.safe_load_all(t)) for t in texts]
        same = meanings[0] == meanings[-1] and safe[0] == safe[-1]
    except yaml.YAMLError as exc:
        raise FormatError(f"cannot parse: {_one_line(exc)}") from None
    if not same:
        raise FormatError("the canonical layout would change its meaning; left as it is")
    if again != new:
        raise FormatError("the canonical layout is not stable for this file; left as it is")
    return new


def _refuse_what_the_loader_refuses(src: str) -> None:
    """Aliases (a "billion laughs" bomb would make the meaning check exponential) and nesting
    deeper than the loader's limit, found in one linear pass over the parser's events."""
    from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent

    depth = 0
    for event in _yaml(False).parse(src):
        if isinstance(event, AliasEvent):
            mark = event.start_mark
            raise FormatError(
                f"{mark.line + 1}:{mark.column + 1}: yaml aliases (`*name`) are not supported"
            )
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise FormatError(f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def yaml_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out += [
                    Path(root, f)
                    for f in sorted(files)
                    if f.endswith(YAML_SUFFIXES) and not f.startswith(".")
                ]
        else:
            out.append(path)
    return out


def run(args: argparse.Namespace) -> int:
    changed = errors = 0
    files = yaml_files(args.paths)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
            new = format_text(text)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
            errors += 1
            continue
        except FormatError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            errors += 1
            continue
        if new == text:
            continue
        changed += 1
        if args.diff:
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(True), new.splitlines(True), f"{path}", f"{path} (formatted)"
                )
            )
        if args.check:
            print(f"would reformat {path}")
        else:
            _write_atomic(path, new)
            print(f"reformatted {path}")
    verb = "would be reformatted" if args.check else "reformatted"
    print(
        f"{changed} of {len(files)} files {verb}" + (f", {errors} not formatted" if errors else "")
    )
    if errors:
        return 2
    return 1 if args.check and changed else 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.fmt")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, path.stat().st_mode)
    os.replace(tmp, path)

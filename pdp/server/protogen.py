"""Regenerate the Python code of our `.proto` files: `python -m pdp.server.protogen` (`make proto`).

Each `Target` names a proto root, the files to compile under it, and the package that receives
the code. protoc writes absolute imports named after the proto packages (`from pdp.v1 import
decision_pb2`), which would resolve to our own `pdp` package (or, for Envoy, to the `envoy`
package of another wheel); every import of a module generated in the same run is rewritten to
a package-relative one, so the generated tree works wherever it is placed. A test regenerates
into a temporary directory and fails when the committed code is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lines that change with the grpcio-tools release, not with the .proto: ignored by `is_stale`.
_VERSION_LINE = re.compile(
    r"^(# Protobuf Python Version:.*|\s*\d+,\s*$|GRPC_GENERATED_VERSION = .*)$", re.MULTILINE
)


@dataclass(frozen=True)
class Target:
    """Compile `files` (globs relative to `proto_root`) into the package directory `out`."""

    name: str
    proto_root: Path
    files: tuple[str, ...]
    out: Path

    def sources(self) -> list[str]:
        found = {
            str(p.relative_to(self.proto_root))
            for pattern in self.files
            for p in self.proto_root.glob(pattern)
        }
        return sorted(found)


TARGETS: tuple[Target, ...] = (
    Target(
        name="pdp",
        proto_root=ROOT / "proto",
        files=("pdp/v1/*.proto",),
        out=ROOT / "pdp" / "server" / "_gen",
    ),
    # The Envoy ext_authz v3 subset served by pdp.gateway (see docs/GATEWAY.md).
    Target(
        name="envoy",
        proto_root=ROOT / "proto",
        files=("envoy/**/*.proto",),
        out=ROOT / "pdp" / "gateway" / "_gen",
    ),
)


def _include_dirs(target: Target) -> list[str]:
    import google.rpc
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # googleapis-common-protos ships google/rpc/*.proto beside its generated modules, so code
    # importing them uses those modules rather than a second copy.
    googleapis = Path(next(iter(google.rpc.__path__))).parents[1]
    return [str(target.proto_root), str(well_known), str(googleapis)]


_FROM_IMPORT = re.compile(r"^from ([\w.]+) import (\w+)", re.MULTILINE)
_PLAIN_IMPORT = re.compile(r"^import (\w+) as (\w+)$", re.MULTILINE)


def _relativize(text: str, module: tuple[str, ...], generated: set[tuple[str, ...]]) -> str:
    """Rewrite imports of modules in `generated` to be relative to `module`'s package."""
    package = module[:-1]

    def relative(target: tuple[str, ...]) -> str:
        common = 0
        while common < min(len(package), len(target)) and package[common] == target[common]:
            common += 1
        dots = "." * (len(package) - common + 1)
        return dots + ".".join(target[common:])

    def from_import(m: re.Match[str]) -> str:
        pkg = tuple(m.group(1).split("."))
        if (*pkg, m.group(2)) not in generated:
            return m.group(0)
        return f"from {relative(pkg)} import {m.group(2)}"

    def plain_import(m: re.Match[str]) -> str:
        if (m.group(1),) not in generated:
            return m.group(0)
        return f"from {relative(())} import {m.group(1)} as {m.group(2)}"

    return _PLAIN_IMPORT.sub(plain_import, _FROM_IMPORT.sub(from_import, text))


def generate(target: Target, out: Path | None = None) -> list[Path]:
    """Generate `target` into `out` (default: its package directory); returns files written."""
    from grpc_tools import protoc

    out = out or target.out
    sources = target.sources()
    if not sources:
        raise RuntimeError(f"no .proto files match {target.files} under {target.proto_root}")
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", *(f"-I{d}" for d in _include_dirs(target))]
        args += [f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *sources]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {target.name}")
        files = sorted(p for p in Path(tmp).rglob("*") if p.suffix in (".py", ".pyi"))
        generated = {p.relative_to(tmp).with_suffix("").parts for p in files}
        written = []
        for src in files:
            rel = src.relative_to(tmp)
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            module = rel.with_suffix("").parts
            dest.write_text(_relativize(src.read_text(), module, generated))
            written.append(dest)
    for d in {p.parent for p in written} | {out}:
        while d.is_relative_to(out):
            init = d / "__init__.py"
            if not init.exists():
                init.write_text("")
            d = d.parent
    return written


def is_stale(target: Target) -> list[str]:
    """Files whose committed content differs from a fresh generation (version stamps aside)."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in generate(target, Path(tmp)):
            rel = fresh.relative_to(tmp)
            committed = target.out / rel
            if not committed.exists() or _VERSION_LINE.sub("", committed.read_text()) != (
                _VERSION_LINE.sub("", fresh.read_text())
            ):
                stale.append(str(rel))
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdp.server.protogen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    status = 0
    for target in TARGETS:
        if args.check:
            for rel in is_stale(target):
                print(f"stale: {target.out / rel}", file=sys.stderr)
                status = 1
            continue
        for path in generate(target):
            print(path.relative_to(ROOT), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

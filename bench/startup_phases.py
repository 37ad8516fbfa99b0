"""Where `pdp serve --workers 1` spends its CPU before its first decision, phase by phase. Not a
test: a benchmark.

Reproduce:  .venv/bin/python bench/startup_phases.py                 (7 fresh interpreters)
            .venv/bin/python bench/startup_phases.py --python OTHER/.venv/bin/python
            .venv/bin/python bench/startup_phases.py --transport native --policies bench/peers/pdp
            .venv/bin/python bench/startup_phases.py --transport native --anatomy

Each run is a fresh interpreter doing what `pdp serve --policies policies/ --workers 1` does,
in order, timed with `time.process_time` (CPU, which a busy machine does not inflate as it
does the wall clock), the collector paused during the imports as `pdp serve` pauses it: build
`pdp serve`'s parser (which imports protobuf, the engine and, with `--transport grpcio`,
grpc); the engine's own imports; build and start the server on a free port, with Envoy's
ext_authz and rate-limit services as `pdp serve` makes them (on the native transport, on
their first call); load, check, compile and validate the policies (`--policies`, `policies/`
by default) and read their git revision. Prints the median of each phase and the modules
imported by the end (a lazy import shows there). `--anatomy` then times, in separate runs
(its wrappers cost time of their own), the two stdlib steps an import profile shows most of:
building dataclasses and compiling regular expressions. `--python` runs another interpreter
(another checkout's venv: run from outside any checkout, with `-P`, so its own pdp is
imported).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("parser and its imports", "the engine's imports", "server", "policies")

CHILD = """
import gc
import sys
import time
c0 = time.process_time()
gc.disable()  # as pdp.cli.main does for serve, until its imports are done (resume_gc)
import pdp.cli.main as m
argv = ["serve", "--policies", POLICIES, "--listen", "127.0.0.1:0", "--workers", "1",
        "--transport", TRANSPORT]
args = m.build_parser(argv).parse_args(argv)
c1 = time.process_time()
from pdp.engine import EngineHolder
from pdp.cli import _common
c2 = time.process_time()
from pdp.cli.serve import _ext_authz, _rate_limit_service, _start_policy_dir, server_config
holder = EngineHolder()
config = server_config(args)
extra = [_ext_authz(args, holder, config, None), _rate_limit_service(args, holder)]
if TRANSPORT == "grpcio":
    from pdp.server import build_server
    server = build_server(holder, config, observer=None, extra_services=extra)
else:
    from pdp.cli.serve import _native_server
    server = _native_server(holder, config, None, extra)
gc.freeze()
gc.enable()
server.start()
c3 = time.process_time()
_start_policy_dir(POLICIES, holder)
c4 = time.process_time()
server.stop(0)
print(c1 - c0, c2 - c1, c3 - c2, c4 - c3, len(sys.modules))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--python", default=sys.executable, help="the interpreter to time")
    parser.add_argument("--transport", choices=("grpcio", "native"), default="grpcio")
    parser.add_argument("--policies", type=Path, default=ROOT / "policies")
    parser.add_argument(
        "--anatomy",
        action="store_true",
        help="also time, in separate runs, the dataclasses built and the regular expressions "
        "compiled on the way to the first decision",
    )
    args = parser.parse_args()
    code = CHILD.replace("POLICIES", repr(str(args.policies.resolve())))
    code = code.replace("TRANSPORT", repr(args.transport))
    rows: list[list[float]] = []
    for _ in range(args.runs):
        out = subprocess.run(
            [args.python, "-P", "-c", code], capture_output=True, text=True, check=True, cwd="/"
        )
        rows.append([float(x) for x in out.stdout.split()])
    print(
        f"CPU seconds by phase, median of {args.runs} runs, {args.python}, --transport "
        f"{args.transport}, {args.policies}"
    )
    for i, name in enumerate(PHASES):
        print(f"  {name:<24} {statistics.median(r[i] for r in rows):.3f}")
    print(f"  {'total':<24} {statistics.median(sum(r[:4]) for r in rows):.3f}")
    print(f"  modules imported: {statistics.median(int(r[4]) for r in rows)}")
    if args.anatomy:
        anatomy(args, code)
    return 0


# Wraps the two stdlib steps that a profile of the imports shows most of (the wrappers add
# their own time, so these runs are kept apart from the phases above).
TIMED = """
import collections, dataclasses, json, re._compiler, sys, time
spent = {"dataclass": [0.0, 0], "regex": [0.0, 0]}
where = collections.Counter()  # (step, module) -> CPU seconds
def caller():
    f = sys._getframe(2)
    while f.f_back and f.f_globals.get("__name__", "").partition(".")[0] in ("re", "sre_compile"):
        f = f.f_back
    return f.f_globals.get("__name__", "?")
def timed(fn, what):
    def wrapper(*a, **k):
        t = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            took = time.process_time() - t
            spent[what][0] += took
            spent[what][1] += 1
            where[what, a[0].__module__ if what == "dataclass" else caller()] += took
    return wrapper
dataclasses._process_class = timed(dataclasses._process_class, "dataclass")
re._compiler.compile = timed(re._compiler.compile, "regex")
"""


def anatomy(args: argparse.Namespace, code: str) -> None:
    code = TIMED + code.replace(
        "print(c1 - c0,", 'print(*spent["dataclass"], *spent["regex"], c1 - c0,'
    )
    code += "print(json.dumps([[k[0], k[1], v] for k, v in where.items()]))\n"
    rows = []
    modules: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        out = subprocess.run(
            [args.python, "-P", "-c", code], capture_output=True, text=True, check=True, cwd="/"
        )
        numbers, by_module = out.stdout.splitlines()[-2:]
        rows.append([float(x) for x in numbers.split()])
        for step, module, took in json.loads(by_module):
            modules.setdefault((step, module), []).append(took)
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"Of that CPU, in {args.runs} more runs with these two stdlib steps timed:")
    for step, label, total, count in (
        ("dataclass", "dataclasses built (`@dataclass`)", med[0], med[1]),
        ("regex", "regular expressions compiled", med[2], med[3]),
    ):
        top = sorted(
            ((statistics.median(v), m) for (s, m), v in modules.items() if s == step),
            reverse=True,
        )[:4]
        print(f"  {int(count)} {label:<34} {total:.3f}")
        print("    most by: " + ", ".join(f"{m} {t:.3f}" for t, m in top))


if __name__ == "__main__":
    sys.exit(main())

"""Engine benchmark (not a test): pdp in-process vs the same decisions hand-written in Python.

Reproduce:  .venv/bin/python bench/engine.py            (from the repository root)
            .venv/bin/python bench/engine.py --quick    (fewer rounds)

1. Loads and compiles the example policies (policies/), reads the reference requests
   (policies/requests/*.json).
2. Checks that pdp and the hand-written floor (bench/floor.py) give the same effect for every
   decision of every test-suite case and reference request: a benchmark of wrong answers is
   worthless.
3. For each reference request: median µs per request and per decision (resource x action), for
   pdp (`Engine.check` on a parsed request; request parsing timed separately) and for the floor,
   and the ratio pdp / floor.
4. Decision time with 10 and with 10,000 unrelated resource policies loaded, and their ratio;
   the 10,000-policy load and compile times; memory per 1,000 rules (tracemalloc).

The unrelated policies (UNRELATED) are generated from one template: their conditions differ
only in constants, so they come in three shapes. Every condition is still parsed and turned
into Python source on its own and gets its own function, but Python's compile() runs once per
shape (constants are globals of the generated function; pdp/cel/_compile.py `_code_for`), and
`R.attr.owner == P.id`, the same in every policy and reading no constant or variable, is
compiled once per policy set (`pdp.cel.batch`). The compile time and memory figures are those
of such a repetitive policy set; conditions that all differ in structure (field names,
operators) cost several times as long to compile, Python's compile() then running for each.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import floor  # noqa: E402

from pdp.engine import Engine, compile_policy_set  # noqa: E402
from pdp.engine.suites import iter_case_requests  # noqa: E402
from pdp.model.loader import load_policy_dir, load_policy_files  # noqa: E402
from pdp.model.request import parse_check_request  # noqa: E402


def timeit(fn: Callable[[], object], rounds: int, inner: int) -> float:
    """Median seconds per call over `rounds` batches of `inner` calls."""
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def request_time(raw: dict) -> datetime:
    t = raw.get("context", {}).get("time")
    if t:
        return datetime.fromisoformat(t.replace("Z", "+00:00"))
    return datetime.now(UTC)


def effects(engine: Engine, raw: dict) -> list[dict[str, str]]:
    response = engine.check(parse_check_request(raw))
    return [{a: d.effect for a, d in r.actions.items()} for r in response.results]


def check_agreement(engine: Engine, source, requests: dict[str, dict]) -> int:
    checked = 0
    cases = [(f"{s.id}/{c.name}", raw) for s, c, raw in iter_case_requests(source.test_suites)]
    for name, raw in [*cases, *requests.items()]:
        ours = effects(engine, raw)
        theirs = floor.decide_request(raw, request_time(raw))
        if ours != theirs:
            sys.exit(f"disagreement on {name}: pdp {ours} vs hand-written {theirs}")
        checked += sum(len(r) for r in ours)
    return checked


UNRELATED = """apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: unrelated-{i}}}
spec:
  resource: unrelated_{i}
  actions:
    read: {{scopes: ["u{i}:read"]}}
    write: {{scopes: ["u{i}:write"]}}
  rules:
    - id: deny-archived
      actions: [write]
      effect: deny
      condition: has(R.attr.archived) && R.attr.archived == true && R.attr.age > {i}
    - id: owner
      actions: ["*"]
      effect: allow
      condition: R.attr.owner == P.id
    - id: readers
      actions: [read]
      effect: allow
      roles: [reader]
      condition: P.id in R.attr.readers || P.attr.level >= {i}
"""


# The worst case for compile time: every condition has its own field names, so no two share
# generated code (UNRELATED's differ only in constants, as templated per-tenant policies do).
UNRELATED_DISTINCT = (
    UNRELATED.replace("R.attr.archived", "R.attr.archived{i}")
    .replace("R.attr.owner", "R.attr.owner{i}")
    .replace("R.attr.readers", "R.attr.readers{i}")
)


def distinct_load_compile(n: int = 10_000) -> tuple[float, float]:
    """Load and compile seconds of `n` policies whose conditions all differ in structure."""
    files = {f"unrelated/u{i}.yaml": UNRELATED_DISTINCT.format(i=i).encode() for i in range(n)}
    t0 = time.perf_counter()
    source = load_policy_files(files)
    t1 = time.perf_counter()
    compile_policy_set(source)
    return t1 - t0, time.perf_counter() - t1


def scaling(rounds: int, inner: int) -> tuple[float, float, float, float]:
    """µs for one reference request with 10 and with 10,000 unrelated policies; load seconds
    and compile seconds of the 10,000-policy set.

    The two engines are timed in alternating rounds so that drift in machine load hits both.
    """
    base = {
        p.relative_to(ROOT / "policies").as_posix(): p.read_bytes()
        for p in sorted((ROOT / "policies").rglob("*"))
        if p.is_file() and p.suffix in (".yaml", ".yml") and not p.name.endswith("_test.yaml")
    }
    raw = json.loads((ROOT / "policies/requests/object_level.json").read_text())
    request = parse_check_request(raw)
    engines = []
    load_s = compile_s = 0.0
    for n in (10, 10_000):
        files = dict(base)
        for i in range(n):
            files[f"unrelated/u{i}.yaml"] = UNRELATED.format(i=i).encode()
        t0 = time.perf_counter()
        source = load_policy_files(files)
        t1 = time.perf_counter()
        engines.append(Engine(compile_policy_set(source)))
        load_s, compile_s = t1 - t0, time.perf_counter() - t1
    samples: list[list[float]] = [[], []]
    for _ in range(rounds):
        for k, engine in enumerate(engines):
            samples[k].append(timeit(lambda e=engine: e.check(request), 1, inner))
    small, large = (statistics.median(s) * 1e6 for s in samples)
    return small, large, load_s, compile_s


def memory_per_1000_rules(n: int = 1000) -> float:
    """MiB allocated (tracemalloc) by loading and compiling `n` unrelated policies, per 1,000
    rules. Measured on its own, smaller set: tracemalloc slows allocation several-fold."""
    files = {f"unrelated/u{i}.yaml": UNRELATED.format(i=i).encode() for i in range(n)}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        policy_set = compile_policy_set(load_policy_files(files))
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return used / 2**20 / (policy_set.rule_count / 1000)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--distinct",
        action="store_true",
        help="also time 10,000 policies whose conditions all differ in structure",
    )
    args = ap.parse_args()
    rounds, inner = (5, 200) if args.quick else (15, 1000)

    source = load_policy_dir(ROOT / "policies")
    engine = Engine(compile_policy_set(source))
    requests = {
        p.stem: json.loads(p.read_text())
        for p in sorted((ROOT / "policies/requests").glob("*.json"))
    }
    checked = check_agreement(engine, source, requests)
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    print(f"agreement: pdp and hand-written Python agree on {checked} decisions\n")
    header = f"{'request':24} {'checks':>6} {'parse µs':>9} {'pdp µs':>9} {'floor µs':>9} {'pdp/dec':>8} {'floor/dec':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    ratios = []
    for name, raw in requests.items():
        parsed = parse_check_request(raw)
        now = request_time(raw)
        n = sum(len(r["actions"]) for r in raw["resources"])
        t_parse = timeit(lambda raw=raw: parse_check_request(raw), rounds, inner) * 1e6
        t_pdp = timeit(lambda p=parsed: engine.check(p), rounds, inner) * 1e6
        t_floor = (
            timeit(lambda raw=raw, now=now: floor.decide_request(raw, now), rounds, inner) * 1e6
        )
        ratio = t_pdp / t_floor
        ratios.append(ratio)
        print(
            f"{name:24} {n:6} {t_parse:9.1f} {t_pdp:9.1f} {t_floor:9.1f} "
            f"{t_pdp / n:8.2f} {t_floor / n:9.2f} {ratio:5.2f}x"
        )
    print(f"\nmedian pdp / hand-written ratio: {statistics.median(ratios):.2f}x (target <= 3x)")
    t10, t10k, load_s, compile_s = scaling(rounds, inner // 2)
    mib = memory_per_1000_rules()
    print(f"memory: {mib:.2f} MiB per 1,000 rules (tracemalloc, 1,000 policies x 3 rules)")
    print(f"10,000 policies: load {load_s:.1f} s + compile {compile_s:.1f} s (target total < 10 s)")
    print(
        f"decision with 10 unrelated policies: {t10:.1f} µs, with 10,000: {t10k:.1f} µs, "
        f"ratio {t10k / t10:.2f} (target <= 1.3); "
        f"10,000 policies loaded+compiled in {load_s + compile_s:.1f} s"
    )
    if args.distinct:
        d_load, d_compile = distinct_load_compile()
        print(
            f"10,000 policies, every condition of its own structure: load {d_load:.1f} s + "
            f"compile {d_compile:.1f} s = {d_load + d_compile:.1f} s"
        )


if __name__ == "__main__":
    main()

"""What one resource can cost within the limits (not a test): the figure behind the deadlines.

    .venv/bin/python bench/one_resource.py [--deadline-ms 100] [--only NAME]

A gRPC deadline or `--http-timeout` is checked between the resources of a batch; this bench
measures how long ONE resource can take when an author's policies and a caller's request push
every limit at once (pdp.model.request.Limits: 20,000 attribute values, strings of 64 KiB,
1,000 checks; the CEL comprehension budget of 100,000 iterations per evaluation, counting
their bodies' work, pdp/cel/_macros.py). Each case is one request of one resource, decided
in process by `Engine.check`, and prints the milliseconds it took:

- `budget-cheap`: one condition whose nested comprehension spends the whole budget on
  integer comparisons (315 + 315^2 iterations);
- `budget-re2`: the same budget spent on RE2 scans of a 99-character string (46^3 iterations:
  a scan of fewer than 100 characters is not charged);
- `budget-x10-rules`: ten such allow rules on one action (each evaluation has its own budget:
  the budget bounds one evaluation, not a resource);
- `budget-x20-actions`: one resource asking 20 actions, each decided by such a rule;
- `dynamic-patterns`: `P.attr.patterns.exists(p, R.attr.name.matches(p))` over distinct
  caller-sent patterns RE2 takes milliseconds to compile (none repeats: the 128-entry cache
  misses every time); the request limit allows ~19,000 of them, timed here over 200 and
  scaled (printed as the estimate for the limit);
- `regex-64k`: an author's constant pattern with a large program (`a.{999}b.{999}c`) over a
  caller's 64 KiB string, outside any comprehension: one RE2 call (uncharged: not in a loop).
  Since RE2 programs are bounded (pdp/cel/_regex.py) this pattern is a compile error, printed;
- `regex-cap-64k`: a pattern just under the program bound (`a.{620}b.{620}c`, ~9,900
  instructions) over the 64 KiB string: refused before it scans (a CEL error: deny);
- `regex-cap-2k`: that pattern over the longest string the scan bound lets it read (2,000
  characters): the costliest single `matches` call a policy can make;
- `dynamic-cap`: as `dynamic-patterns`, with distinct caller-sent patterns just under the
  program bound, which RE2 compiles (`dynamic-patterns`' are now refused);
- `regex-or-100`: one condition of 100 `matches` at the scan bound joined by `||`, outside
  any comprehension (`regex-cap-2k` a hundred times over);
- `regex-40-rules`: 40 allow rules on one action, each one such `matches`;
- `eq-300-rules`: 300 allow rules on one action, each comparing two lists of 9,000 integers
  that differ in their last (no comprehension, no regex; charged since session 20, as work on
  large values is outside comprehensions too: 900 iterations each).

With `--deadline-ms D` each case also runs under a deadline of D ms from its start (the
engine's `stop_at`, as the servers pass it) and prints how long it took to stop, that it was
decided to its end and then, late, not answered, or that it finished first. With `--drain-ms
D` each case also runs with no deadline while another thread lowers the call's stop time to D
ms from its start after it began, as `pdp serve`'s drain does at the end of its grace.

`--hot-path` measures instead what the deadline checks cost the ordinary decision: thread CPU
per `engine.check` on bench/miss_path.py's varied 1x3 and 20x3 requests (the example policies,
which have no comprehension) without and with a deadline, alternating, best of `--rounds`;
and µs per evaluation of two comprehension conditions, two `matches` (an e-mail pattern,
alone and in a comprehension of two items) and four operations over small values outside
comprehensions (`in`, `==` of lists, `containsAny`, `startsWith`: not charged). Run another
checkout's copy of this file to measure that one (a checkout without `stop_at` prints the no-deadline column twice).
The figures and the commands that printed them are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import threading
import time
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from miss_path import make_requests  # noqa: E402

from pdp.bundle.load import compile_files  # noqa: E402
from pdp.cel import CelEnv, compile_cel_bool  # noqa: E402
from pdp.cli._common import load_and_compile  # noqa: E402
from pdp.engine import Engine  # noqa: E402
from pdp.model.request import DEFAULT_LIMITS, parse_check_request  # noqa: E402
from pdp.server._gen.pdp.v1 import decision_pb2 as pb  # noqa: E402
from pdp.server.convert import request_from_proto  # noqa: E402

try:  # absent before deadlines stopped a resource: `--hot-path` still measures such a checkout
    from pdp.engine import DeadlineExceeded
except ImportError:
    DeadlineExceeded = None  # type: ignore[assignment,misc]
try:  # absent before a stop time could change while a call runs (`--drain-ms`)
    from pdp.cel import Deadline
except ImportError:
    Deadline = None  # type: ignore[assignment,misc]

CHEAP = "P.attr.n.all(x, P.attr.n.all(y, x + y >= 0))"
RE2 = 'P.attr.m.all(x, P.attr.m.all(y, P.attr.m.all(z, !P.attr.text.matches("b$"))))'
PATTERNS = "P.attr.patterns.exists(p, R.attr.name.matches(p))"
BIG_PROGRAM = 'R.attr.text.matches("a.{999}b.{999}c")'
CAP_PROGRAM = 'R.attr.text.matches("a.{620}b.{620}c")'
OR_100 = " || ".join(f'R.attr.text.matches("a.{{620}}b.{{620}}c{j}")' for j in range(100))
LIST_EQ = "P.attr.l == R.attr.l"


def _policy(conditions: list[str], actions: int = 1) -> bytes:
    names = [f"a{i}" for i in range(actions)]
    rules = "".join(
        f"""
    - id: r{j}
      actions: [{", ".join(names)}]
      effect: allow
      roles: ["*"]
      condition: '{c.replace("'", "''")}'"""
        for j, c in enumerate(conditions)
    )
    acts = "".join(f"\n    {a}: {{}}" for a in names)
    return f"""apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {{id: heavy}}
spec:
  resource: report
  actions:{acts}
  rules:{rules}
""".encode()


def _pattern(i: int) -> str:
    # Distinct, short (charged nothing as a string), and a program of ~2,000 instructions.
    return f"a.{{999}}b.{{{900 + i % 99}}}c{i}"


def _cases(dynamic: int) -> dict[str, tuple[bytes, dict[str, Any]]]:
    attr: dict[str, Any] = {"n": list(range(315)), "m": list(range(46)), "text": "a" * 99}
    principal = {"id": "p", "tenant": "acme", "roles": ["user"], "attr": attr}

    def req(actions: int = 1, p: dict[str, Any] | None = None, r: dict[str, Any] | None = None):
        res = {"kind": "report", "id": "r", "tenant": "acme", "attr": r or {}}
        res["actions"] = [f"a{i}" for i in range(actions)]
        return {"principal": p or principal, "resources": [res]}

    text = "".join("ab"[(i * 7919) % 3 == 0] for i in range(64 * 1024))
    patterns = [_pattern(i) for i in range(dynamic)]
    many = {"id": "p", "tenant": "acme", "roles": ["user"], "attr": {"patterns": patterns}}
    at_cap = [f"a.{{600}}b.{{{520 + i % 99}}}c{i}" for i in range(dynamic)]
    many_cap = {"id": "p", "tenant": "acme", "roles": ["user"], "attr": {"patterns": at_cap}}
    return {
        "budget-cheap": (_policy([CHEAP]), req()),
        "budget-re2": (_policy([RE2]), req()),
        "budget-x10-rules": (_policy([f"!({CHEAP})"] * 9 + [CHEAP]), req()),
        "budget-x20-actions": (_policy([CHEAP], 20), req(20)),
        "dynamic-patterns": (_policy([PATTERNS]), req(r={"name": "zzz"}, p=many)),
        "regex-64k": (_policy([BIG_PROGRAM]), req(r={"text": text})),
        "regex-cap-64k": (_policy([CAP_PROGRAM]), req(r={"text": text})),
        "regex-cap-2k": (_policy([CAP_PROGRAM]), req(r={"text": text[:2000]})),
        "dynamic-cap": (_policy([PATTERNS]), req(r={"name": "zzz"}, p=many_cap)),
        "regex-or-100": (_policy([OR_100]), req(r={"text": text[:2000]})),
        "regex-40-rules": (
            _policy([CAP_PROGRAM.replace('c"', f'c{i}"') for i in range(40)]),
            req(r={"text": text[:2000]}),
        ),
        "eq-300-rules": (
            _policy([LIST_EQ] * 300),
            req(p={**principal, "attr": {"l": list(range(9000))}}, r={"l": [*range(8999), -1]}),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--deadline-ms", type=float, default=0.0)
    ap.add_argument("--drain-ms", type=float, default=0.0)
    ap.add_argument("--only", default="")
    ap.add_argument("--dynamic", type=int, default=200, help="patterns timed (default 200)")
    ap.add_argument("--hot-path", action="store_true")
    ap.add_argument("--rounds", type=int, default=60, help="--hot-path rounds (default 60)")
    args = ap.parse_args()
    if args.hot_path:
        hot_path(args.rounds)
        return
    limit_patterns = 19_000
    for name, (policy, body) in _cases(args.dynamic).items():
        if args.only and name != args.only:
            continue
        try:
            engine = Engine(compile_files({"heavy.yaml": policy}).policy_set)
        except Exception as e:  # a pattern over the program bound
            print(f"{name:20} compile error: {str(e).splitlines()[0]}", flush=True)
            continue
        request = parse_check_request(body)
        t0 = time.perf_counter()
        response = engine.check(request)
        ms = (time.perf_counter() - t0) * 1000
        effects = sorted({a.effect for r in response.results for a in r.actions.values()})
        line = f"{name:20} {ms:10.1f} ms  ({'/'.join(effects)})"
        errors = [e for r in response.results for a in r.actions.values() for e in a.errors]
        if errors:  # a bound refused it: say which, not a linear estimate
            line += f"  error: {errors[0].split(': ', 1)[-1][:60]}..."
        elif name.startswith("dynamic"):
            line += (
                f"  ~{ms / args.dynamic * limit_patterns / 1000:.0f} s at {limit_patterns} patterns"
            )
        if args.deadline_ms:
            line += "  " + _under_deadline(engine, request, args.deadline_ms / 1000)
        if args.drain_ms:
            line += "  drain: " + _under_drain(engine, request, args.drain_ms / 1000)
        print(line, flush=True)


def _per_check(engine: Engine, reqs: list[Any], stop_at: float | None) -> float:
    """Thread CPU µs per `engine.check` over `reqs` (with `stop_at` when given)."""
    t0 = time.thread_time()
    if stop_at is None:
        for r in reqs:
            engine.check(r)
    else:
        for r in reqs:
            engine.check(r, stop_at=stop_at)
    return (time.thread_time() - t0) / len(reqs) * 1e6


def hot_path(rounds: int) -> None:
    engine = Engine(load_and_compile(ROOT / "policies")[1])
    has_stop = "stop_at" in inspect.signature(engine.check).parameters
    for n, count in ((1, 1000), (20, 100)):
        bodies = make_requests(count, n, 7)
        reqs = [request_from_proto(pb.CheckRequest.FromString(b), DEFAULT_LIMITS) for b in bodies]
        a: list[float] = []
        b: list[float] = []
        for i in range(rounds):  # alternated: neither column always runs second
            far = time.monotonic() + 3600 if has_stop else None
            if i % 2:
                a.append(_per_check(engine, reqs, None))
                b.append(_per_check(engine, reqs, far))
            else:
                b.append(_per_check(engine, reqs, far))
                a.append(_per_check(engine, reqs, None))
        label = "with a deadline" if has_stop else "again (no stop_at here)"
        print(f"{n}x3: engine.check {min(a):.2f} us, {label} {min(b):.2f} us", flush=True)
    act = {
        "principal": {
            "roles": ["user", "editor"],
            "attr": {"g": list(range(50)), "l": [1, 2], "n": "bob@example.com"},
        },
        "resource": {"attr": {"r": list(range(200)), "email": "alice@example.com"}},
        "action": "",
        "context": {},
        "now": None,
    }
    for src in (
        "principal.roles.exists(r, r == 'editor' || r == 'admin')",
        "principal.attr.g.exists(g, g in resource.attr.r)",
        "resource.attr.email.matches('^[a-z]+@example\\\\.com$')",
        "principal.attr.l.exists(p, resource.attr.email.matches('^[a-z]+@example\\\\.com$'))",
        # Outside comprehensions, over small values: not charged (no budget, no clock).
        "'editor' in principal.roles",
        "principal.attr.l == [1, 2]",
        "principal.attr.l.containsAny([2, 3])",
        "resource.attr.email.startsWith('alice')",
        # Comparisons and lookups of two request strings (short: not charged).
        "resource.attr.email == principal.attr.n",
        "resource.attr.email < principal.attr.n",
        "{'bob@example.com': true}[principal.attr.n]",
        "resource.attr.email in {'bob@example.com': true}",
    ):
        f = compile_cel_bool(src, CelEnv())
        best = min(timeit.repeat(lambda f=f: f(act), number=2000, repeat=rounds // 2))
        print(f"{best / 2000 * 1e6:.3f} us  {src}", flush=True)


def _under_deadline(engine: Engine, request: Any, seconds: float) -> str:
    if DeadlineExceeded is None:
        return "(this checkout takes no deadline inside a resource)"
    t0 = time.perf_counter()
    try:
        engine.check(request, stop_at=time.monotonic() + seconds)
    except DeadlineExceeded as e:
        return _stopped(e, t0)
    return f"finished first ({(time.perf_counter() - t0) * 1000:.1f} ms)"


def _stopped(e: Any, t0: float) -> str:
    ms = (time.perf_counter() - t0) * 1000
    if e.done == e.total:  # nothing looked at the clock inside: decided to the end, late
        return f"decided, late, after {ms:.1f} ms"
    return f"stopped after {ms:.1f} ms"


def _under_drain(engine: Engine, request: Any, seconds: float) -> str:
    """No deadline; a thread lowers the call's stop time once the call runs (`Deadline.lower`,
    what `pdp serve`'s drain does to every call in flight)."""
    if Deadline is None:
        return "(this checkout takes no stop time that changes while a call runs)"
    stop = Deadline()
    t0 = time.perf_counter()
    lower = threading.Timer(seconds / 2, lambda: stop.lower(time.monotonic() + seconds / 2))
    lower.start()
    try:
        engine.check(request, stop_at=stop)
    except DeadlineExceeded as e:
        return _stopped(e, t0)
    finally:
        lower.cancel()
    return f"finished first ({(time.perf_counter() - t0) * 1000:.1f} ms)"


if __name__ == "__main__":
    main()

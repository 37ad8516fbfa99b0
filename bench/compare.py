"""pdp side by side with its peers, on one workload (issue 7). Not a test: a benchmark.

Reproduce:  make bench-compare                     (installs the `bench` extra, then this)
            .venv/bin/python bench/compare.py           (from the repository root)
            .venv/bin/python bench/compare.py --quick   (fewer requests and rounds, ~1 min)

The workload (bench/peers/workload.py): seeded document requests — principals of 3 tenants
with roles and OAuth scopes, documents with owners and classifications, client IPs inside and
just outside the corporate CIDRs — decided by equivalent policies for every engine
(bench/peers/<engine>/): tenant isolation, one scope per action, ownership, roles with an
attribute condition, and a CIDR fence on delete.

1. Agreement. Every engine — pdp in-process, cedarpy, regopy, casbin, pdp over gRPC, Cerbos
   over gRPC — must give the floor's decision (bench/peers/workload.py, hand-written Python)
   on every decision of every request (1 document x 3 actions, and 20 x 3 batches). Any
   disagreement prints the request and exits 1: a benchmark of wrong answers is worthless.
2. In-process: µs per decision (median and p99 of per-request times / decisions per request)
   and decisions/s, for each engine's native call on input prepared beforehand; rounds are
   interleaved across engines so that a busy machine slows them alike.
3. gRPC, the headline: default `pdp serve` (no flags beyond --policies and --listen) and a
   real Cerbos (npm @cerbos/cerbos-linux-x64, disk store, loopback, telemetry off), each sent
   the same questions by the multi-payload load driver (bench/driver/grpcload.c, C on
   libnghttp2; `make bench-driver`), which rotates through 50,000 distinct requests per
   workload: varied 1x3 and 20x3 at 4 connections x 8 calls, varied 1x3 at one call in
   flight, and one request repeated (every pdp call a cache hit, labelled as such). Rounds
   interleaved, medians of three; server CPU per call from /proc; pdp's decision-cache hit
   rate computed from the workload; a sample of each body file checked against the floor.
4. Scale: 10,000 policies load+compile time, and retained memory per 1,000 rules.

How to read it: the gRPC table's `pdp ÷ Cerbos` is the headline (above 1: pdp serves more
calls per second on the same machine), next to the issue's targets and whether they were met;
`server CPU µs/call` is the cost per call, which other load on the machine moves far less than
req/s; `cache hits` says how much of pdp's figure its decision cache made (0% on varied
traffic). Compare ratios within one run, not absolute figures across runs or machines.

The table goes to stdout and to bench/RESULTS-peers.md (--out).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from peers import driver, grpcload, inproc, workload  # noqa: E402


@dataclass
class Row:
    engine: str
    median_us: float  # per decision
    p99_us: float  # per decision
    per_s: float  # decisions per second
    note: str = ""


def fmt_ratio(peer: float, ours: float) -> str:
    """`peer` and `ours` are costs (time): >1 means the peer is slower than pdp."""
    if ours <= 0 or peer != peer:
        return "—"
    r = peer / ours
    return f"{r:.1f}x slower" if r >= 1 else f"{1 / r:.2f}x faster"


# ---- 1. agreement ------------------------------------------------------------------------------


def disagree(name: str, raw: dict, got: Any, want: Any) -> None:
    print(f"DISAGREEMENT: {name}\n  request: {json.dumps(raw)}\n  got:   {got}\n  floor: {want}")
    sys.exit(1)


def check_inproc(adapters: dict[str, inproc.Adapter], requests: list[dict]) -> int:
    checked = 0
    for raw in requests:
        want = workload.floor_request(raw)
        for ad in adapters.values():
            native = ad.prepare(raw)
            got = ad.effects(native, ad.run(native))
            if got != want:
                disagree(ad.name, raw, got, want)
        checked += sum(len(r) for r in want)
    return checked


def check_server(
    server: grpcload.Server,
    payload_of: Callable[[dict], bytes],
    effects_of: Callable[[bytes], Any],
    requests: list[dict],
) -> int:
    import grpc

    checked = 0
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        call = ch.unary_unary(server.method, request_serializer=None, response_deserializer=None)
        for raw in requests:
            want = workload.floor_request(raw)
            got = effects_of(bytes(call(payload_of(raw), timeout=10)))
            if got != want:
                disagree(server.name, raw, got, want)
            checked += sum(len(r) for r in want)
    return checked


# ---- 2. in-process timing ----------------------------------------------------------------------


def time_inproc(
    adapters: dict[str, inproc.Adapter], requests: list[dict], rounds: int, min_round_s: float
) -> dict[str, Row]:
    prepared = {k: [ad.prepare(r) for r in requests] for k, ad in adapters.items()}
    checks = [sum(len(r["actions"]) for r in raw["resources"]) for raw in requests]
    samples: dict[str, list[float]] = {k: [] for k in adapters}  # µs per decision, per request
    busy: dict[str, float] = dict.fromkeys(adapters, 0.0)
    decided: dict[str, int] = dict.fromkeys(adapters, 0)
    clock = time.perf_counter_ns
    for k, ad in adapters.items():  # warm caches (interpreter specialisation, plan caches)
        for native in prepared[k][:20]:
            ad.run(native)
    for _ in range(rounds):
        for k, ad in adapters.items():  # interleaved: load from other processes hits all alike
            run, natives, out = ad.run, prepared[k], samples[k]
            start = time.perf_counter()
            while True:
                for native, n in zip(natives, checks):
                    t0 = clock()
                    run(native)
                    out.append((clock() - t0) / 1000 / n)
                decided[k] += sum(checks)
                if time.perf_counter() - start >= min_round_s:
                    break
            busy[k] += time.perf_counter() - start
    rows = {}
    for k, ad in adapters.items():
        s = sorted(samples[k])
        rows[k] = Row(
            ad.name,
            statistics.median(s),
            s[min(len(s) - 1, int(len(s) * 0.99))],
            decided[k] / busy[k],
            ad.note,
        )
    return rows


# ---- 3. gRPC: varied traffic, the headline ---------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str  # as the table prints it
    resources: int  # documents per request (x 3 actions)
    connections: int
    streams: int
    varied: bool  # False: one request repeated (every pdp call after the first a cache hit)
    target: str  # the target for this row, as printed
    min_ratio: float | None = None  # pdp req/s over Cerbos's, at least
    max_p99_ratio: float | None = None  # pdp p99 over Cerbos's, at most


WORKLOADS = (
    Workload("varied 1x3", 1, 4, 8, True, "≥1.5x req/s, p99 no worse", 1.5, 1.0),
    Workload("varied 20x3", 20, 4, 8, True, "≥3x req/s", 3.0),
    Workload("varied 1x3, one call in flight", 1, 1, 1, True, "p99 ≤0.3x", None, 0.3),
    Workload("repeated 1x3 (cache hits)", 1, 4, 8, False, "— (labelled: cache hits)"),
)


@dataclass
class Run:
    rps: float
    p50_us: float
    p99_us: float
    cpu_us: float  # server CPU per call
    calls: int
    hit_rate: float | None = None  # pdp only: computed from the workload


@dataclass
class Line:
    workload: Workload
    distinct: int
    pdp: list[Run] = field(default_factory=list)
    cerbos: list[Run] = field(default_factory=list)
    grpcio: list[Run] = field(default_factory=list)  # `--grpcio`: pdp serve --transport grpcio


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs) if runs else float("nan")


def body_sets(
    wl: Workload, distinct: int, log: Callable[[str], None]
) -> tuple[list[dict], Path, Path | None]:
    """The workload's requests and its body files for pdp and (with the extra) Cerbos."""
    reqs = (
        workload.generate(distinct, resources=wl.resources)
        if wl.varied
        else [workload.heavy(wl.resources)]
    )
    log(f"  body files: {len(reqs):,} requests of {wl.resources}x3 (cached in bench/.cache)")
    tag = f"{'varied' if wl.varied else 'repeated'}-{wl.resources}x3"
    pdp_file = driver.body_file(f"pdp-{tag}", grpcload.pdp_payload, reqs)
    cerbos_file = None
    with contextlib.suppress(ImportError):
        import cerbos  # noqa: F401  (the bench extra: its protobufs build Cerbos' payloads)

        cerbos_file = driver.body_file(f"cerbos-{tag}", grpcload.cerbos_payload, reqs)
    return reqs, pdp_file, cerbos_file


def check_sample(
    name: str,
    port: int,
    method: str,
    bodies: Path,
    effects_of: Callable[[bytes], Any],
    reqs: list[dict],
    sample: int,
) -> int:
    """A sample of the body file's messages, sent one by one: each answer must be the floor's
    for the request it was written from (the file and the server both agree with the
    workload)."""
    messages = driver.read_bodies(bodies)
    if len(messages) != len(reqs):
        sys.exit(f"{bodies}: {len(messages)} bodies for {len(reqs)} requests")
    step = max(1, len(reqs) // sample)
    checked = 0
    for i in range(0, len(reqs), step):
        want = workload.floor_request(reqs[i])
        got = effects_of(grpcload.call_raw(port, method, messages[i]))
        if got != want:
            disagree(f"{name} over gRPC (body {i} of {bodies.name})", reqs[i], got, want)
        checked += sum(len(r) for r in want)
    return checked


def varied_section(
    args: argparse.Namespace, tmp: Path, log: Callable[[str], None]
) -> tuple[list[Line], list[str], int]:
    """Default `pdp serve` vs Cerbos under the multi-payload driver, rounds interleaved."""
    notes: list[str] = []
    cerbos = grpcload.cerbos_binary()
    if cerbos is None:
        notes.append("Cerbos skipped: npm could not install @cerbos/cerbos-linux-x64")
    else:
        notes.append(f"Cerbos {grpcload.cerbos_version(cerbos)} ({cerbos.relative_to(ROOT)})")
    driver.build()
    capacity = driver.default_cache_entries()
    pdp_flags = args.pdp_flags.split()
    if "--decision-cache" in pdp_flags:
        capacity = int(pdp_flags[pdp_flags.index("--decision-cache") + 1])
    lines: list[Line] = []
    checked = 0
    processes: set[int] = set()
    for wl in WORKLOADS:
        distinct = args.distinct if wl.resources == 1 else args.distinct_batch
        log(f"{wl.name}, -c{wl.connections} -m{wl.streams}")
        reqs, pdp_file, cerbos_file = body_sets(wl, distinct, log)
        line = Line(wl, len(reqs))
        first_pdp = grpcload.pdp_payload(reqs[0])  # the readiness probe's question
        first_cerbos = grpcload.cerbos_payload(reqs[0]) if cerbos_file is not None else b""
        servers: list[tuple[str, Callable[[], Any], Path, Callable[[bytes], Any]]] = [
            (
                "pdp",
                lambda p=first_pdp: grpcload.pdp_server(None, None, p, tmp, extra=pdp_flags),
                pdp_file,
                grpcload.pdp_effects,
            )
        ]
        if args.grpcio:  # the same flags, on grpcio's transport (the default until session 22)
            servers.append(
                (
                    "grpcio",
                    lambda p=first_pdp: grpcload.pdp_server(
                        None, None, p, tmp, extra=[*pdp_flags, "--transport", "grpcio"]
                    ),
                    pdp_file,
                    grpcload.pdp_effects,
                )
            )
        if cerbos is not None and cerbos_file is not None:
            servers.append(
                (
                    "cerbos",
                    lambda p=first_cerbos: grpcload.cerbos_server(cerbos, None, p, tmp),
                    cerbos_file,
                    grpcload.cerbos_effects,
                )
            )
        for rnd in range(args.grpc_rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]  # interleaved, order flipped
            for name, start, bodies, effects_of in order:
                with start() as srv:
                    if rnd == 0:
                        checked += check_sample(
                            name, srv.port, srv.method, bodies, effects_of, reqs, args.sample
                        )
                    warm = min(args.warmup, len(reqs)) if wl.varied else args.warmup
                    driver.run(
                        srv.port,
                        srv.method,
                        bodies,
                        connections=wl.connections,
                        streams=wl.streams,
                        requests=warm,
                    )
                    if name == "pdp":
                        processes.add(len(grpcload.session_cpu(srv.proc.pid)))
                    r = driver.run(
                        srv.port,
                        srv.method,
                        bodies,
                        connections=wl.connections,
                        streams=wl.streams,
                        duration=args.duration,
                        start=warm,
                        server_session=srv.proc.pid,
                    )
                if not r.ok:
                    sys.exit(f"{name} {wl.name}: {r.successes}/{r.requests} succeeded: {r.errors}")
                run = Run(r.rps, r.p50_us, r.p99_us, r.server_cpu_us, r.requests)
                if name in ("pdp", "grpcio"):
                    n = len(reqs)
                    run.hit_rate = driver.hit_rate(n, r.requests, warm % n, capacity, warm)
                    (line.pdp if name == "pdp" else line.grpcio).append(run)
                else:
                    line.cerbos.append(run)
                hits = f"  cache hits {run.hit_rate:.0%}" if run.hit_rate is not None else ""
                log(
                    f"  round {rnd + 1} {name:6} {r.rps:8,.0f} req/s  p50 {r.p50_us / 1000:6.2f} ms"
                    f"  p99 {r.p99_us / 1000:6.2f} ms  server CPU {r.server_cpu_us:5.0f} µs/call"
                    f"{hits}"
                )
        lines.append(line)
    shown = " ".join(pdp_flags) or "no flags beyond --policies and --listen"
    notes.append(
        f"pdp: `pdp serve` with {shown}; it ran as "
        + "/".join(str(p) for p in sorted(processes))
        + f" processes (server, workers, helpers); its decision cache holds {capacity:,} "
        "entries (per worker)."
    )
    return lines, notes, checked


# ---- 4. scale ----------------------------------------------------------------------------------


def scale_section(n_policies: int, mem_policies: int) -> dict[str, float]:
    from engine import UNRELATED  # bench/engine.py's unrelated 3-rule policy

    from pdp.engine import Engine, compile_policy_set
    from pdp.model.loader import load_policy_files

    def files(n: int) -> dict[str, bytes]:
        out = {f"u/u{i}.yaml": UNRELATED.format(i=i).encode() for i in range(n)}
        out.update({p.name: p.read_bytes() for p in (ROOT / "bench/peers/pdp").glob("*.yaml")})
        return out

    rules_per_policy = UNRELATED.count("- id:")
    src = files(n_policies)
    gc.collect()
    t0 = time.perf_counter()
    engine = Engine(compile_policy_set(load_policy_files(src)))
    load_s = time.perf_counter() - t0
    del engine, src
    gc.collect()

    # Retained memory of a compiled engine (the loaded source is dropped, as a server does).
    src = files(mem_policies)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    engine = Engine(compile_policy_set(load_policy_files(src)))
    del src
    gc.collect()
    retained = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    del engine
    rules = mem_policies * rules_per_policy
    return {
        "policies": n_policies,
        "rules": n_policies * rules_per_policy,
        "load_s": load_s,
        "mem_policies": mem_policies,
        "kib_per_1000_rules": retained / 1024 / (rules / 1000),
    }


# ---- report ------------------------------------------------------------------------------------


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def verdict(line: Line) -> str:
    """The row's target, met or not, from the medians of its rounds."""
    wl = line.workload
    if not line.cerbos or (wl.min_ratio is None and wl.max_p99_ratio is None):
        return "—"
    ok = True
    if wl.min_ratio is not None:
        ok &= _median(line.pdp, "rps") >= wl.min_ratio * _median(line.cerbos, "rps")
    if wl.max_p99_ratio is not None:
        ok &= _median(line.pdp, "p99_us") <= wl.max_p99_ratio * _median(line.cerbos, "p99_us")
    return "met" if ok else "**not met**"


def headline(lines: list[Line], meta: dict[str, str]) -> list[str]:
    out = [
        "",
        "## gRPC: default `pdp serve` vs Cerbos, varied traffic (the headline)",
        "",
        f"Load: bench/driver/grpcload.c (libnghttp2), rotating through the distinct requests of "
        f"each workload; {meta['rounds']} rounds interleaved (the server order flips each round), "
        f"{meta['duration']} s each after a warm-up; every figure is the median of the rounds. "
        "CPU: user + system time of the server and its child processes from /proc, over the run, "
        "per call. `cache hits`: pdp's decision-cache hit rate, computed from the workload (the "
        "rotation through the distinct requests against the LRU's size; pdp exposes no counter).",
        "",
        "| workload | -c/-m | distinct requests | pdp req/s | Cerbos req/s | pdp ÷ Cerbos "
        "| pdp p50 / p99 ms | Cerbos p50 / p99 ms | p99 pdp ÷ Cerbos | server CPU µs/call "
        "pdp / Cerbos | pdp cache hits (computed) | target | |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---|---:|---|---|",
    ]
    for line in lines:
        wl = line.workload
        p_rps, c_rps = _median(line.pdp, "rps"), _median(line.cerbos, "rps")
        p_p99, c_p99 = _median(line.pdp, "p99_us"), _median(line.cerbos, "p99_us")
        ratio = f"**{p_rps / c_rps:.2f}x**" if line.cerbos else "—"
        p99_ratio = f"{p_p99 / c_p99:.2f}x" if line.cerbos else "—"
        hits = statistics.median(r.hit_rate or 0.0 for r in line.pdp)
        out.append(
            f"| {wl.name} | c{wl.connections}/m{wl.streams} | {line.distinct:,} | {p_rps:,.0f} "
            f"| {c_rps:,.0f} | {ratio} | {_ms(_median(line.pdp, 'p50_us'))} / {_ms(p_p99)} "
            f"| {_ms(_median(line.cerbos, 'p50_us'))} / {_ms(c_p99)} | {p99_ratio} "
            f"| {_median(line.pdp, 'cpu_us'):,.0f} / {_median(line.cerbos, 'cpu_us'):,.0f} "
            f"| {hits:.0%} | {wl.target} | {verdict(line)} |"
        )
    out += [
        "",
        "Rounds (req/s, pdp / Cerbos): "
        + "; ".join(
            f"{line.workload.name}: "
            + ", ".join(
                f"{p.rps:,.0f} / {c.rps:,.0f}" if c else f"{p.rps:,.0f}"
                for p, c in zip(line.pdp, line.cerbos or [None] * len(line.pdp))
            )
            for line in lines
        )
        + ".",
    ]
    if any(line.grpcio for line in lines):
        out += grpcio_rows(lines)
    return out


def grpcio_rows(lines: list[Line]) -> list[str]:
    """`--grpcio`: the same workloads on `pdp serve --transport grpcio`."""
    out = [
        "",
        "`pdp serve --transport grpcio` (`--grpcio`), same flags and rounds:",
        "",
        "| workload | grpcio req/s | grpcio ÷ pdp | grpcio ÷ Cerbos | grpcio p50 / p99 ms "
        "| p99 grpcio ÷ Cerbos | server CPU µs/call grpcio / pdp / Cerbos | cache hits |",
        "|---|---:|---:|---:|---|---:|---|---:|",
    ]
    for line in lines:
        if not line.grpcio:
            continue
        g_rps, p_rps = _median(line.grpcio, "rps"), _median(line.pdp, "rps")
        c_rps, g_p99 = _median(line.cerbos, "rps"), _median(line.grpcio, "p99_us")
        by_cerbos = f"{g_rps / c_rps:.2f}x" if line.cerbos else "—"
        p99_ratio = f"{g_p99 / _median(line.cerbos, 'p99_us'):.2f}x" if line.cerbos else "—"
        hits = statistics.median(r.hit_rate or 0.0 for r in line.grpcio)
        out.append(
            f"| {line.workload.name} | {g_rps:,.0f} | {g_rps / p_rps:.2f}x | {by_cerbos} "
            f"| {_ms(_median(line.grpcio, 'p50_us'))} / {_ms(g_p99)} | {p99_ratio} "
            f"| {_median(line.grpcio, 'cpu_us'):,.0f} / {_median(line.pdp, 'cpu_us'):,.0f} / "
            f"{_median(line.cerbos, 'cpu_us'):,.0f} | {hits:.0%} |"
        )
    return out


def render(
    meta: dict[str, str],
    inproc_rows: dict[str, Row],
    lines: list[Line],
    scale: dict[str, float] | None,
    notes: list[str],
) -> str:
    out = [
        "# pdp vs peers — bench/compare.py",
        "",
        f"Machine: {meta['cpu']}, nproc {meta['nproc']}, {meta['python']}; "
        f"load average before the run {meta['load_before']}, after {meta['load_after']}. "
        f"Command: `{meta['command']}`. Date: {meta['date']}.",
        "",
        f"Agreement: every engine gave the floor's decision on all {meta['checked']} decisions "
        f"({meta['requests']}).{meta.get('sampled', '')}",
        "",
        f"## In-process: 1 document x 3 actions, {meta['n_inproc']} requests, µs per decision",
        "",
        "| engine | median µs | p99 µs | decisions/s | vs pdp (median) | note |",
        "|---|---:|---:|---:|---|---|",
    ]
    pdp = inproc_rows.get("pdp")
    for k, r in inproc_rows.items():
        ratio = "—" if k == "pdp" or pdp is None else fmt_ratio(r.median_us, pdp.median_us)
        out.append(
            f"| {r.engine} | {r.median_us:.2f} | {r.p99_us:.2f} | {r.per_s:,.0f} | {ratio} | {r.note} |"
        )
    if lines:
        out += headline(lines, meta)
    if scale:
        out += [
            "",
            "## Scale",
            "",
            f"- {scale['policies']:,.0f} resource policies ({scale['rules']:,.0f} rules) loaded and "
            f"compiled in {scale['load_s']:.1f} s (target < 10 s).",
            f"- Retained memory of the compiled engine: {scale['kib_per_1000_rules']:,.0f} KiB per "
            f"1,000 rules (tracemalloc, {scale['mem_policies']:,.0f} policies, source dropped).",
        ]
    if notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    ap.add_argument("--no-grpc", action="store_true", help="skip the gRPC servers")
    ap.add_argument("--no-scale", action="store_true", help="skip the 10,000-policy load")
    ap.add_argument(
        "--pdp-flags",
        default="",
        help="extra `pdp serve` flags for the gRPC part, e.g. '--workers 2 --decision-cache 0' "
        "(default: none, the defaults are what is measured)",
    )
    ap.add_argument(
        "--grpcio",
        action="store_true",
        help="also run `pdp serve --transport grpcio` (the transport pdp served on before the "
        "native one became the default) with the same flags, a row beside default pdp and Cerbos",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench/RESULTS-peers.md")
    args = ap.parse_args()
    n_inproc, n_batch = (100, 5) if args.quick else (300, 20)
    rounds, min_round_s = (2, 0.2) if args.quick else (5, 0.5)
    args.grpc_rounds = 1 if args.quick else 3
    args.duration = 2.0 if args.quick else 6.0  # seconds per measured run
    args.warmup = 300 if args.quick else 1000  # calls before each measured run
    # Distinct requests per workload: 50,000 (issue 21); --quick makes fewer 20x3 batches.
    args.distinct = driver.DISTINCT
    args.distinct_batch = 10_000 if args.quick else driver.DISTINCT
    args.sample = 50 if args.quick else 200  # of each body file, checked against the floor
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    meta = {
        **{k: v for k, v in grpcload.machine().items() if k != "loadavg"},
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_before": grpcload.machine()["loadavg"],
        "command": "python bench/compare.py"
        + (" --quick" if args.quick else "")
        + (f" --pdp-flags='{args.pdp_flags}'" if args.pdp_flags else "")
        + (" --grpcio" if args.grpcio else ""),
        "rounds": str(args.grpc_rounds),
        "duration": f"{args.duration:g}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "n_inproc": str(n_inproc),
    }
    notes: list[str] = []
    single = workload.generate(n_inproc)
    batches = workload.generate(n_batch, resources=20)
    extra = [workload.heavy(1), workload.heavy(20)]

    adapters: dict[str, inproc.Adapter] = {}
    for key, make in inproc.ALL.items():
        try:
            adapters[key] = make()
        except ImportError as exc:
            notes.append(
                f"{key} skipped: {exc} (install the bench extra: pip install -e '.[bench]')"
            )
    log(
        f"agreement: {len(adapters)} in-process engines on {len(single) + len(batches) + 2} requests"
    )
    checked = check_inproc(adapters, single + batches + extra)
    grpc_checked = 0

    lines: list[Line] = []
    with grpcload.tmpdir() as tmp_name:
        tmp = Path(tmp_name)
        if not args.no_grpc:
            # Agreement over the wire on the whole workload, before any load.
            cerbos = grpcload.cerbos_binary()
            servers: list[tuple[Any, Any, Any]] = [
                (
                    lambda p: grpcload.pdp_server(1, None, p, tmp),
                    grpcload.pdp_payload,
                    grpcload.pdp_effects,
                )
            ]
            if cerbos is not None:
                servers.append(
                    (
                        lambda p: grpcload.cerbos_server(cerbos, None, p, tmp),
                        grpcload.cerbos_payload,
                        grpcload.cerbos_effects,
                    )
                )
            for start, payload_of, effects_of in servers:
                with start(payload_of(extra[0])) as srv:
                    log(f"agreement: {srv.name} over gRPC")
                    grpc_checked += check_server(
                        srv, payload_of, effects_of, single + batches + extra
                    )
        meta["checked"] = f"{checked:,} in-process + {grpc_checked:,} over gRPC"
        meta["requests"] = (
            f"{len(single)} requests of 1x3 and {len(batches)} of 20x3, plus the two load-test bodies"
        )

        log("in-process timing")
        rows = time_inproc(adapters, single, rounds, min_round_s)
        order = ["pdp", "pdp-parse", "floor", "cedar", "rego", "casbin"]
        rows = {k: rows[k] for k in order if k in rows}

        if not args.no_grpc:
            log("gRPC load")
            lines, grpc_notes, sampled = varied_section(args, tmp, log)
            notes += grpc_notes
            meta["sampled"] = (
                f" Before the load, {sampled:,} more decisions over gRPC, both servers answering a "
                "sample of each load body file one by one, agreed with the floor as well."
            )

    scale = None
    if not args.no_scale:
        log("scale: 10,000 policies")
        scale = scale_section(10_000, 1_000 if args.quick else 2_000)

    meta["load_after"] = grpcload.machine()["loadavg"]
    notes += [
        "In-process times are each engine's native call on input prepared beforehand (pdp: "
        "`Engine.check` on a parsed `CheckRequest`; cedarpy: `is_authorized_batch` with a parsed "
        "`PolicySet`; regopy: `set_input` + `query_bundle` on a built bundle, output decoded; "
        "casbin: `enforce` per action). `pdp (parse + check)` adds validating the JSON-shaped "
        "request dict.",
        "gRPC: both servers get the same questions, each as its own protobuf (Cerbos has no "
        "request context, so the IP is a principal attribute), from body files the load driver "
        "rotates through: the varied workloads' requests are all distinct (each names its own "
        "document), more of them than pdp's decision cache holds, so after a warm-up on other "
        "bodies no call repeats one the cache still has. `repeated` sends one request over and "
        "over (what h2load does): every pdp call is a cache hit, the gateway's best case, shown "
        "as such and not the headline. Cerbos has no decision cache.",
        "Server CPU µs/call is the server processes' user + system time over the run / calls "
        "(from /proc): the cost per call, which load from other processes moves far less than "
        "req/s. A sample of each body file is sent one by one first, and every answer compared "
        "with the hand-written floor's; every call of every run must succeed (grpc-status 0).",
        "Found by the agreement step: when the principal's `scopes` attribute is null or absent, "
        "Cerbos skips the scope deny rules whose condition then errors, and the allow rules "
        "grant (fails open); the payload sends an explicit empty list. pdp denies "
        "(`missing_scope`) either way.",
    ]
    text = render(meta, rows, lines, scale, notes)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"written to {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()

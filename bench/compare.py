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
3. gRPC: `pdp serve` and a real Cerbos (npm @cerbos/cerbos-linux-x64, disk store, loopback,
   telemetry off), each sent the same question by h2load at the same concurrency, with and
   without pinning server and client to separate cores; runs alternate between the servers.
   One reply of each is decoded and checked, and every run's DATA bytes must equal n x that
   reply (gRPC errors carry no body).
4. Scale: 10,000 policies load+compile time, and retained memory per 1,000 rules.

The table goes to stdout and to bench/RESULTS-peers.md (--out).
"""

from __future__ import annotations

import argparse
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

from peers import grpcload, inproc, workload  # noqa: E402


@dataclass
class Row:
    engine: str
    median_us: float  # per decision
    p99_us: float  # per decision
    per_s: float  # decisions per second
    note: str = ""


@dataclass
class GrpcRow:
    server: str
    shape: str
    pinning: str
    concurrency: str
    rps: float
    p50_us: float
    p99_us: float
    checks: int  # decisions per request
    cpu_us: float  # server CPU µs per request
    rounds: list[str] = field(default_factory=list)


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


# ---- 3. gRPC -----------------------------------------------------------------------------------


def grpc_section(
    args: argparse.Namespace, tmp: Path, log: Callable[[str], None]
) -> tuple[list[GrpcRow], list[str]]:
    notes: list[str] = []
    if grpcload.h2load_path() is None:
        return [], ["gRPC part skipped: h2load not found (apt-get install -y nghttp2-client)"]
    cerbos = grpcload.cerbos_binary()
    if cerbos is None:
        notes.append("Cerbos skipped: npm could not install @cerbos/cerbos-linux-x64")
    else:
        notes.append(f"Cerbos {grpcload.cerbos_version(cerbos)} ({cerbos.relative_to(ROOT)})")
    cpus = grpcload.cpus_available()
    nproc = len(cpus)
    configs: list[tuple[str, str | None, str | None, int]] = [
        # (label, server cpus, client cpus, pdp workers)
        (f"shared {nproc} cores", None, None, args.workers or nproc),
    ]
    if nproc >= 2:
        configs.append(
            (f"server cpu {cpus[-1]}, h2load cpu {cpus[0]}", str(cpus[-1]), str(cpus[0]), 1)
        )
    shapes = [(1, args.grpc_requests), (20, max(args.grpc_requests // 5, 200))]
    rows: list[GrpcRow] = []
    for n_res, n_req in shapes:
        raw = workload.heavy(n_res)
        checks = n_res * len(workload.ACTIONS)
        want = workload.floor_request(raw)
        servers: list[
            tuple[str, Callable[..., Any], Callable[[dict], bytes], Callable[[bytes], Any]]
        ] = [
            ("pdp", grpcload.pdp_server, grpcload.pdp_payload, grpcload.pdp_effects),
            # h2load repeats one body, so with the decision cache every call is a hit: also
            # measure every call decided afresh.
            (
                "pdp-nocache",
                lambda w, c, p, t: grpcload.pdp_server(w, c, p, t, cache=0),
                grpcload.pdp_payload,
                grpcload.pdp_effects,
            ),
        ]
        if cerbos is not None:
            servers.append(
                (
                    "cerbos",
                    lambda w, c, p, t: grpcload.cerbos_server(cerbos, c, p, t),
                    grpcload.cerbos_payload,
                    grpcload.cerbos_effects,
                )
            )
        for label, server_cpus, client_cpus, workers in configs:
            loads = [(args.clients, args.streams, n_req)]
            if n_res == 1:
                loads.append((1, 1, max(n_req // 4, 500)))  # unloaded latency
            for clients, streams, count in loads:
                results: dict[str, list[grpcload.LoadResult]] = {s[0]: [] for s in servers}
                for _ in range(args.grpc_rounds):
                    for name, start, payload_of, effects_of in servers:
                        payload = payload_of(raw)
                        w = workers if name.startswith("pdp") else 0
                        with start(w, server_cpus, payload, tmp) as srv:
                            reply = grpcload.call_raw(srv.port, srv.method, payload)
                            if effects_of(reply) != want:
                                disagree(f"{name} over gRPC", raw, effects_of(reply), want)
                            r = grpcload.run_h2load(
                                srv.port,
                                srv.method,
                                payload,
                                len(reply) + 5,
                                requests=count,
                                clients=clients,
                                streams=streams,
                                cpus=client_cpus,
                                tmp=tmp,
                                server_session=srv.proc.pid,
                            )
                        if not r.bytes_ok:
                            sys.exit(
                                f"{name}: {r.succeeded}/{r.requests} succeeded, {r.data_bytes} data "
                                f"bytes, expected {r.requests} x {r.reply_frame}: some calls failed"
                            )
                        results[name].append(r)
                        log(
                            f"  {name:11} {n_res}x3 {label:28} -c{clients} -m{streams}: "
                            f"{r.rps:8.0f} req/s  p50 {r.p50_us / 1000:6.2f} ms  "
                            f"p99 {r.p99_us / 1000:6.2f} ms  server CPU {r.server_cpu_us:5.0f} µs/req"
                        )
                for name, rs in results.items():
                    if not rs:
                        continue
                    # The round with the median throughput, whole (its own p50/p99), not a mix.
                    mid = sorted(rs, key=lambda r: r.rps)[len(rs) // 2]
                    server_label = {
                        "pdp": f"pdp serve --workers {workers}",
                        "pdp-nocache": f"pdp serve --workers {workers} --decision-cache 0",
                    }.get(name, "Cerbos")
                    rows.append(
                        GrpcRow(
                            server_label,
                            f"{n_res}x3",
                            label,
                            f"-c{clients} -m{streams}",
                            mid.rps,
                            mid.p50_us,
                            mid.p99_us,
                            checks,
                            statistics.median(r.server_cpu_us for r in rs),
                            [
                                f"{r.rps:,.0f}"
                                + (
                                    " (" + ":".join(f"{x * 100:.0f}" for x in r.cpu_split) + ")"
                                    if workers > 1 and name != "cerbos"
                                    else ""
                                )
                                for r in rs
                            ],
                        )
                    )
    return rows, notes


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


def render(
    meta: dict[str, str],
    inproc_rows: dict[str, Row],
    grpc_rows: list[GrpcRow],
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
        f"({meta['requests']}).",
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
    if grpc_rows:
        out += [
            "",
            "## gRPC, loopback, h2load (one connection per client, `-t 1`)",
            "",
            "| server | request | pinning | h2load | req/s | decisions/s | p50 ms | p99 ms "
            "| server CPU µs/req | pdp req/s ÷ this (cache on / off) "
            "| rounds: req/s (% of CPU per worker) |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---|---|",
        ]
        cached = {
            (r.shape, r.pinning, r.concurrency): r
            for r in grpc_rows
            if r.server.startswith("pdp") and "--decision-cache 0" not in r.server
        }
        fresh = {
            (r.shape, r.pinning, r.concurrency): r
            for r in grpc_rows
            if "--decision-cache 0" in r.server
        }
        for r in grpc_rows:
            key = (r.shape, r.pinning, r.concurrency)
            ratio = "—"
            if not r.server.startswith("pdp") and key in cached and key in fresh:
                ratio = f"{cached[key].rps / r.rps:.2f} / {fresh[key].rps / r.rps:.2f}"
            rounds = ", ".join(r.rounds)
            out.append(
                f"| {r.server} | {r.shape} | {r.pinning} | {r.concurrency} | {r.rps:,.0f} | "
                f"{r.rps * r.checks:,.0f} | {r.p50_us / 1000:.2f} | {r.p99_us / 1000:.2f} | {r.cpu_us:,.0f} | {ratio} | {rounds} |"
            )
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
        "--workers",
        type=int,
        default=0,
        help="pdp serve workers when client and server share the cores (nproc)",
    )
    ap.add_argument("--clients", type=int, default=4, help="h2load -c (4)")
    ap.add_argument("--streams", type=int, default=8, help="h2load -m (8)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/RESULTS-peers.md")
    args = ap.parse_args()
    n_inproc, n_batch = (100, 5) if args.quick else (300, 20)
    rounds, min_round_s = (2, 0.2) if args.quick else (5, 0.5)
    args.grpc_requests = 3000 if args.quick else 20000
    args.grpc_rounds = 1 if args.quick else 3
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    meta = {
        **{k: v for k, v in grpcload.machine().items() if k != "loadavg"},
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_before": grpcload.machine()["loadavg"],
        "command": "python bench/compare.py" + (" --quick" if args.quick else ""),
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

    grpc_rows: list[GrpcRow] = []
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
            grpc_rows, grpc_notes = grpc_section(args, tmp, log)
            notes += grpc_notes

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
        "gRPC: both servers get the same question as their own protobuf (Cerbos has no request "
        "context, so the IP is a principal attribute); h2load repeats one body, the request "
        "whose every decision runs every rule kind (workload.heavy). A warm-up of 500 calls "
        "precedes each run; figures are the round with the median req/s, rounds alternate servers. "
        "Server CPU µs/req is the server processes' user + system time over the run / requests "
        "(from /proc): the cost per call, which load from other processes moves far less than "
        "req/s. With `--workers N` the rounds column shows how that CPU split between the "
        "workers: the kernel's SO_REUSEPORT hash hands each of h2load's 4 connections to a "
        "random worker (2:2, 3:1 or 4:0 over two workers), and since h2load gives every "
        "connection the same number of calls, an uneven split leaves part of a core idle "
        "while the busier worker finishes. Each worker runs pinned to its own core (a worker "
        "whose threads migrate between cores hands the GIL across them: about twice the CPU "
        "per call).",
        "`pdp serve` has a decision cache on by default (`--decision-cache 10000`); since h2load "
        "repeats one body, every call is then a hit (the gateway case: the same question over "
        "and over). The `--decision-cache 0` rows decide every call afresh; Cerbos has no such "
        "cache.",
        "Found by the agreement step: when the principal's `scopes` attribute is null or absent, "
        "Cerbos skips the scope deny rules whose condition then errors, and the allow rules "
        "grant (fails open); the payload sends an explicit empty list. pdp denies "
        "(`missing_scope`) either way.",
    ]
    text = render(meta, rows, grpc_rows, scale, notes)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"written to {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()

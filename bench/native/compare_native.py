"""A C HTTP/2 front end for pdp's decision, measured against `pdp serve` (issue 21, prototype).

    make bench-native                       # builds pdp's native extension, then this
    make bench-native ARGS='--quick'        # 1x3 c4/m8 only, one round (~2 min)
    .venv/bin/python bench/native/compare_native.py [--rounds 3] [--seconds 6] [--no-cerbos]
    .venv/bin/python bench/native/compare_native.py --all-cores    # nothing pinned, see below

bench/RESULTS.md ("The transport floor") concluded that grpcio's sync server alone costs about
the 200 µs of server CPU issue 21 allows per uncached 1x3 call, and that the target needs HTTP/2
and gRPC framing outside Python, whole requests handed to the decision several per GIL
acquisition. This bench measures that claim with the C side of `pdp serve --transport native`
(pdp/server/native/_h2.c; first the prototype h2front.c, now gone)
(libnghttp2, one epoll loop with the GIL released) calling pdp's own per-call function,
`DecisionService.check`, for every request completed in a pass of the loop (serve.py).

Servers, each pinned to the last core with the load driver on the first, as
bench/transport_floor.py does: (a) `pdp serve --workers 1` (its defaults otherwise: 8 RPC
threads, decision cache of 10,000), (b) the native front end, one process, the same decision
and cache, (c) Cerbos as bench/compare.py runs it (skipped when npm or the `bench` extra is
missing), and two floors with handlers that answer an empty message without reading the request:
grpcio's sync server (bench/transport_floor.py's) and h2front's (serve.py --empty). The driver
is bench/driver/grpcload.c on compare.py's body files (50,000 distinct requests a workload).

Before any timing, pdp serve and the native server answer a sample of each pdp body file one
by one: their CheckResponses must be equal (ids and timestamps aside) and equal to the
hand-written floor's decisions per action; Cerbos's sample is checked against the floor.
Any difference exits 1, as does a hostile request (probe.py) the native server does not refuse
with its status. Printed per workload: req/s, p50/p99, server CPU µs per call (from
/proc), each as a ratio to pdp serve's, medians of rounds interleaved across the servers
(the order flips each round), and h2front's requests per GIL acquisition.

--all-cores runs them as compare.py does, nothing pinned: default `pdp serve` (a worker per
CPU), serve.py --processes N (one per CPU, forked after loading, sharing the port with pdp's
round-robin deal), Cerbos and the driver on every CPU; without the floors or batch counts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from peers import driver, grpcload, workload  # noqa: E402
from peers.grpcload import Server  # noqa: E402

sys.path.insert(0, str(HERE))
import probe  # noqa: E402

PDP, NATIVE, CERBOS = "pdp serve --workers 1", "native (h2front + pdp)", "Cerbos"
FLOOR_GRPCIO, FLOOR_NATIVE = "floor: grpcio sync, empty", "floor: h2front, empty"


@dataclass(frozen=True)
class Workload:
    name: str
    resources: int
    connections: int
    streams: int
    floors: bool  # run the empty-handler floors too


WORKLOADS = (
    Workload("varied 1x3", 1, 4, 8, True),
    Workload("varied 20x3", 20, 4, 8, False),
    Workload("varied 1x3, one call in flight", 1, 1, 1, False),
)


def native_built() -> None:
    try:
        from pdp.server.native.server import load_extension

        load_extension()
    except ImportError as exc:
        sys.exit(f"pdp's native transport is not built: run `make bench-native` ({exc})")


@contextlib.contextmanager
def python_server(
    name: str, cmd: list[str], cpu: str | None, tmp: Path, probe: bytes, several: bool = False
) -> Iterator[Server]:
    """A server this bench starts itself (serve.py, or transport_floor.py's grpcio floor);
    ready once it answers `probe`."""
    port = grpcload.free_port()
    log = tmp / f"{name.split()[0].strip(':')}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*grpcload.taskset(cpu), sys.executable, *cmd, str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, port, grpcload.PDP_CHECK, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                grpcload.call_raw(port, grpcload.PDP_CHECK, probe, timeout=1.0)
                break
            except Exception as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} did not answer: {exc}\n{tail}") from exc
                time.sleep(0.1)
        if several:
            time.sleep(1.5)  # the other processes bind one by one (compare.py waits so for pdp)
        yield server
    finally:
        grpcload.stop(server)


def starters(
    cpu: str | None, tmp: Path, cerbos: Path | None, first: dict[str, bytes], processes: int
) -> dict[str, Any]:
    """Name -> a function of nothing that starts that server (a context manager). `processes`
    above 1 (--all-cores): `pdp serve` with its defaults (a worker per CPU) and as many
    native processes."""
    serve_py = str(HERE / "serve.py")
    native = [serve_py, "--processes", str(processes), "--port"]
    floor_py = [str(ROOT / "bench/transport_floor.py"), "--serve", "grpcio sync, 8 threads"]
    probe = first["pdp"]
    out: dict[str, Any] = {
        PDP: lambda: grpcload.pdp_server(1 if processes == 1 else None, cpu, probe, tmp),
        NATIVE: lambda: python_server(NATIVE, native, cpu, tmp, probe, processes > 1),
        FLOOR_GRPCIO: lambda: python_server(FLOOR_GRPCIO, floor_py, cpu, tmp, probe),
        FLOOR_NATIVE: lambda: python_server(
            FLOOR_NATIVE, [serve_py, "--empty", "--port"], cpu, tmp, probe
        ),
    }
    if cerbos is not None:
        out[CERBOS] = lambda: grpcload.cerbos_server(cerbos, cpu, first["cerbos"], tmp)
    return out


# ---- agreement ---------------------------------------------------------------------------------


def _comparable(reply: bytes) -> Any:
    """A CheckResponse without what differs between two servers' answers to one request."""
    from pdp.server._gen.pdp.v1 import decision_pb2

    msg = decision_pb2.CheckResponse.FromString(reply)
    for name in ("decision_id", "evaluated_at", "bundle"):
        msg.ClearField(name)
    return msg


def check_agreement(
    pdp_port: int, native_port: int, bodies: Path, reqs: list[dict], sample: int
) -> int:
    """The native server's answers equal `pdp serve`'s, and the floor's, on a sample."""
    messages = driver.read_bodies(bodies)
    if len(messages) != len(reqs):
        sys.exit(f"{bodies}: {len(messages)} bodies for {len(reqs)} requests")
    checked = 0
    for i in range(0, len(reqs), max(1, len(reqs) // sample)):
        ours = grpcload.call_raw(pdp_port, grpcload.PDP_CHECK, messages[i])
        theirs = grpcload.call_raw(native_port, grpcload.PDP_CHECK, messages[i])
        want = workload.floor_request(reqs[i])
        for name, reply in ((PDP, ours), (NATIVE, theirs)):
            if grpcload.pdp_effects(reply) != want:
                sys.exit(f"DISAGREEMENT: {name} on body {i}: {grpcload.pdp_effects(reply)} {want}")
        if _comparable(ours) != _comparable(theirs):
            sys.exit(
                f"DISAGREEMENT: body {i}\n{PDP}: {_comparable(ours)}\n{NATIVE}: {_comparable(theirs)}"
            )
        checked += sum(len(r) for r in want)
    return checked


def check_cerbos(port: int, bodies: Path, reqs: list[dict], sample: int) -> int:
    messages = driver.read_bodies(bodies)
    checked = 0
    for i in range(0, len(reqs), max(1, len(reqs) // sample)):
        got = grpcload.cerbos_effects(grpcload.call_raw(port, grpcload.CERBOS_CHECK, messages[i]))
        want = workload.floor_request(reqs[i])
        if got != want:
            sys.exit(f"DISAGREEMENT: Cerbos on body {i}: {got} {want}")
        checked += sum(len(r) for r in want)
    return checked


# ---- timing ------------------------------------------------------------------------------------


def batch_stats(server: Server) -> tuple[int, int]:
    """h2front's (batches, requests) so far: serve.py prints them on SIGUSR1."""
    before = server.log.read_text().count("batches ")
    os.kill(server.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = server.log.read_text()
        if text.count("batches ") > before:
            b, r = re.findall(r"batches (\d+) requests (\d+)", text)[-1]
            return int(b), int(r)
        time.sleep(0.02)
    raise RuntimeError(f"{server.name} printed no batch counts")


@dataclass
class Run:
    rps: float
    p50_us: float
    p99_us: float
    cpu_us: float
    per_batch: float | None = None  # h2front: requests per GIL acquisition
    calls: int = 0


def timed(
    server: Server, bodies: Path, wl: Workload, seconds: float, warmup: int, cpu: str | None
) -> Run:
    load = {"connections": wl.connections, "streams": wl.streams, "cpus": cpu}
    driver.run(server.port, server.method, bodies, requests=warmup, **load)
    # Batch counts come from one process: not with --all-cores (nothing pinned, cpu None).
    native = server.name in (NATIVE, FLOOR_NATIVE) and cpu is not None
    b0 = batch_stats(server) if native else (0, 0)
    r = driver.run(
        server.port,
        server.method,
        bodies,
        duration=seconds,
        start=warmup,
        server_session=server.proc.pid,
        **load,
    )
    if not r.ok:
        sys.exit(f"{server.name} {wl.name}: {r.successes}/{r.requests} succeeded: {r.errors}")
    per_batch = None
    if native:
        b1 = batch_stats(server)
        per_batch = (b1[1] - b0[1]) / max(1, b1[0] - b0[0])
    return Run(r.rps, r.p50_us, r.p99_us, r.server_cpu_us, per_batch, r.requests)


def label(name: str, args: argparse.Namespace) -> str:
    return "pdp serve (defaults)" if name == PDP and args.all_cores else name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--quick", action="store_true", help="1x3 c4/m8 only, one round of 3 s")
    ap.add_argument("--no-cerbos", action="store_true")
    ap.add_argument(
        "--all-cores",
        action="store_true",
        help="nothing pinned: default `pdp serve` (a worker per CPU), as many native processes, "
        "Cerbos and the driver on all CPUs, as compare.py runs them; no floors",
    )
    ap.add_argument("--sample", type=int, default=200, help="bodies checked per workload")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 3.0
    native_built()
    workloads = WORKLOADS[:1] if args.quick else WORKLOADS
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, driver_cpu = (None, None) if args.all_cores else (str(cpus[-1]), str(cpus[0]))
    processes = len(cpus) if args.all_cores else 1
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    cerbos = None if args.no_cerbos else grpcload.cerbos_binary()
    try:
        import cerbos as _cerbos_protos  # noqa: F401  (the bench extra)
    except ImportError:
        cerbos = None
    capacity = driver.default_cache_entries()
    warmup = 1000
    load_before = grpcload.machine()["loadavg"]
    results: dict[str, dict[str, list[Run]]] = {}
    notes: dict[str, str] = {}
    with grpcload.tmpdir() as tmp_name:
        tmp = Path(tmp_name)
        for wl in workloads:
            reqs = workload.generate(driver.DISTINCT, resources=wl.resources)
            tag = f"varied-{wl.resources}x3"
            log(f"{wl.name}, c{wl.connections}/m{wl.streams}: body files ({len(reqs):,} requests)")
            files = {"pdp": driver.body_file(f"pdp-{tag}", grpcload.pdp_payload, reqs)}
            first = {"pdp": grpcload.pdp_payload(reqs[0])}
            if cerbos is not None:
                files["cerbos"] = driver.body_file(f"cerbos-{tag}", grpcload.cerbos_payload, reqs)
                first["cerbos"] = grpcload.cerbos_payload(reqs[0])
            start = starters(server_cpu, tmp, cerbos, first, processes)
            names = [PDP, NATIVE] + ([CERBOS] if cerbos is not None else [])
            names += [FLOOR_GRPCIO, FLOOR_NATIVE] if wl.floors and not args.all_cores else []
            with start[PDP]() as a, start[NATIVE]() as b:
                checked = check_agreement(a.port, b.port, files["pdp"], reqs, args.sample)
                if wl is workloads[0] and (failures := probe.probe(b.port)):
                    sys.exit("native server, hostile input:\n  " + "\n  ".join(failures))
            note = f"agreement: native = pdp serve = floor on {checked:,} decisions"
            if cerbos is not None:
                with start[CERBOS]() as c:
                    checked_c = check_cerbos(c.port, files["cerbos"], reqs, args.sample)
                note += f", Cerbos = floor on {checked_c:,}"
            log(f"  {note}")
            runs: dict[str, list[Run]] = {n: [] for n in names}
            for rnd in range(args.rounds):
                for name in names if rnd % 2 == 0 else names[::-1]:
                    bodies = files["cerbos" if name == CERBOS else "pdp"]
                    with start[name]() as srv:
                        run = timed(srv, bodies, wl, args.seconds, warmup, driver_cpu)
                    runs[name].append(run)
                    extra = f"  {run.per_batch:.1f} requests/batch" if run.per_batch else ""
                    log(
                        f"  round {rnd + 1} {label(name, args):28} {run.rps:8,.0f} req/s  p50 "
                        f"{run.p50_us / 1000:6.2f} ms  p99 {run.p99_us / 1000:6.2f} ms  "
                        f"CPU {run.cpu_us:5.0f} µs/call{extra}"
                    )
            results[wl.name] = runs
            hits = [
                driver.hit_rate(len(reqs), r.calls, warmup % len(reqs), capacity, warmup)
                for r in runs[PDP] + runs[NATIVE]
            ]
            notes[wl.name] = f"{note}; decision-cache hits (computed) at most {max(hits):.0%}"
    print(report(results, workloads, notes, args, load_before))
    return 0


def report(
    results: dict[str, dict[str, list[Run]]],
    workloads: tuple[Workload, ...],
    notes: dict[str, str],
    args: argparse.Namespace,
    load_before: str,
) -> str:
    med: Callable[[list[Run], str], float] = lambda rs, a: statistics.median(  # noqa: E731
        getattr(r, a) for r in rs
    )
    cpus = sorted(os.sched_getaffinity(0))
    where = (
        f"nothing pinned: default `pdp serve` ({len(cpus)} workers), native {len(cpus)} processes"
        if args.all_cores
        else f"server on CPU {cpus[-1]}, driver on CPU {cpus[0]}"
    )
    out = [
        "",
        f"{args.rounds} rounds of {args.seconds:g} s, interleaved; medians; {where}; "
        f"load average before {load_before}, after {grpcload.machine()['loadavg']}",
    ]
    for wl in workloads:
        runs = results[wl.name]
        ref = runs[PDP]
        out += [
            "",
            f"{wl.name}, c{wl.connections}/m{wl.streams} — {notes[wl.name]}",
            f"{'server':28} {'req/s':>8} {'x pdp':>6} {'p50 ms':>7} {'p99 ms':>7} {'x pdp':>6} "
            f"{'CPU µs/call (range)':>20} {'x pdp':>6} {'req/batch':>9}",
        ]
        for name, rs in runs.items():
            cpu = [r.cpu_us for r in rs]
            name = label(name, args)
            batch = [r.per_batch for r in rs if r.per_batch is not None]
            out.append(
                f"{name:28} {med(rs, 'rps'):8,.0f} {med(rs, 'rps') / med(ref, 'rps'):6.2f} "
                f"{med(rs, 'p50_us') / 1000:7.2f} {med(rs, 'p99_us') / 1000:7.2f} "
                f"{med(rs, 'p99_us') / med(ref, 'p99_us'):6.2f} "
                f"{f'{statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f})':>20}"
                f" {statistics.median(cpu) / med(ref, 'cpu_us'):6.2f}"
                + (f" {statistics.median(batch):9.1f}" if batch else f" {'—':>9}")
            )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

"""Where a served call's CPU goes, thread by thread, with telemetry off and on (not a test).

    .venv/bin/python bench/server_threads.py [--workers 1] [--cache on] [--rounds 7]

`bench/server.py --telemetry` prints what telemetry costs a real server in throughput and in
CPU per call; `bench/observed_call.py` shows that the serving code itself adds about 1 µs of
it. This splits the rest: the same two servers (off: `--otel off`; on: the decision log and
OTLP traces and metrics, with the writer processes), loaded in turn by h2load, and for every
thread of the server's processes its CPU (user + system, from /proc/PID/task/TID/stat) and
context switches (/proc/PID/task/TID/status) over h2load's counted calls, divided by those
calls. Threads are grouped by role:

- `server main`: a server process's main thread (it waits for the signal to stop);
- `server python`: its other Python threads: the RPC thread pool and the thread that polls
  gRPC's completion queue;
- `server grpc C`: the threads grpc's C core starts and names (`event_engine`, timers);
- `server feeder`: the thread that pipes observations to the writer process (on only);
- `writer main`: the telemetry writer process's main thread, which builds records and spans
  and writes the records; `writer span export`: the thread that sends the spans over OTLP;
  `writer python`, `writer grpc C`: the rest (the metric exporter, gRPC's own).

pdp names its telemetry threads in the operating system (pdp.telemetry.thread_names), which is
how they are told apart here.

Each figure is the median over `--rounds` rounds of µs (or switches) per call; rounds flip
which server goes first. After an on run the bench waits `DRAIN_S` (0.8 s), so that the writer's
share of the calls is counted. Linux only (reads /proc). Needs h2load (Debian `nghttp2-client`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pdp.telemetry.observer import WRITER_THREAD  # noqa: E402
from pdp.telemetry.offload import FEEDER_THREAD  # noqa: E402
from pdp.telemetry.span_batches import EXPORT_THREAD  # noqa: E402

# grpc's C core names its threads; pdp names its telemetry threads (pdp.telemetry.thread_names);
# any other Python thread keeps its process's name.
PYTHON_COMM = "python"
NAMED = {
    FEEDER_THREAD: "feeder",
    WRITER_THREAD: "log writer",
    EXPORT_THREAD: "span export",
}
WRITER = "telemetry_writer"  # in the writer process's command line
ROLES = tuple(
    f"{owner} {kind}"
    for owner in ("server", "writer")
    for kind in ("main", "python", "grpc C", *NAMED.values())
)


class ThreadStat(NamedTuple):
    role: str
    cpu_s: float  # user + system
    switches: int  # voluntary + involuntary context switches


def role_of(pid: int, tid: int, comm: str, writer: bool) -> str:
    """The role of thread `tid` (named `comm`) of process `pid`."""
    owner = "writer" if writer else "server"
    if tid == pid:
        return f"{owner} main"
    if comm in NAMED:
        return f"{owner} {NAMED[comm]}"
    return f"{owner} python" if comm == PYTHON_COMM else f"{owner} grpc C"


def session_threads(sid: int) -> dict[tuple[int, int], ThreadStat]:
    """Every live thread of the processes of session `sid`, by (pid, tid)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, int], ThreadStat] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != sid:
                continue
            writer = WRITER.encode() in (proc / "cmdline").read_bytes()
            pid = int(proc.name)
            for task in (proc / "task").iterdir():
                head, rest = (task / "stat").read_text().rsplit(")", 1)
                comm = head.split("(", 1)[1]
                stat = rest.split()
                switches = 0
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                        switches += int(line.split()[1])
                tid = int(task.name)
                out[(pid, tid)] = ThreadStat(
                    role_of(pid, tid, comm, writer),
                    (int(stat[11]) + int(stat[12])) / tick,
                    switches,
                )
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return out


def per_role(
    before: Mapping[tuple[int, int], ThreadStat],
    after: Mapping[tuple[int, int], ThreadStat],
    calls: int,
) -> dict[str, tuple[float, float]]:
    """µs of CPU and context switches per call, by role, between two snapshots. A thread
    only in `after` started in between and counts from zero; one only in `before` ended,
    and what it did after the first snapshot is lost (none of the server's threads end
    while it serves)."""
    totals = {role: [0.0, 0] for role in ROLES}
    for key, now in after.items():
        then = before.get(key)
        cpu = now.cpu_s - (then.cpu_s if then else 0.0)
        switches = now.switches - (then.switches if then else 0)
        slot = totals.setdefault(now.role, [0.0, 0])
        slot[0] += cpu
        slot[1] += switches
    return {role: (cpu / calls * 1e6, switches / calls) for role, (cpu, switches) in totals.items()}


def medians(rounds: Iterable[Mapping[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    rows = list(rounds)
    return {
        role: (
            statistics.median(r[role][0] for r in rows),
            statistics.median(r[role][1] for r in rows),
        )
        for role in rows[0]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--cache", choices=("on", "off"), default="on", help="decision cache")
    parser.add_argument("--rounds", type=int, default=7, help="off/on runs each")
    parser.add_argument("--duration", type=int, default=3, help="seconds per h2load run")
    parser.add_argument("--connections", type=int, help="h2load connections (default 64)")
    parser.add_argument("--streams", type=int, help="calls in flight per connection (default 1)")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        raise SystemExit("needs h2load (apt-get install -y nghttp2-client)")

    import grpc
    from server import (  # bench/server.py
        DRAIN_S,
        TELEMETRY_LOAD,
        OtlpReceiver,
        free_port,
        h2load,
        policy_dir,
        request_bytes,
        server_envs,
        start_server,
        stop_server,
        telemetry_flags,
    )

    # The load of `server.py --telemetry`, whose servers this compares thread by thread.
    args.connections = args.connections or TELEMETRY_LOAD[0]
    args.streams = args.streams or TELEMETRY_LOAD[1]

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(
        "reproduce: .venv/bin/python bench/server_threads.py"
        f" --workers {args.workers} --cache {args.cache} --rounds {args.rounds}"
        f" --duration {args.duration} --connections {args.connections} --streams {args.streams}"
    )
    directory = policy_dir()
    receiver = OtlpReceiver()
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-threads-"))
    base_env, on_env = server_envs(receiver.port)
    log_file = tmp / "decisions.jsonl"
    ports = {"off": free_port(), "on": free_port()}
    servers = {}
    body = request_bytes(1, pinned_time=True)
    results: dict[str, list[dict[str, tuple[float, float]]]] = {"off": [], "on": []}
    rps: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for name in ("off", "on"):
            flags = telemetry_flags(name, args.cache, log_file, control=False)
            env = on_env if name == "on" else base_env
            servers[name] = start_server(directory, args.workers, ports[name], flags, env)
        with grpc.insecure_channel(f"127.0.0.1:{ports['on']}") as ch:
            raw = ch.unary_unary("/pdp.v1.DecisionService/Check")(body, timeout=10)
        for rnd in range(args.rounds):
            order = ["off", "on"] if rnd % 2 == 0 else ["on", "off"]
            for name in order:
                sid = servers[name].pid
                before: list[dict[tuple[int, int], ThreadStat]] = []
                result = h2load(
                    ports[name],
                    body,
                    len(raw),
                    args,
                    lambda s=sid, b=before: b.append(session_threads(s)),
                )
                time.sleep(DRAIN_S if name == "on" else 0)
                counted = per_role(before[0], session_threads(sid), int(result["done"]))
                results[name].append(counted)
                rps[name].append(result["rps"])
                print(
                    f"  round {rnd + 1} {name:<3} {result['rps']:>8.0f} req/s"
                    f" {sum(cpu for cpu, _ in counted.values()):>6.1f} µs CPU/call",
                    flush=True,
                )
    finally:
        for proc in servers.values():
            stop_server(proc)
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    off, on = medians(results["off"]), medians(results["on"])
    print(
        f"\nworkers {args.workers}, cache {args.cache}: median req/s off"
        f" {statistics.median(rps['off']):.0f}, on {statistics.median(rps['on']):.0f}"
    )
    print(
        f"{'threads':<18} {'off µs/call':>11} {'on µs/call':>10} {'on - off':>9}"
        f" {'off switches':>12} {'on switches':>11}"
    )
    for role in ROLES:
        if not (off[role][0] or on[role][0] or off[role][1] or on[role][1]):
            continue  # no such thread in either server
        print(
            f"{role:<18} {off[role][0]:>11.1f} {on[role][0]:>10.1f}"
            f" {on[role][0] - off[role][0]:>+9.1f} {off[role][1]:>12.2f} {on[role][1]:>11.2f}"
        )
    total_off = sum(cpu for cpu, _ in off.values())
    total_on = sum(cpu for cpu, _ in on.values())
    print(f"{'all':<18} {total_off:>11.1f} {total_on:>10.1f} {total_on - total_off:>+9.1f}")
    print(
        "µs/call and switches/call: median over the rounds of each thread group's CPU (user +"
        " system) and context switches, over h2load's counted calls; the all row adds the"
        " groups' medians"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

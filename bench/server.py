"""Load the gRPC decision server on loopback and compare it with the in-process engine.

    .venv/bin/python bench/server.py [--duration 5] [--connections 8] [--streams 8]
                                 [--workers default,1] [--distinct 50000] [--repeated]
    .venv/bin/python bench/server.py --telemetry [--rounds 5] [--workers 1] [--control]
                                 [--connections 64] [--streams 1]

What it measures: for 1-resource x 3-action and 20-resource x 3-action requests, `pdp serve`
with its defaults (`default`: no --workers) and with `--workers 1`, loaded by the
multi-payload driver (bench/driver/grpcload.c, `make bench-driver`) rotating through
`--distinct` different requests (each its own documents, principals among 997; with more of
them than the decision cache holds, no call is a cache hit): req/s, p50/p99 latency, the server's
CPU per call (its processes' user + system time from /proc), the decision-cache hit rate
(computed from the rotation, pdp exposes no counter), and the ratio of the server's throughput
to the in-process engine parsing and deciding the same requests on one core. How to read it:
`server/in-proc` is what serving costs on top of deciding; CPU per call moves less with other
load on the machine than req/s does. `--repeated` sends one request over and over instead
(every call after the first a cache hit: the gateway's best case, not typical traffic).
Not a test: figures depend on the machine; say which with every figure.

`--telemetry` measures what the decision log and tracing cost a real server (issue 6: at most
15%). Per worker count, request size and decision cache (on, the default, and
`--decision-cache 0`), it starts two servers side by side: **off** (`--otel off`, no decision
log) and **on** (`--decision-log FILE --otel on`, traces and metrics exported over OTLP/gRPC to
a small receiver this script runs on 127.0.0.1, default sampler, the default writer: a separate
process on a multi-core machine, whose CPU counts in the on server's CPU per request). h2load
runs alternate between them (the order flips every round, since the shared 2-core machine
drifts). Over `--rounds` rounds, two estimates of on/off throughput are printed: the ratio of
the medians, and the median of each round's own ratio (which the drift between rounds moves
less); the cost is one minus the lower. The per-round ratio's median also gets a 95%
confidence interval over the rounds (order statistics, no assumption about the noise's
shape), and `at most` is one minus its low end: the cost the rounds rule out exceeding, 19
times in 20. Also printed: server CPU per request over h2load's counted calls (from /proc,
less moved by other load than req/s; `writer`: the part of the on server's that its telemetry
writer processes spent), and `CPU cost`, one minus the median per-round ratio of off's CPU per
request to on's. The on server must have logged every call and
dropped none: a writer that fell behind and dropped records would look cheap. Requests carry a
fixed `context.time`, so with the cache on every repeated call is a hit. The load is 64
connections with one call in flight each (not the 8 x 8 of the throughput bench): with
`--workers 2` the kernel deals connections to the workers at random, each round line prints
the deal its run got (`connections 5:3`), and 8 connections dealt unevenly or evenly made
rounds of one server differ by half; 64 are dealt nearly evenly every time.

`--control` runs the same bench with both servers off (an A/A test): the costs it prints
are the bench's own noise, the yardstick for a real run's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRINCIPAL = {
    "id": "alice",
    "tenant": "acme",
    "roles": ["user"],
    "scopes": ["docs:read", "docs:write", "docs:delete"],
    "attr": {"department": "eng", "kbs": ["kb1"]},
}
CONTEXT = {"ip": "10.1.2.3", "attr": {"mfa": True}}


def resources(n: int) -> list[dict[str, Any]]:
    return [
        {
            "kind": "document",
            "id": f"doc-{i}",
            "tenant": "acme",
            "attr": {
                "owner": "alice" if i % 2 else "bob",
                "classification": "internal",
                "kb": "kb1",
            },
            "actions": ["read", "write", "delete"],
        }
        for i in range(n)
    ]


BUILTIN_POLICY = """
apiVersion: pdp/v1
kind: ResourcePolicy
metadata: {id: documents}
spec:
  resource: document
  actions:
    read: {scopes: ["docs:read"]}
    write: {scopes: ["docs:write"]}
    delete: {scopes: ["docs:delete"]}
  rules:
    - id: owner
      actions: ["*"]
      effect: allow
      condition: resource.attr.owner == principal.id
    - id: kb-read
      actions: [read]
      effect: allow
      condition: has(resource.attr.kb) && resource.attr.kb in principal.attr.kbs
"""


def policy_dir() -> Path:
    """The example policies when they load, else a small built-in directory."""
    from pdp.cli._common import load_and_compile

    try:
        load_and_compile(ROOT / "policies")
        return ROOT / "policies"
    except Exception as exc:
        print(f"(example policies unusable: {exc}; using a built-in policy)")
        d = Path(tempfile.mkdtemp(prefix="pdp-bench-"))
        (d / "document.yaml").write_text(BUILTIN_POLICY)
        return d


def in_process_rps(directory: Path, n: int, seconds: float = 2.0) -> float:
    """Requests/s of parse + decide in this process, as the server decides them, over the
    varied requests the server is sent (`varied_requests`)."""
    from pdp.cli._common import load_and_compile
    from pdp.engine import Engine
    from pdp.model.request import parse_check_request

    engine = Engine(load_and_compile(directory)[1])
    raws = varied_requests(n, 500)
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        for raw in raws[:50]:
            engine.check(parse_check_request(raw))
        raws = raws[50:] + raws[:50]
        count += 50
    return count / seconds


def varied_requests(n: int, count: int) -> list[dict[str, Any]]:
    """`count` distinct requests of `n` documents x 3 actions: each its own principal (of 997)
    and documents (ids never repeat), owned by that principal or someone else."""
    out = []
    for i in range(count):
        principal = PRINCIPAL | {"id": f"user-{i % 997}"}
        docs = resources(n)
        for j, doc in enumerate(docs):
            doc["id"] = f"doc-{i}-{j}"
            doc["attr"] = doc["attr"] | {"owner": principal["id"] if (i + j) % 3 else "bob"}
        out.append({"principal": principal, "resources": docs, "context": CONTEXT})
    return out


CHECK_METHOD = "/pdp.v1.DecisionService/Check"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The example policies read the clock (business hours), and a decision that read it is cached
# only when the request fixes `context.time`; --telemetry sends this time so that with the
# decision cache on every call after the first really is a hit.
PINNED_TIME = "2026-03-02T10:00:00Z"


def request_bytes(n: int, *, pinned_time: bool = False) -> bytes:
    from pdp.client._convert import request_to_proto

    context = CONTEXT | {"time": PINNED_TIME} if pinned_time else CONTEXT
    return request_to_proto(PRINCIPAL, resources(n), context).SerializeToString()


def start_server(
    directory: Path,
    workers: int | None,
    port: int,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    stderr: Any = None,
) -> subprocess.Popen[bytes]:
    from pdp.client import Client, Retry

    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(directory)),
            *("--listen", f"127.0.0.1:{port}"),
            *(("--workers", str(workers)) if workers is not None else ()),
            *("--log-level", "WARNING"),
            "--allow-client-time",  # some runs pin `context.time` (request_bytes(pinned_time=True))
            *extra,
        ],
        env=env,
        stderr=stderr,
        # Its own session: /proc CPU accounting finds the server and its --workers children.
        start_new_session=True,
    )
    # Every worker must be up: new connections land on workers at random.
    patient = Retry(attempts=200, max_backoff_s=0.1)
    for _ in range(10 * (workers or os.cpu_count() or 1)):
        with Client(f"127.0.0.1:{port}", timeout=60, retry=patient) as c:
            c.check(PRINCIPAL, resources(1), CONTEXT)
    return proc


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


# How long after an on run the writer gets to drain what it holds (its CPU is the calls'):
# the feeder's longest sleep, and time for the writer to write.
DRAIN_S = 0.8


# h2load's load: (connections, concurrent calls per connection). The --telemetry default
# spreads the same 64 calls in flight over 64 connections instead of 8: with --workers 2 the
# kernel deals connections to the workers at random (SO_REUSEPORT), and how unevenly 8 are
# dealt moved a run's req/s by half (each run prints its deal), so each round measured a
# differently loaded server and the A/A control alone printed a 15% cost. Dealt 64 at a time,
# the deal barely varies between runs.
LOAD = (8, 8)
TELEMETRY_LOAD = (64, 1)


# h2load's warm-up: calls made before its measured `--duration` (not in its counts).
WARM_UP_S = 1


def h2load(
    port: int,
    body: bytes,
    reply_size: int,
    args: argparse.Namespace,
    on_measure: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One h2load run; `on_measure` is called when its warm-up ends (its counted calls begin),
    so CPU read then and after the run is the CPU of the counted calls."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "body"
        data.write_bytes(b"\0" + struct.pack(">I", len(body)) + body)
        log = Path(tmp) / "log"
        cmd = [
            "h2load", f"http://127.0.0.1:{port}/pdp.v1.DecisionService/Check",
            "-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-c", str(args.connections), "-m", str(args.streams), "-t", "1",
            "-D", str(round(args.duration)), "--warm-up-time", str(WARM_UP_S),
            "--log-file", str(log),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if on_measure is not None:
            time.sleep(WARM_UP_S)
            on_measure()
        out, err = proc.communicate()
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd, out, err)
        times = sorted(
            int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()
        )
    done = int(out.split("requests:")[1].split("succeeded,")[0].split(",")[-1].split()[0])
    rps = float(out.split("finished in")[1].split(",")[1].split("req/s")[0])
    received = int(out.split("traffic:")[1].split("(")[1].split(")")[0])
    # h2load judges HTTP status only; a gRPC error reply has no body, so only full reply
    # bytes for every request prove every call was answered.
    framed = reply_size + 5
    if received < done * (framed - 4):
        raise SystemExit(f"h2load: {received} bytes for {done} replies of ~{framed}: errors")
    return {
        "rps": rps,
        "done": done,
        "p50_ms": times[len(times) // 2] / 1000,
        "p99_ms": times[int(len(times) * 0.99)] / 1000,
    }


# -- --telemetry: decision log + tracing on vs off ----------------------------------------------

OTLP_SERVICES = (
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)


class OtlpReceiver:
    """An OTLP/gRPC receiver on 127.0.0.1 that keeps trace exports as raw bytes.

    No deserializer: the bench process shares the CPU with the servers, so spans are only
    decoded (and counted) after a run, outside the measured window. An empty message is a valid
    encoding of every Export*ServiceResponse.
    """

    def __init__(self) -> None:
        from concurrent import futures

        import grpc

        self.lock = threading.Lock()
        self.traces: list[bytes] = []
        self.exports: dict[str, int] = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for service in OTLP_SERVICES:
            handler = grpc.unary_unary_rpc_method_handler(self._handler(service))
            self.server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, {"Export": handler}),)
            )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _handler(self, service: str) -> Any:
        def export(data: bytes, _context: Any) -> bytes:
            with self.lock:
                self.exports[service] = self.exports.get(service, 0) + 1
                if service == OTLP_SERVICES[0]:
                    self.traces.append(data)
            return b""

        return export

    def take_spans(self) -> int:
        """Spans received since the last call (decoded now, off the measured window)."""
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        with self.lock:
            traces, self.traces = self.traces, []
        n = 0
        for data in traces:
            msg = trace_service_pb2.ExportTraceServiceRequest.FromString(data)
            n += sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
        return n

    def stop(self) -> None:
        self.server.stop(grace=None)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of what `values` sample: the
    order statistics (k-th smallest, k-th largest) with the largest k whose interval covers
    the median with at least `confidence` (each value falls below the median with chance
    1/2, so the count below it is binomial). With fewer than 6 values no k qualifies at 95%,
    and the interval is the whole range."""
    ordered = sorted(values)
    n = len(ordered)
    below = 0.0  # P(count below the median < k)
    k = 0
    for j in range(n // 2 + 1):
        # Covering k = j + 1 misses when fewer than j + 1 values, or more than n - j - 1,
        # fall below the median: twice P(Binomial(n, 1/2) <= j).
        below += math.comb(n, j) / 2**n
        if 1 - 2 * below < confidence:
            break
        k = j + 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def _session_processes(sid: int) -> Iterator[tuple[Path, list[str]]]:
    """The live processes of session `sid` (server + workers + writers): each one's /proc
    directory and the fields of its `stat` after "pid (comm)"."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # state ppid pgrp session ...
        if int(fields[3]) == sid:
            yield stat.parent, fields


def session_cpu_s(sid: int, only: bytes = b"") -> float:
    """User + system CPU seconds of the live processes of session `sid` (server + workers),
    or of those whose command line contains `only`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc, fields in _session_processes(sid):
        try:
            if only and only not in (proc / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime (12th), stime (13th)
    return total / tick


def established_inodes(port: int) -> set[str]:
    """The socket inodes of the established TCP connections whose local port is `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            fields = row.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def connection_split(port: int, sid: int) -> list[int]:
    """How many established connections to `port` each process of session `sid` holds, most
    first (processes holding none left out). With --workers N the kernel's SO_REUSEPORT hash
    deals h2load's connections out to the workers: this is the deal a run got."""
    inodes = established_inodes(port)
    counts = []
    for proc, _ in _session_processes(sid):
        held = 0
        try:
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    held += link.startswith("socket:[") and link[8:-1] in inodes
        except OSError:
            continue
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


# The telemetry writer processes' command line (pdp.cli.telemetry_writer).
WRITER = b"telemetry_writer"


def log_lines(path: Path) -> int:
    """Records in a decision-log file and its rotated backups (per-worker files included)."""
    n = 0
    for f in path.parent.glob(path.stem + "*"):
        with f.open("rb") as fh:
            n += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return n


def server_envs(receiver_port: int) -> tuple[dict[str, str], dict[str, str]]:
    """The off and on servers' environments: this one without OTEL_* settings, and that plus
    traces and metrics over OTLP/gRPC to the bench's receiver on `receiver_port`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return base, base | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_SERVICE_NAME": "pdp-bench",
    }


def telemetry_flags(
    name: str, cache: str, log_file: Path, *, control: bool, writer: str = ""
) -> tuple[str, ...]:
    """`pdp serve` flags of the `name` ("off" or "on") server of a --telemetry row. Under
    `control` the on server is a second off server: what the bench then prints as a cost is
    its own noise. `writer`: the on server's `--telemetry-writer` ("": pdp's default)."""
    flags: tuple[str, ...] = ("--decision-cache", "0") if cache == "off" else ()
    if name == "off" or control:
        return (*flags, "--otel", "off")
    return (
        *flags,
        *(("--telemetry-writer", writer) if writer else ()),
        *("--otel", "on", "--decision-log", str(log_file)),
        # Rotation (100 MiB) stays on, as in production; enough backups are kept that every
        # record can be counted afterwards.
        *("--decision-log-backups", "1000"),
    )


def telemetry_main(args: argparse.Namespace, directory: Path) -> int:
    import grpc

    from pdp.server._gen.pdp.v1 import decision_pb2

    if not shutil.which("h2load"):
        raise SystemExit("--telemetry needs h2load (apt-get install -y nghttp2-client)")
    sizes = [int(s) for s in args.sizes.split(",")]
    caches = [c.strip() for c in args.caches.split(",")]
    receiver = OtlpReceiver()
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-telemetry-"))
    base_env, on_env = server_envs(receiver.port)
    if args.control:
        print("CONTROL RUN: both servers run with telemetry off; every cost below is noise")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            for cache in caches:
                log_file = tmp / f"decisions-w{workers}-c{cache}.jsonl"
                err_file = tmp / f"stderr-w{workers}-c{cache}.txt"
                off_port, on_port = free_port(), free_port()
                off = start_server(
                    directory,
                    workers,
                    off_port,
                    telemetry_flags(
                        "off", cache, log_file, control=args.control, writer=args.writer
                    ),
                    base_env,
                )
                with err_file.open("wb") as err:
                    on = start_server(
                        directory,
                        workers,
                        on_port,
                        telemetry_flags(
                            "on", cache, log_file, control=args.control, writer=args.writer
                        ),
                        base_env if args.control else on_env,
                        stderr=err,
                    )
                try:
                    for n in sizes:
                        body = request_bytes(n, pinned_time=True)
                        with grpc.insecure_channel(f"127.0.0.1:{on_port}") as ch:
                            raw = ch.unary_unary("/pdp.v1.DecisionService/Check")(body, timeout=10)
                        assert len(decision_pb2.CheckResponse.FromString(raw).results) == n
                        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
                        for rnd in range(args.rounds):
                            order = [("off", off), ("on", on)]
                            if rnd % 2:
                                order.reverse()
                            for name, proc in order:
                                port = off_port if name == "off" else on_port
                                start: list[float] = []
                                split: list[int] = []

                                def measure(
                                    pid: int = proc.pid,
                                    port: int = port,
                                    start: list[float] = start,
                                    split: list[int] = split,
                                ) -> None:
                                    start.extend((session_cpu_s(pid), session_cpu_s(pid, WRITER)))
                                    split.extend(connection_split(port, pid))

                                result = h2load(port, body, len(raw), args, measure)
                                cpu0, writer0 = start
                                # Let the writer drain what it holds: its CPU is the call's.
                                time.sleep(DRAIN_S if name == "on" else 0)
                                cpu = session_cpu_s(proc.pid) - cpu0
                                writer = session_cpu_s(proc.pid, WRITER) - writer0
                                result["cpu_us"] = cpu / max(result["done"], 1) * 1e6
                                result["writer_us"] = writer / max(result["done"], 1) * 1e6
                                runs[name].append(result)
                                print(
                                    f"  w{workers} cache {cache:<3} {n:>2}x3 round {rnd + 1}"
                                    f" {name:<3} {result['rps']:>8.0f} req/s"
                                    f" {result['cpu_us']:>6.0f} µs CPU/req"
                                    f"  connections {':'.join(map(str, split))}",
                                    flush=True,
                                )
                        med = {
                            k: {
                                m: statistics.median(r[m] for r in v)
                                for m in ("rps", "p50_ms", "p99_ms", "cpu_us", "writer_us")
                            }
                            for k, v in runs.items()
                        }
                        rows.append(
                            {
                                "workers": workers,
                                "cache": cache,
                                "resources": n,
                                "off": med["off"],
                                "on": med["on"],
                                "ratio": med["on"]["rps"] / med["off"]["rps"],
                                "pair_ratios": [
                                    a["rps"] / b["rps"] for a, b in zip(runs["on"], runs["off"])
                                ],
                            }
                        )
                        row = rows[-1]
                        row["paired"] = statistics.median(row["pair_ratios"])
                        # The rounds' spread, as what it leaves of the paired ratio's median.
                        row["paired_ci"] = median_interval(row["pair_ratios"])
                        # The same cost as CPU per call (server and writer processes), which
                        # moves less with the machine's speed than req/s does.
                        row["cpu_cost"] = 1 - statistics.median(
                            a["cpu_us"] / b["cpu_us"] for a, b in zip(runs["off"], runs["on"])
                        )
                        # Two estimates of one ratio: the medians' (robust to one bad run) and
                        # the median of each round's own (robust to the machine drifting
                        # between rounds). The cost is the worse of the two.
                        row["cost"] = 1 - min(row["ratio"], row["paired"])
                finally:
                    stop_server(off)
                    stop_server(on)
                dropped = [
                    line
                    for line in err_file.read_text(errors="replace").splitlines()
                    if "dropped" in line
                ]
                for row in rows:
                    if row["workers"] == workers and row["cache"] == cache:
                        row["dropped_warnings"] = dropped
                if args.control:
                    continue
                spans, records = receiver.take_spans(), log_lines(log_file)
                print(f"  on server: {records} records logged, {spans} spans received", flush=True)
                if records != spans:
                    print("  WARNING: records and spans differ: something was lost")
                if dropped:
                    print(
                        "  WARNING: the on server dropped records:\n    " + "\n    ".join(dropped)
                    )
                if not spans or not records:
                    raise SystemExit("the on server exported no spans or logged no records")
    except BaseException:
        print(f"(server logs and decision logs kept in {tmp})")
        raise
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        receiver.stop()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"\n{'request':<8} {'workers':>7} {'cache':>5} {'off req/s':>10} {'on req/s':>9}"
        f" {'on/off':>7} {'paired':>7} {'95% CI':>11} {'cost':>6} {'at most':>7}"
        f" {'off µs/req':>11} {'on µs/req':>10} {'writer':>7} {'CPU cost':>8}"
        f" {'off p99':>8} {'on p99':>7}  per-round on/off"
    )
    for r in rows:
        low, high = r["paired_ci"]
        print(
            f"{r['resources']:>2}x3{'':<4} {r['workers']:>7} {r['cache']:>5}"
            f" {r['off']['rps']:>10.0f} {r['on']['rps']:>9.0f} {r['ratio']:>7.3f}"
            f" {r['paired']:>7.3f} {f'{low:.3f}-{high:.3f}':>11} {r['cost']:>6.1%}"
            f" {1 - low:>7.1%}"
            f" {r['off']['cpu_us']:>11.0f} {r['on']['cpu_us']:>10.0f}"
            f" {r['on']['writer_us']:>7.0f} {r['cpu_cost']:>8.1%}"
            f" {r['off']['p99_ms']:>8.2f} {r['on']['p99_ms']:>7.2f}"
            f"  {' '.join(f'{x:.2f}' for x in r['pair_ratios'])}"
        )
    print(
        "on/off: median on req/s over median off req/s; paired: median of the per-round"
        " ratios, with its 95% confidence interval over the rounds (distribution-free);"
        " cost: 1 - the lower of on/off and paired; at most: 1 - the interval's low end;"
        " CPU cost: 1 - the median per-round ratio of CPU per request, off over on"
        " (writer included)"
    )
    print("target (issue 6): cost <= 15%")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument(
        "--connections", type=int, help="client connections (default 8; --telemetry: 64)"
    )
    parser.add_argument(
        "--streams", type=int, help="concurrent calls per connection (default 8; --telemetry: 1)"
    )
    parser.add_argument("--sizes", default="1,20", help="resources per request (3 actions each)")
    parser.add_argument(
        "--workers",
        help="server worker counts to run, `default` for none given "
        "(default: default,1; --telemetry: 1,2)",
    )
    parser.add_argument(
        "--distinct",
        type=int,
        default=50_000,
        help="distinct requests the load driver rotates through (50,000)",
    )
    parser.add_argument(
        "--repeated",
        action="store_true",
        help="send one request over and over instead (decision-cache hits, labelled as such)",
    )
    parser.add_argument("--json", action="store_true", help="also print results as JSON")
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="decision log + OTLP tracing on vs off, as a throughput ratio (issue 6)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="--telemetry: on/off runs each")
    parser.add_argument(
        "--caches", default="on,off", help="--telemetry: decision cache settings to run"
    )
    parser.add_argument(
        "--writer",
        choices=("process", "thread"),
        default="",
        help="--telemetry: the on server's --telemetry-writer (default: pdp's own choice)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="--telemetry: an A/A run, the on server with telemetry off too (the bench's noise)",
    )
    args = parser.parse_args()
    default_load = TELEMETRY_LOAD if args.telemetry else LOAD
    args.connections = args.connections or default_load[0]
    args.streams = args.streams or default_load[1]
    args.workers = args.workers or ("1,2" if args.telemetry else "default,1")

    directory = policy_dir()
    tool = "h2load" if args.telemetry else "bench/driver/grpcload.c"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"policies: {directory}; load: {tool} -c{args.connections} -m{args.streams}")
    if args.telemetry:
        print(
            "reproduce: .venv/bin/python bench/server.py --telemetry"
            f" --duration {args.duration} --rounds {args.rounds} --workers {args.workers}"
            f" --sizes {args.sizes} --caches {args.caches}"
            f" --connections {args.connections} --streams {args.streams}"
            f"{' --control' if args.control else ''}"
            f"{f' --writer {args.writer}' if args.writer else ''}"
        )
        return telemetry_main(args, directory)
    return throughput_main(args, directory)


def throughput_main(args: argparse.Namespace, directory: Path) -> int:
    """`pdp serve` under the multi-payload load driver: varied requests (or one repeated)."""
    import grpc

    from pdp.server._gen.pdp.v1 import decision_pb2

    sys.path.insert(0, str(ROOT / "bench"))
    from peers import driver

    print(
        f"reproduce: .venv/bin/python bench/server.py --duration {args.duration}"
        f" --workers {args.workers} --sizes {args.sizes} --distinct {args.distinct}"
        f"{' --repeated' if args.repeated else ''}"
    )
    from pdp.client._convert import request_to_proto

    def payload(raw: dict[str, Any]) -> bytes:
        return request_to_proto(
            raw["principal"], raw["resources"], raw["context"]
        ).SerializeToString()

    sizes = [int(s) for s in args.sizes.split(",")]
    baseline = {n: in_process_rps(directory, n) for n in sizes}
    capacity = driver.default_cache_entries()
    warm = 1000
    rows = []
    for w in args.workers.split(","):
        workers = None if w == "default" else int(w)
        port = free_port()
        proc = start_server(directory, workers, port)
        try:
            for n in sizes:
                # One request repeated (every call after the first a cache hit when the decision
                # does not read the clock: the time is pinned), or `--distinct` of them in turn.
                if args.repeated:
                    reqs = [
                        {
                            "principal": PRINCIPAL,
                            "resources": resources(n),
                            "context": CONTEXT | {"time": PINNED_TIME},
                        }
                    ]
                else:
                    reqs = varied_requests(n, args.distinct)
                tag = "repeated" if args.repeated else "varied"
                bodies = driver.body_file(f"server-{tag}-{n}x3", payload, reqs)
                # One real reply: proves the request decides.
                with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                    raw = ch.unary_unary("/pdp.v1.DecisionService/Check")(
                        payload(reqs[0]), timeout=10
                    )
                assert len(decision_pb2.CheckResponse.FromString(raw).results) == n
                load = {"connections": args.connections, "streams": args.streams}
                driver.run(port, CHECK_METHOD, bodies, requests=warm, **load)
                r = driver.run(
                    port,
                    CHECK_METHOD,
                    bodies,
                    duration=args.duration,
                    start=warm,
                    server_session=proc.pid,
                    **load,
                )
                if not r.ok:
                    raise SystemExit(f"{r.successes}/{r.requests} calls succeeded: {r.errors}")
                rows.append(
                    {
                        "workers": w,
                        "resources": n,
                        "distinct": len(reqs),
                        "rps": r.rps,
                        "p50_ms": r.p50_us / 1000,
                        "p99_ms": r.p99_us / 1000,
                        "cpu_us": r.server_cpu_us,
                        "hit_rate": driver.hit_rate(len(reqs), r.requests, warm, capacity, warm),
                        "in_process_rps": baseline[n],
                        "ratio": r.rps / baseline[n],
                    }
                )
        finally:
            stop_server(proc)
    print(
        f"{'request':<10} {'workers':>7} {'distinct':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'CPU µs/call':>11} {'cache hits':>10} {'in-proc req/s':>14} {'server/in-proc':>15}"
    )
    for r in rows:
        print(
            f"{r['resources']:>2}x3{'':<6} {r['workers']:>7} {r['distinct']:>8} {r['rps']:>9.0f}"
            f" {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['cpu_us']:>11.0f}"
            f" {r['hit_rate']:>10.0%} {r['in_process_rps']:>14.0f} {r['ratio']:>15.2f}"
        )
    print(
        "cache hits: computed from the workload (the rotation through the distinct requests "
        f"against a {capacity:,}-entry LRU per worker); `default`: pdp serve without --workers"
    )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

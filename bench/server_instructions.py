"""What the decision log and tracing cost a real server, in CPU instructions (not a test).

Reproduce:  .venv/bin/python bench/server_instructions.py [--connections 1] [--streams 1]

`bench/server.py --telemetry` measures the cost as throughput, on vs off, and on a shared
2-core virtual machine its rows move by ten points between identical runs. Instructions do
not move so. This runs `pdp serve --workers 1` on loopback under `valgrind --tool=callgrind`,
telemetry off (`--otel off`, no decision log) and on (`--decision-log FILE --otel on`, spans and
metrics over OTLP/gRPC to a receiver in this process, the writer process as `pdp serve` starts
it), and sends it the `--telemetry` bench's request (cache hits) with h2load, once 300 and once
2000 times. The difference per request is the server process's instructions per call, with
start-up, imports and the first request's decision cancelled out. Less the work the server
does by the clock rather than per call (the feeder thread's ten wake-ups a second, gRPC's
timers): under valgrind calls run about 50 times slower, so that work would look about 50
times larger per call than it is in a loaded server. Two more runs per server, idle for 10 and
40 s after start-up, give its rate, which is taken out for the seconds the extra calls took;
both figures are printed. The writer process is not under valgrind (it is a child the server
starts): its instructions per call come from `bench/writer_instructions.py`, run here too.

Two costs are printed, as 1 - off/on:
- **serving only**: the server process's own instructions, on vs off. What telemetry costs a
  server whose writer has a core of its own (a lone pinned server on a multi-core machine).
- **all work**: the writer's instructions per call added to the on server's. What it costs
  when every core is busy serving, so the writer's work displaces serving work.

Instructions are not time: under load, the extra threads also cost GIL hand-offs and cache
misses that no count shows, so this is a floor for the throughput cost, not its measure. Needs
valgrind and h2load (Debian `valgrind`, `nghttp2-client`); takes 9 to 11 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

SMALL, LARGE = 300, 2000  # requests in the two counted runs
IDLE_SHORT, IDLE_LONG = 10, 40  # seconds idle in the two runs that measure work by the clock


def serve_counted(
    mode: str, requests: int, args: argparse.Namespace, receiver_port: int, tmp: Path
) -> tuple[int, float]:
    """The instructions a `pdp serve` under callgrind executes, start to stop, answering
    `requests` calls, and the seconds those calls took. With `requests` negative, it answers
    none and idles `-requests` seconds instead."""
    from server import PINNED_TIME, PRINCIPAL, free_port, policy_dir, request_bytes, resources

    from pdp.client import Client, Retry

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
    if mode == "on":
        env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": "pdp-bench",
        }
        telemetry = ["--otel", "on", "--decision-log", str(tmp / f"decisions{requests}.jsonl")]
    else:
        telemetry = ["--otel", "off"]
    port = free_port()
    out = tmp / f"callgrind-{mode}-{requests}.out"
    proc = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            "--trace-children=no",  # the writer process runs natively
            sys.executable, "-m", "pdp.cli.main", "serve", "--policies", str(policy_dir()),
            "--listen", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "WARNING",
            "--allow-client-time",  # its requests pin `context.time`
            *telemetry,
        ],
        env=env,
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        # Slow to start under valgrind: imports and policy compilation run 50 times slower.
        # Each refused attempt costs the server instructions: few, widely spaced ones.
        patient = Retry(attempts=300, max_backoff_s=5.0)
        with Client(f"127.0.0.1:{port}", timeout=600, retry=patient) as client:
            client.check(PRINCIPAL, resources(1), {"ip": "10.1.2.3"})
        began = time.monotonic()
        if requests < 0:
            time.sleep(-requests)
            return _count(proc, out), time.monotonic() - began
        body = request_bytes(1, pinned_time=True)
        data = tmp / f"body{requests}"
        data.write_bytes(b"\0" + len(body).to_bytes(4, "big") + body)
        load = subprocess.run(
            [
                "h2load", f"http://127.0.0.1:{port}/pdp.v1.DecisionService/Check",
                "-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers",
                "-c", str(args.connections), "-m", str(args.streams), "-t", "1",
                "-n", str(requests),
            ],
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip
        took = time.monotonic() - began
        if f"{requests} succeeded" not in load.stdout:
            raise SystemExit(f"h2load: not every call succeeded:\n{load.stdout}")
        time.sleep(1.0)  # the feeder's last batch reaches the writer
        count = _count(proc, out)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(600)
    if mode == "on":
        # h2load's calls are the ones with the pinned time (not the readiness probes).
        logged = sum(
            path.read_bytes().count(PINNED_TIME[:19].encode())
            for path in tmp.glob(f"decisions{requests}.jsonl*")
        )
        if logged != requests:
            raise SystemExit(f"the on server logged {logged} of h2load's {requests} calls")
    return count, took


def _count(proc: subprocess.Popen[bytes], out: Path) -> int:
    """Stop the server and read its instruction count."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(600)
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M)
    if found is None:
        raise SystemExit(f"no instruction count in {out}")
    return int(found.group(1))


def writer_per_call() -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, str(HERE / "writer_instructions.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.search(r"cache hits: ([\d,]+) instructions per call", out)
    if found is None:
        raise SystemExit(f"bench/writer_instructions.py printed no count:\n{out}")
    return int(found.group(1).replace(",", "")), found.group(0)


Run = tuple[int, float]  # (instructions, seconds) of one server's life


def per_call(
    small: Run, large: Run, idle_short: Run, idle_long: Run, calls: int
) -> tuple[float, float, float]:
    """(instructions per call, the same before the clock's work is taken out, idle rate per
    second) from two loaded runs `calls` apart and two idle runs of different lengths."""
    idle_rate = (idle_long[0] - idle_short[0]) / (idle_long[1] - idle_short[1])
    raw = (large[0] - small[0]) / calls
    # Work done by the clock (pollers' wake-ups), not by calls: under valgrind calls run about
    # 50 times slower, so per call it looks about 50 times larger than it is. Taken out at the
    # rate the same server spends idle.
    return raw - idle_rate * (large[1] - small[1]) / calls, raw, idle_rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=1, help="h2load -c (default 1)")
    ap.add_argument("--streams", type=int, default=1, help="h2load -m (default 1)")
    args = ap.parse_args()
    for tool in ("valgrind", "h2load"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool} (apt-get install -y valgrind nghttp2-client)")
    from concurrent.futures import ThreadPoolExecutor

    from server import OtlpReceiver

    started = time.monotonic()
    receiver = OtlpReceiver()
    tmp = Path(tempfile.mkdtemp(prefix="pdp-bench-server-instructions-"))
    try:
        # Two at a time (one per core): instruction counts do not depend on the company.
        with ThreadPoolExecutor(2) as pool:
            runs = {
                (mode, n): pool.submit(serve_counted, mode, n, args, receiver.port, tmp)
                for mode in ("off", "on")
                for n in (SMALL, LARGE, -IDLE_SHORT, -IDLE_LONG)
            }
            counts = {key: run.result() for key, run in runs.items()}
        writer, writer_line = writer_per_call()
    finally:
        receiver.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"pdp serve --workers 1, cache hits, h2load -c{args.connections} -m{args.streams};"
        f" {SMALL} and {LARGE} calls differenced ({time.monotonic() - started:.0f} s)"
    )
    per: dict[str, float] = {}
    for mode in ("off", "on"):
        extra_s = counts[mode, LARGE][1] - counts[mode, SMALL][1]
        per[mode], raw, idle_rate = per_call(
            counts[mode, SMALL], counts[mode, LARGE], counts[mode, -IDLE_SHORT],
            counts[mode, -IDLE_LONG], LARGE - SMALL,
        )  # fmt: skip
        print(
            f"server instructions per call, telemetry {mode + ':':<4} {per[mode]:>9,.0f}"
            f" ({raw:,.0f} less {idle_rate:,.0f} per idle second over the"
            f" {extra_s:.0f} s the extra calls took)"
        )
    off, on = per["off"], per["on"]
    print(f"telemetry on, server side: {on - off:+,.0f} instructions per call")
    print(f"writer process (bench/writer_instructions.py): {writer_line}")
    print(f"cost, serving only (1 - off/on):        {1 - off / on:.1%}")
    print(f"cost, all work (1 - off/(on + writer)): {1 - off / (on + writer):.1%}")
    print("target (issue 6, as throughput): cost <= 15%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

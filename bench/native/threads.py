"""`pdp serve --transport native --threads N`: server CPU per uncached 1x3 call (issue 22).

    .venv/bin/python bench/native/threads.py 1,2,4,8 [ROUNDS]

One `pdp serve --workers 1 --transport native --threads N` at a time, pinned to the last CPU,
the load driver (bench/driver/grpcload.c, -c4 -m8, compare.py's 50,000-body 1x3 rotation: the
decision cache misses) on the first; 1 s of warm-up, then 5 s measured; rounds interleaved,
the order flipped each round; medians printed. Server CPU is its session's /proc time.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from peers import driver, grpcload, workload  # noqa: E402


def main() -> int:
    threads = [int(x) for x in sys.argv[1].split(",")] if len(sys.argv) > 1 else [1, 2, 4, 8]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    reqs = workload.generate(driver.DISTINCT, resources=1)
    body = driver.body_file("pdp-varied-1x3", grpcload.pdp_payload, reqs)
    first = grpcload.pdp_payload(reqs[0])
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = str(cpus[-1]), str(cpus[0])
    runs: dict[int, list[tuple[float, float, float]]] = {t: [] for t in threads}
    print(f"load average {grpcload.machine()['loadavg']}", flush=True)
    with grpcload.tmpdir() as tmp:
        for r in range(rounds):
            for t in threads if r % 2 == 0 else threads[::-1]:
                flags = ["--transport", "native", "--threads", str(t)]
                with grpcload.pdp_server(1, server_cpu, first, Path(tmp), extra=flags) as s:
                    kw = {"connections": 4, "streams": 8, "cpus": load_cpu}
                    driver.run(s.port, grpcload.PDP_CHECK, body, duration=1, **kw)
                    res = driver.run(
                        s.port, grpcload.PDP_CHECK, body, duration=5, start=20000,
                        server_session=s.proc.pid, **kw,
                    )  # fmt: skip
                if not res.ok:
                    sys.exit(f"threads {t}: errors {res.errors}")
                runs[t].append((res.server_cpu_us, res.rps, res.p99_us))
                print(
                    f"threads {t} round {r}: {res.server_cpu_us:.1f} us/call, "
                    f"{res.rps:.0f} req/s, p99 {res.p99_us / 1000:.2f} ms",
                    flush=True,
                )
    for t, got in runs.items():
        cpu = statistics.median(x[0] for x in got)
        rps = statistics.median(x[1] for x in got)
        p99 = statistics.median(x[2] for x in got) / 1000
        print(f"threads {t}: median {cpu:.1f} us/call, {rps:.0f} req/s, p99 {p99:.2f} ms")
    print(f"load average {grpcload.machine()['loadavg']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

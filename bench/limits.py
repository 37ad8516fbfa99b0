"""Rate-limit benchmark (not a test): decisions per second with limits on vs off.

Reproduce:  .venv/bin/python bench/limits.py             (from the repository root)
            .venv/bin/python bench/limits.py --quick     (fewer requests and rounds)

Decides, in process (`Engine.check` on parsed requests), 20,000 distinct model-invoke
requests of the example policies (policies/): 2,000 principals in 200 tenants, each asking with
a different token count, a tenth of them through an AI agent. So every request touches the
`tenant-model-tokens` bucket of its tenant, and the agent ones `agent-calls-per-second` too.

Three runs over the same requests, interleaved for `--rounds` rounds (median reported):
- off: the example policies without their LimitPolicy (the access decision alone);
- memory: with the limits, counters in this process (`--limits-store memory`, the default);
- redis: with the limits, counters in a real redis-server this script starts on a free
  loopback port (Debian's redis-server; `make test` installs it) — one round trip per
  limited decision, which is what the figure measures.

Printed: µs per decision, decisions per second, and each run's ratio to `off`. The Redis
figure is bound by the loopback round trip and the Lua script; a gateway serving from several
threads overlaps those waits, which this single-threaded loop does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pdp.engine import Engine, compile_policy_set  # noqa: E402
from pdp.engine.counters import MemoryCounters  # noqa: E402
from pdp.limits.redis import RedisCounters  # noqa: E402
from pdp.model.loader import load_policy_dir  # noqa: E402
from pdp.model.request import parse_check_request  # noqa: E402


def requests(n: int) -> list:
    out = []
    for i in range(n):
        tenant = f"t{i % 200}"
        principal = {
            "id": f"u{i % 2000}",
            "tenant": tenant,
            "roles": ["user"],
            "scopes": ["models:invoke"],
        }
        if i % 10 == 0:
            principal["actor"] = {
                "id": f"agent-{i % 50}",
                "type": "ai_agent",
                "scopes": ["models:invoke"],
            }
        out.append(
            parse_check_request(
                {
                    "principal": principal,
                    "resources": [
                        {"kind": "model", "id": f"m{i % 7}", "tenant": tenant,
                         "attr": {"status": "active"}, "actions": ["invoke"]}
                    ],
                    "context": {"ip": "10.1.2.3", "attr": {"tokens": 1 + i % 500}},
                }
            )
        )  # fmt: skip
    return out


def start_redis(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing (Debian package redis-server; `make test` installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(300):
        try:
            client.ping()
            return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def run(engine: Engine, reqs: list) -> float:
    """Seconds per decision over one pass."""
    start = time.perf_counter()
    for r in reqs:
        engine.check(r)
    return (time.perf_counter() - start) / len(reqs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    rounds = 3 if args.quick else args.rounds

    source = load_policy_dir(ROOT / "policies")
    with_limits = compile_policy_set(source)
    without = compile_policy_set(dataclasses.replace(source, limit_policies=()))
    reqs = requests(n)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(tmp)
        try:
            engines = {
                "off": lambda: Engine(without),
                "memory": lambda: Engine(with_limits, counters=MemoryCounters()),
                "redis": lambda: Engine(with_limits, counters=RedisCounters.from_url(url)),
            }
            times: dict[str, list[float]] = {k: [] for k in engines}
            for _ in range(rounds):
                for name, make in engines.items():
                    times[name].append(run(make(), reqs))  # fresh buckets every round
        finally:
            proc.terminate()
            proc.wait()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{n:,} distinct model-invoke requests, median of {rounds} interleaved rounds")
    print(f"{'limits':8} {'µs/decision':>12} {'decisions/s':>12} {'vs off':>8}")
    off = statistics.median(times["off"])
    for name, series in times.items():
        t = statistics.median(series)
        print(f"{name:8} {t * 1e6:12.2f} {1 / t:12,.0f} {t / off:7.2f}x")


if __name__ == "__main__":
    main()

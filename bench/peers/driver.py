"""The multi-payload load driver (bench/driver/grpcload.c) from Python: body files, builds, runs.

h2load posts one body over and over, so a server with a decision cache answers every call after
the first from it. The driver, a small C program on libnghttp2, rotates through a file of many
distinct pre-framed gRPC messages instead — at least 50,000 per workload here — which is what a
gateway in front of many users and objects sends. This module writes those files from the
workload generator (each server its own protobuf for the same questions), builds the driver
(`make bench-driver`), runs it, and reads the server's CPU time from /proc around the run.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import grpcload, workload

ROOT = grpcload.ROOT
BINARY = ROOT / "bench/.cache/grpcload"
SOURCE = ROOT / "bench/driver/grpcload.c"
# Distinct request bodies per workload: more than any decision cache in the comparison holds, so
# rotating through them in order, every call is a miss once the cache is full (see hit_rate).
DISTINCT = 50_000


def build() -> Path:
    """The driver binary, built by the Makefile (which installs libnghttp2-dev when missing)."""
    if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(["make", "-s", "bench-driver"], cwd=ROOT, check=True)
    return BINARY


def write_bodies(path: Path, messages: Iterable[bytes]) -> int:
    """Write `messages` as consecutive gRPC frames (the driver's input); returns how many."""
    n = 0
    with path.open("wb") as out:
        for m in messages:
            out.write(grpcload.frame(m))
            n += 1
    return n


def body_file(
    name: str, payload_of: Callable[[workload.Request], bytes], requests: list[workload.Request]
) -> Path:
    """A body file of `requests` as `payload_of` serializes them, kept in bench/.cache/ under a
    key of its content's recipe (generating 50,000 batches takes a while): `name` names the
    server and workload."""
    digest = hashlib.sha256(json.dumps(requests[:50] + requests[-50:]).encode()).hexdigest()[:12]
    path = grpcload.CACHE / "bodies" / f"{name}-{len(requests)}-{digest}.bin"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        write_bodies(tmp, (payload_of(r) for r in requests))
        tmp.replace(path)
    return path


def read_bodies(path: Path) -> list[bytes]:
    """The messages of a body file (without their frame headers)."""
    data = path.read_bytes()
    out, off = [], 0
    while off < len(data):
        n = int.from_bytes(data[off + 1 : off + 5], "big")
        out.append(data[off + 5 : off + 5 + n])
        off += 5 + n
    return out


@dataclass
class DriverResult:
    requests: int
    successes: int
    errors: dict[str, int]
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    bodies: int
    server_cpu_us: float = float("nan")  # the server's CPU (user + system) per completed call
    raw: dict | None = None

    @property
    def ok(self) -> bool:
        return self.requests > 0 and self.successes == self.requests


def run(
    port: int,
    method: str,
    bodies: Path,
    *,
    connections: int,
    streams: int,
    requests: int | None = None,
    duration: float | None = None,
    start: int = 0,
    cpus: str | None = None,
    server_session: int | None = None,
    timeout: float = 600,
) -> DriverResult:
    """One driver run against 127.0.0.1:`port`; `server_session` (the server's session id):
    its processes' CPU time over the run, per call."""
    if (requests is None) == (duration is None):
        raise ValueError("give exactly one of requests and duration")
    cmd = [
        *grpcload.taskset(cpus),
        str(build()),
        *("--port", str(port), "--path", method, "--bodies", str(bodies)),
        *("-c", str(connections), "-m", str(streams), "--start", str(start)),
        *(["-n", str(requests)] if requests is not None else ["-D", str(duration)]),
    ]
    cpu0 = grpcload.session_cpu(server_session) if server_session else {}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    cpu = (
        sum(t - cpu0.get(pid, 0.0) for pid, t in grpcload.session_cpu(server_session).items())
        if server_session
        else float("nan")
    )
    if proc.returncode != 0:
        raise RuntimeError(f"grpcload exited {proc.returncode}: {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    return DriverResult(
        requests=out["requests"],
        successes=out["successes"],
        errors=out["errors"],
        rps=out["rps"],
        p50_us=out["p50_us"],
        p90_us=out["p90_us"],
        p99_us=out["p99_us"],
        bodies=out["bodies"],
        server_cpu_us=cpu / out["requests"] * 1e6 if out["requests"] else float("nan"),
        raw=out,
    )


def default_cache_entries() -> int:
    """`pdp serve`'s default --decision-cache, as its help prints it (whatever it is today)."""
    help_text = subprocess.run(
        [str(Path(sys.executable).parent / "pdp"), "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    # The option's own entry (the usage lines name it too), up to the next option's.
    entry = re.search(r"^ +--decision-cache N\b(.*?)(?=^ +-)", help_text, re.S | re.M)
    m = re.search(r"\((\d[\d,_]*)\)", entry.group(1)) if entry else None
    if m is None:
        raise RuntimeError("no default in `pdp serve --help` for --decision-cache")
    return int(m.group(1).replace(",", "").replace("_", ""))


def hit_rate(distinct: int, calls: int, start: int, capacity: int, warmup: int = 0) -> float:
    """The decision cache's hit rate over a run, computed from the workload (no server exposes
    its own): the driver sends bodies `start`, `start + 1`, ... of `distinct` in turn (cycling),
    after a warm-up of `warmup` calls from body 0, to an LRU cache of `capacity` entries; the
    bodies are distinct as cache keys (each names its own document). With several workers each
    has its own cache and sees a share of the calls, which can only lower the rate: this is
    the one-cache figure, an upper bound."""
    if capacity <= 0:
        return 0.0
    lru: OrderedDict[int, None] = OrderedDict()

    def touch(key: int) -> bool:
        if key in lru:
            lru.move_to_end(key)
            return True
        lru[key] = None
        if len(lru) > capacity:
            lru.popitem(last=False)
        return False

    for i in range(warmup):
        touch(i % distinct)
    hits = sum(touch((start + i) % distinct) for i in range(calls))
    return hits / calls if calls else 0.0

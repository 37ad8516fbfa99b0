"""gRPC side of the comparison: payloads, the pdp and Cerbos servers, and h2load.

Both servers get the same question (one workload request) as their own protobuf message, framed
for gRPC (a 0 byte, the length as 4 big-endian bytes, the message) in a body file that h2load
posts over and over with `content-type: application/grpc` and `te: trailers`. h2load judges
only HTTP status, so each run is checked twice: one reply decoded and compared with the floor
(`verify_*`), and the DATA bytes received equal to n x that reply's frame size — a gRPC error
reply has no body, so any error would show up as missing bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .workload import ACTIONS, Effects, Request

ROOT = Path(__file__).resolve().parent.parent.parent
PEERS = Path(__file__).resolve().parent
CACHE = ROOT / "bench/.cache"
CERBOS_PACKAGE = "@cerbos/cerbos-linux-x64"

PDP_CHECK = "/pdp.v1.DecisionService/Check"
CERBOS_CHECK = "/cerbos.svc.v1.CerbosService/CheckResources"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


# ---- payloads ----------------------------------------------------------------------------------


def pdp_payload(raw: Request) -> bytes:
    from pdp.client._convert import request_to_proto

    return request_to_proto(
        raw["principal"], raw["resources"], raw.get("context")
    ).SerializeToString()


def pdp_effects(reply: bytes) -> Effects:
    from pdp.server._gen.pdp.v1 import decision_pb2

    msg = decision_pb2.CheckResponse.FromString(reply)
    allow = decision_pb2.EFFECT_ALLOW
    return [{a: r.actions[a].effect == allow for a in ACTIONS} for r in msg.results]


def cerbos_payload(raw: Request) -> bytes:
    from cerbos.engine.v1 import engine_pb2
    from cerbos.request.v1 import request_pb2
    from google.protobuf import struct_pb2

    def value(v: Any) -> struct_pb2.Value:
        out = struct_pb2.Value()
        if isinstance(v, list):
            # SetInParent: an empty list must still be a list, not an unset (null) value.
            out.list_value.SetInParent()
            out.list_value.extend(v)
        else:
            out.string_value = v
        return out

    p = raw["principal"]
    msg = request_pb2.CheckResourcesRequest(
        request_id="bench",
        principal=engine_pb2.Principal(
            id=p["id"],
            roles=p["roles"],
            attr={
                "tenant": value(p["tenant"]),
                "scopes": value(p["scopes"]),
                # Cerbos requests carry no context: the client IP rides on the principal.
                "ip": value(raw["context"]["ip"]),
            },
        ),
    )
    for r in raw["resources"]:
        entry = msg.resources.add()
        entry.actions.extend(r["actions"])
        entry.resource.kind = r["kind"]
        entry.resource.id = r["id"]
        entry.resource.attr["tenant"].CopyFrom(value(r["tenant"]))
        for k, v in r["attr"].items():
            entry.resource.attr[k].CopyFrom(value(v))
    return msg.SerializeToString()


def cerbos_effects(reply: bytes) -> Effects:
    from cerbos.effect.v1 import effect_pb2
    from cerbos.response.v1 import response_pb2

    msg = response_pb2.CheckResourcesResponse.FromString(reply)
    allow = effect_pb2.EFFECT_ALLOW
    return [{a: r.actions[a] == allow for a in ACTIONS} for r in msg.results]


def call_raw(port: int, method: str, payload: bytes, timeout: float = 5.0) -> bytes:
    """One unary call with pre-serialized bytes; returns the reply's bytes."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
        return bytes(call(payload, timeout=timeout))


# ---- servers -----------------------------------------------------------------------------------


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


@dataclass
class Server:
    name: str
    port: int
    method: str
    proc: subprocess.Popen[bytes]
    log: Path


def _wait_ready(server: Server, payload: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            call_raw(server.port, server.method, payload, timeout=1.0)
            return
        except Exception as exc:  # not listening yet
            last = exc
            time.sleep(0.1)
    tail = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
    raise RuntimeError(f"{server.name} did not answer within {timeout}s: {last}\n{tail}")


def stop(server: Server) -> None:
    """SIGTERM the server's process group (pdp --workers spawns children), then SIGKILL."""
    if server.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(5)


@contextlib.contextmanager
def pdp_server(
    workers: int | None,
    cpus: str | None,
    payload: bytes,
    tmp: Path,
    cache: int | None = None,
    extra: Sequence[str] = (),
) -> Iterator[Server]:
    """`pdp serve` on a free port; `cache` sets --decision-cache (None: the server's default);
    `workers` None runs it with its defaults (only --policies and --listen, and `extra`)."""
    port = free_port()
    log = tmp / f"pdp-{port}.log"
    cmd = [
        *taskset(cpus),
        str(Path(sys.executable).parent / "pdp"),
        "serve",
        "--policies",
        str(PEERS / "pdp"),
        "--listen",
        f"127.0.0.1:{port}",
        *(["--workers", str(workers), "--log-level", "WARNING"] if workers is not None else []),
        *(["--decision-cache", str(cache)] if cache is not None else []),
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("pdp" if workers is None else f"pdp x{workers}", port, PDP_CHECK, proc, log)
    try:
        _wait_ready(server, payload, 60)
        if workers is None or workers > 1:
            # Workers bind one by one; let every one come up before the load starts.
            time.sleep(1.5)
        yield server
    finally:
        stop(server)


def cerbos_binary(install: bool = True) -> Path | None:
    """The Cerbos binary from npm, installed into bench/.cache/cerbos on first use."""
    base = CACHE / "cerbos"
    found = sorted(base.glob("node_modules/@cerbos/cerbos-linux-*/cerbos-linux-*"))
    if not found and install and shutil.which("npm"):
        base.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(base),
                CERBOS_PACKAGE,
            ],
            check=False,
        )
        found = sorted(base.glob("node_modules/@cerbos/cerbos-linux-*/cerbos-linux-*"))
    found = [f for f in found if f.is_file() and os.access(f, os.X_OK)]
    return found[0] if found else None


def cerbos_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.split()[0] if out.stdout else "?"


@contextlib.contextmanager
def cerbos_server(binary: Path, cpus: str | None, payload: bytes, tmp: Path) -> Iterator[Server]:
    port, http_port, debug_port = free_port(), free_port(), free_port()
    log = tmp / f"cerbos-{port}.log"
    cmd = [
        *taskset(cpus),
        str(binary),
        "server",
        f"--config={PEERS / 'cerbos/config.yaml'}",
        f"--debug-listen-addr=127.0.0.1:{debug_port}",
        "--log-level=error",
        f"--set=server.grpcListenAddr=127.0.0.1:{port}",
        f"--set=server.httpListenAddr=127.0.0.1:{http_port}",
        f"--set=storage.disk.directory={PEERS / 'cerbos/policies'}",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("cerbos", port, CERBOS_CHECK, proc, log)
    try:
        _wait_ready(server, payload, 30)
        yield server
    finally:
        stop(server)


# ---- h2load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    succeeded: int
    rps: float
    p50_us: float
    p99_us: float
    data_bytes: int
    reply_frame: int  # bytes of one reply's gRPC frame
    client_cpus: str | None
    concurrency: str
    server_cpu_us: float = float("nan")  # server CPU time (user + system) per request
    # Share of that CPU time per busy server process, largest first: `pdp serve --workers N`
    # gets connections spread by the kernel's SO_REUSEPORT hash, which with few connections
    # is often uneven.
    cpu_split: tuple[float, ...] = ()

    @property
    def bytes_ok(self) -> bool:
        # pdp replies differ by a byte or two between calls (the evaluated_at timestamp's
        # fraction), so allow 1%; a failed call would be a whole reply missing.
        expected = self.requests * self.reply_frame
        return (
            self.succeeded == self.requests and abs(self.data_bytes - expected) <= 0.01 * expected
        )


def h2load_path() -> str | None:
    return shutil.which("h2load")


def run_h2load(
    port: int,
    method: str,
    payload: bytes,
    reply_frame: int,
    *,
    requests: int,
    clients: int,
    streams: int,
    cpus: str | None,
    tmp: Path,
    warmup: int = 500,
    server_session: int | None = None,
) -> LoadResult:
    """One h2load run. `server_session`: the server's session id, whose processes' CPU time
    over the run is reported per request — a figure that other load on the machine moves far
    less than req/s."""
    body = tmp / f"body-{port}-{len(payload)}.bin"
    body.write_bytes(frame(payload))
    uri = f"http://127.0.0.1:{port}{method}"
    base = [
        *taskset(cpus),
        "h2load",
        "-t",
        "1",
        "-c",
        str(clients),
        "-m",
        str(streams),
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]
    # A short unlogged run first: connection setup, JIT-less warm paths, Cerbos' plan caches.
    subprocess.run([*base, "-n", str(warmup), uri], capture_output=True, check=False, timeout=120)
    log = tmp / f"h2load-{port}.log"
    cpu0 = session_cpu(server_session) if server_session else {}
    out = subprocess.run(
        [*base, "-n", str(requests), f"--log-file={log}", uri],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    ).stdout
    per_proc = (
        {pid: t - cpu0.get(pid, 0.0) for pid, t in session_cpu(server_session).items()}
        if server_session
        else {}
    )
    cpu = sum(per_proc.values()) if server_session else float("nan")
    busy = sorted((t for t in per_proc.values() if t > 0.02 * cpu), reverse=True)
    split = tuple(t / cpu for t in busy) if cpu and cpu == cpu else ()
    succeeded = int(_grab(r"requests: .*?(\d+) succeeded", out))
    rps = float(_grab(r"finished in [\d.]+\w+, ([\d.]+) req/s", out))
    data_bytes = int(_grab(r"traffic: .*\((\d+)\) data", out))
    durations = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] == "200":
            durations.append(int(parts[2]))
    durations.sort()
    return LoadResult(
        requests=requests,
        succeeded=succeeded,
        rps=rps,
        p50_us=statistics.median(durations) if durations else float("nan"),
        p99_us=durations[min(len(durations) - 1, int(len(durations) * 0.99))]
        if durations
        else float("nan"),
        data_bytes=data_bytes,
        reply_frame=reply_frame,
        client_cpus=cpus,
        concurrency=f"-c{clients} -m{streams}",
        server_cpu_us=cpu / requests * 1e6,
        cpu_split=split,
    )


def session_cpu(sid: int) -> dict[int, float]:
    """User + system CPU seconds of each live process in session `sid` (a server started with
    start_new_session, its --workers children included)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # After "pid (comm)": state ppid pgrp session ... utime(12th) stime(13th).
        if int(fields[3]) == sid:
            out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _grab(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    if not m:
        raise RuntimeError(f"unexpected h2load output (no {pattern!r}):\n{text}")
    return next(g for g in m.groups() if g is not None)


def tmpdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="pdp-bench-")


def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {"nproc": str(os.cpu_count()), "cpu": model, "loadavg": load}


def cpus_available() -> Sequence[int]:
    return sorted(os.sched_getaffinity(0))

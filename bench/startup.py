"""Start-up: from `exec` of the server to its first successful decision. Not a test: a benchmark.

Reproduce:  .venv/bin/python bench/startup.py                 (10 rounds)
            .venv/bin/python bench/startup.py --runs 30 --no-cerbos
            .venv/bin/python bench/startup.py --baseline ../other-checkout   (its .venv, its policies)
            .venv/bin/python bench/startup.py --transport native

The server is `pdp` beside the Python running this script (`.venv/bin/pdp`). In this
project's editable install that imports pdp through setuptools' editable finder, which costs
a start ~40-90 ms a wheel install does not pay; bench/RESULTS.md (session 21) compares two
checkouts through plain venvs whose path names each checkout, without it.

Each round starts, in turn, `pdp serve --workers 1` and `pdp serve` (default workers) on the
example policies (`policies/`) and on the comparison workload's policies (bench/peers/pdp), on
each transport `--transport` names (both by default: `grpcio` and `native`), and
Cerbos (npm @cerbos/cerbos-linux-x64, installed into bench/.cache by bench/peers/grpcload.py;
`make bench-compare` installs the `cerbos` protobuf package its payload needs) on the same
workload's policies. The clock starts just before the process is spawned and stops when a Check
call returns a decision. The client first polls the port with a plain TCP connect every 2 ms
until it accepts, then opens its gRPC channel and calls every 2 ms until a decision comes (a
server listening before its policies are active answers UNAVAILABLE meanwhile). A gRPC channel
polling a port nobody listens on yet backs off: measured here, it answered 45-70 ms after a
server began listening (sessions before 24 timed that way, and charged it to whichever server
listens late: pdp's supervisor, whose workers listen once the policies are compiled).
Rounds interleave the servers, so a busy machine slows them alike; each is stopped (SIGTERM to
its process group) before the next.
Prints the median, min and max of each, in seconds, and the median CPU seconds the server's
processes had used when it decided (/proc; Cerbos's too: its threads are one process), which
a busy machine does not inflate as it does the wall clock.

pdp's modules are compiled to bytecode first (`make bytecode`, as pip does for an installed
wheel and the Docker image): a start that compiles them from source measures the environment
(an editable install where PYTHONDONTWRITEBYTECODE is set), not the server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from peers import grpcload, workload  # noqa: E402  (bench/peers: Cerbos install and payloads)

POLL_S = 0.002
CAP_S = 60.0  # a server that has not decided by then is reported as failed
OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 10),
]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of `pid` and its children still running (a supervisor's
    workers), from /proc in clock ticks; 0 for what has exited."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    for one in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _give_up_if_failed(
    proc: subprocess.Popen[bytes], started: float, log: IO[bytes], never: str
) -> None:
    """Raise, with the server's output, if it has exited or is past CAP_S."""
    if proc.poll() is not None or time.perf_counter() - started > CAP_S:
        log.seek(0)
        tail = log.read()[-2000:].decode(errors="replace")
        raise RuntimeError(f"{proc.args!r:.200} never {never}:\n{tail}")


def _wait_listening(
    port: int, proc: subprocess.Popen[bytes], started: float, log: IO[bytes]
) -> None:
    """Until a TCP connect to `port` succeeds (see the module's docstring: not a gRPC channel)."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            pass
        _give_up_if_failed(proc, started, log, "listened")
        time.sleep(POLL_S)


def first_decision(cmd: list[str], port: int, method: str, payload: bytes) -> tuple[float, float]:
    """Seconds from spawning `cmd` to a successful `method` call on `port`, and the CPU
    seconds the server (and its workers) spent by then: on a shared machine the wall-clock
    figure is partly waiting for a core, the CPU figure is not."""
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True, cwd=ROOT)
        try:
            _wait_listening(port, proc, started, log)
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS) as channel:
                call = channel.unary_unary(method)
                while True:
                    try:
                        call(payload, timeout=1.0)
                        took = time.perf_counter() - started
                        return took, cpu_seconds(proc.pid)
                    except grpc.RpcError:  # no policies active yet
                        pass
                    _give_up_if_failed(proc, started, log, "decided")
                    time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def pdp(policies: Path, *flags: str, exe: str = "") -> Callable[[int], list[str]]:
    exe = exe or str(Path(sys.executable).parent / "pdp")
    return lambda port: [
        exe, "serve", "--policies", str(policies), "--listen", f"127.0.0.1:{port}",
        "--log-level", "WARNING", *flags,
    ]  # fmt: skip


def cerbos(binary: Path, tmp: Path) -> Callable[[int], list[str]]:
    def cmd(port: int) -> list[str]:
        http, debug = grpcload.free_port(), grpcload.free_port()
        return [
            str(binary), "server", f"--config={grpcload.PEERS / 'cerbos/config.yaml'}",
            f"--debug-listen-addr=127.0.0.1:{debug}", "--log-level=error",
            f"--set=server.grpcListenAddr=127.0.0.1:{port}",
            f"--set=server.httpListenAddr=127.0.0.1:{http}",
            f"--set=storage.disk.directory={grpcload.PEERS / 'cerbos/policies'}",
        ]  # fmt: skip

    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-cerbos", action="store_true")
    parser.add_argument(
        "--transport",
        choices=("grpcio", "native", "both"),
        default="both",
        help="pdp serve's transport(s) to start (both: each, in the same rounds)",
    )
    parser.add_argument(
        "--baseline",
        metavar="CHECKOUT",
        type=Path,
        help="also start another checkout's server (its .venv/bin/pdp on its own policies)",
    )
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pdp")], check=True)

    raw = workload.generate(1)[0]
    # The example policies decide any well-formed request; this one reaches their rules.
    example = grpcload.pdp_payload(
        {
            "principal": {"id": "alice", "tenant": "acme", "roles": ["member"]},
            "resources": [{"kind": "document", "id": "d1", "tenant": "acme", "actions": ["read"]}],
        }
    )
    peers_payload = grpcload.pdp_payload(raw)
    transports = ("grpcio", "native") if args.transport == "both" else (args.transport,)
    servers: list[tuple[str, Callable[[int], list[str]], str, bytes]] = []
    checkouts = [("pdp", ROOT, "")]
    if args.baseline:
        root = args.baseline.resolve()
        checkouts.append(("baseline", root, str(root / ".venv" / "bin" / "pdp")))
    for who, root, exe in checkouts:
        for transport in transports:
            for label, payload in (("policies/", example), ("bench/peers/pdp", peers_payload)):
                flags = ("--transport", transport)
                for workers, more in (("--workers 1", ("--workers", "1")), ("default workers", ())):
                    servers.append((
                        f"{who} {transport}, {workers}, {label}",
                        pdp(root / label, *flags, *more, exe=exe), grpcload.PDP_CHECK, payload,
                    ))  # fmt: skip
    notes = []
    tmp = Path(tempfile.mkdtemp())
    binary = None if args.no_cerbos else grpcload.cerbos_binary()
    if binary is not None:
        try:
            payload = grpcload.cerbos_payload(raw)
        except ImportError:
            notes.append("Cerbos skipped: the `cerbos` package is missing (pip install '.[bench]')")
        else:
            name = f"Cerbos {grpcload.cerbos_version(binary)}, bench/peers/cerbos"
            servers.append((name, cerbos(binary, tmp), grpcload.CERBOS_CHECK, payload))
    elif not args.no_cerbos:
        notes.append("Cerbos skipped: npm could not install @cerbos/cerbos-linux-x64")
    times: dict[str, list[float]] = {name: [] for name, *_ in servers}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in servers}
    load = os.getloadavg()[0]
    for _ in range(args.runs):
        for name, cmd, method, payload in servers:
            port = grpcload.free_port()
            took, spent = first_decision(cmd(port), port, method, payload)
            times[name].append(took)
            cpu[name].append(spent)
    print(
        f"start-up to first decision, {args.runs} rounds, {os.cpu_count()} CPUs (seconds; "
        f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after)"
    )
    print(f"{'server':<50} {'median':>7} {'min':>7} {'max':>7} {'CPU med':>8}")
    for name, values in times.items():
        med = statistics.median(values)
        spent = statistics.median(cpu[name])
        print(f"{name:<50} {med:7.3f} {min(values):7.3f} {max(values):7.3f} {spent:8.2f}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())

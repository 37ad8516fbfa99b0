"""The supervisor of `pdp serve --workers 2`: its memory, and how long a replacement worker
takes. Not a test: a benchmark.

Reproduce:  .venv/bin/python bench/supervisor.py                      (RSS and 5 kills)
            .venv/bin/python bench/supervisor.py --baseline CHECKOUT  (its .venv/bin/pdp too)
            .venv/bin/python bench/supervisor.py --policies 2000 --kills 0  (a larger set)

RSS: `pdp bundle build` packs the example policies (`policies/`) as a bundle file; `pdp serve
--bundle FILE --workers 2` serves it. Once every worker serves it the supervisor's VmRSS
(/proc/PID/status) is read; then a second version of the bundle is written, and VmRSS read
again once every worker serves that one. The supervisor compiles each bundle to verify it;
a supervisor that keeps the engine holds one policy set more than its workers.

Replacement: with every worker serving, one is killed (SIGKILL); the clock runs from the kill
to the replacement's log line saying it activated the bundle (it is a new interpreter,
`python -m pdp.cli.worker`, which imports pdp, verifies, compiles and tests the bundle).
Prints the median, min and max of `--kills` kills.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAP_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used (/proc, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Server:
    def __init__(self, exe: str, bundle: Path) -> None:
        port = free_port()
        cmd = [exe, "serve", "--bundle", str(bundle), "--workers", "2", "--poll-interval", "0.2",
               "--listen", f"127.0.0.1:{port}"]  # fmt: skip
        # Not run from a checkout: `python -m` puts the working directory first on the path,
        # and a replacement worker would import that checkout's pdp.
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=bundle.parent
        )
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append((time.perf_counter(), line))
                self._cond.notify_all()

    def wait_for(self, text: str, count: int = 1) -> tuple[float, str]:
        """The time the `count`th line containing `text` was read, and the line."""
        end = time.monotonic() + CAP_S
        with self._cond:
            while True:
                hits = [(t, line) for t, line in self.lines if text in line]
                if len(hits) >= count:
                    return hits[count - 1]
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError("".join(line for _, line in self.lines[-30:]))
                self._cond.wait(left)

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(p) for p in children.split()]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)


def policy_dir(tmp: Path, generated: int) -> Path:
    """The example policies, plus `generated` policies of bench/engine.py's distinct set."""
    if not generated:
        return ROOT / "policies"
    sys.path.insert(0, str(ROOT / "bench"))
    import shutil

    from engine import UNRELATED_DISTINCT

    out = tmp / "policies"
    shutil.copytree(ROOT / "policies", out)
    (out / "unrelated").mkdir()
    for i in range(generated):
        (out / "unrelated" / f"u{i}.yaml").write_text(UNRELATED_DISTINCT.format(i=i))
    return out


def build(exe: str, version: str, out: Path, policies: Path) -> Path:
    subprocess.run(
        [exe, "bundle", "build", str(policies), "-o", str(out), "--version", version,
         "--name", "example", "--no-strict", "--force"],
        check=True, capture_output=True, cwd=out.parent,
    )  # fmt: skip
    (built,) = out.glob(f"*{version}*")
    return built


def measure(label: str, exe: str, kills: int, generated: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    policies = policy_dir(tmp, generated)
    bundle = tmp / "serve.pdpb"
    bundle.write_bytes(build(exe, "1.0.0", tmp / "b1", policies).read_bytes())
    server = Server(exe, bundle)
    try:
        server.wait_for("all 2 workers serve example@1.0.0")
        first = rss_kib(server.proc.pid)
        new = tmp / "new.pdpb"
        new.write_bytes(build(exe, "2.0.0", tmp / "b2", policies).read_bytes())
        os.replace(new, bundle)
        server.wait_for("activated bundle example 2.0.0", count=3)  # supervisor, 2 workers
        time.sleep(1.0)  # the poll that judged it has returned
        second = rss_kib(server.proc.pid)
        workers = [rss_kib(pid) for pid in server.workers()]
        print(f"{label}: supervisor VmRSS {first / 1024:.1f} MiB after 1.0.0, "
              f"{second / 1024:.1f} MiB after 2.0.0; workers {[round(w / 1024, 1) for w in workers]} MiB")  # fmt: skip
        took, spent = [], []
        for i in range(kills):
            victim = server.workers()[0]
            time.sleep(6.0)  # the supervisor gives up on a worker younger than 5 s
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            # The supervisor's and two workers' activations, then one per replacement.
            done, line = server.wait_for("activated bundle example 2.0.0", count=3 + i + 1)
            took.append(done - killed)
            spent.append(cpu_seconds(int(line.split("pdp.bundle[", 1)[1].split("]", 1)[0])))
        if took:
            print(f"{label}: replacement worker, kill to every worker serving again, {kills} "
                  f"kills: median {statistics.median(took):.3f} s, min {min(took):.3f}, "
                  f"max {max(took):.3f}; its CPU by then: median {statistics.median(spent):.2f} s")  # fmt: skip
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument(
        "--policies",
        type=int,
        default=0,
        metavar="N",
        help="also serve N generated policies (bench/engine.py's distinct set; 0: none)",
    )
    parser.add_argument("--baseline", metavar="CHECKOUT", type=Path,
                        help="also run another checkout's .venv/bin/pdp")  # fmt: skip
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    runs = [("this checkout", str(Path(sys.executable).parent / "pdp"))]
    if args.baseline:
        runs.append((f"baseline {args.baseline}", str(args.baseline.resolve() / ".venv/bin/pdp")))
    for label, exe in runs:
        measure(label, exe, args.kills, args.policies)
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())

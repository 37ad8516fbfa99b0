"""`pdp serve` as a real process for the attack tests: start it, read its log, wait for events."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.client._convert import request_to_proto

CHECK = "/pdp.v1.DecisionService/Check"

# A policy whose one condition costs about 0.1 s per check here (100^3 comparisons): a batch
# of these is a call that stays in flight for as long as a test needs, on purpose.
HEAVY_POLICY = """
    apiVersion: pdp/v1
    kind: ResourcePolicy
    metadata: {id: heavy}
    spec:
      resource: report
      actions:
        read: {}
        view: {}
      rules:
        - id: slow-allow
          actions: [read, view]
          effect: allow
          roles: ["*"]
          condition: >-
            principal.attr.items.all(x, principal.attr.items.all(y,
            principal.attr.items.all(z, !principal.attr.text.matches("b$"))))
          reason: slow
"""
# About 100 ms of work per resource: 30**3 iterations, each an RE2 scan of the text. CEL
# caps one evaluation at 100,000 iterations, counting the bodies' work (a string of 250
# characters scanned costs two): 27,930 + 2 x 27,000 stays under it, so the condition holds.
HEAVY_PRINCIPAL: dict[str, Any] = {
    "id": "alice",
    "tenant": "acme",
    "roles": ["user"],
    "attr": {"items": list(range(30)), "text": "a" * 250},
}


def children(pid: int) -> list[int]:
    """The processes `pid`'s threads have started, from /proc (not `pgrep`: procps is not on a
    minimal Debian machine). A thread may end while its list is read: it has none then."""
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return sorted(pids)


def write_heavy_policies(root: Path) -> Path:
    (root / "heavy.yaml").write_text(textwrap.dedent(HEAVY_POLICY).lstrip())
    return root


def heavy_resources(n: int, tag: str, actions: tuple[str, ...] = ("read",)) -> list[dict]:
    """`n` slow resources; `tag` makes the ids (and so the cache key) unique."""
    return [
        {"kind": "report", "id": f"{tag}-{i}", "tenant": "acme", "actions": list(actions)}
        for i in range(n)
    ]


def heavy_request(n: int, tag: str) -> bytes:
    resources = heavy_resources(n, tag)
    return request_to_proto(HEAVY_PRINCIPAL, resources, None).SerializeToString()


class Served:
    """A running `pdp serve` whose stderr is collected line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> None:
        """Wait until `count` lines of the log contain `text` (fails on exit or at the cap)."""
        end = time.monotonic() + timeout
        with self._changed:
            while sum(text in line for line in self.lines) < count:
                left = end - time.monotonic()
                ended = self.lines and self.lines[-1] == ""
                assert left > 0 and not ended, f"no {count} x `{text}` in:\n{self.output()}"
                self._changed.wait(left)

    def output(self) -> str:
        return "".join(self.lines)

    def exit_code(self, timeout: float = 180) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code


@contextmanager
def pdp_serve(*args: str) -> Iterator[Served]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdp.cli.main", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its workers and writer processes go with it at teardown
    )
    try:
        yield Served(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def health(port: int, timeout: float = 2) -> int | None:
    """The health status one fresh connection reports, None when the call fails."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            return (
                health_pb2_grpc.HealthStub(ch)
                .Check(health_pb2.HealthCheckRequest(), timeout=timeout)
                .status
            )
        except grpc.RpcError:
            return None


def wait_serving(port: int, served: Served, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while health(port) != health_pb2.HealthCheckResponse.SERVING:
        assert served.proc.poll() is None, served.output()
        assert time.monotonic() < end, f"never SERVING:\n{served.output()}"
        time.sleep(0.05)

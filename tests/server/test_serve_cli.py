"""`pdp serve` as a real process: startup, SIGTERM drain with calls in flight, workers."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.client import Client, Retry
from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .conftest import ALICE, DOC, free_port


@contextmanager
def pdp_serve(*args: str, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pdp.cli.main", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def wait_serving(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < end:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    pytest.fail("server did not become SERVING")


def heavy_batch() -> list[dict]:
    # 1,000 checks with attributes: long enough that several calls are in flight at SIGTERM.
    return [
        {
            **DOC,
            "id": f"d{i}",
            "attr": {"owner": "alice", "tags": list(range(20))},
            "actions": ["read", "write"],
        }
        for i in range(500)
    ]


def test_sigterm_drains_in_flight_calls(policy_dir: Path) -> None:
    port = free_port()
    with pdp_serve("--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}") as proc:
        wait_serving(port, proc)
        batch = heavy_batch()
        # Serialised once: twelve client threads each building a 500-resource request in
        # Python could still be sending when SIGTERM lands on a busy machine, and a call that
        # never reached the server is not an in-flight call.
        data = request_to_proto(ALICE, batch, None).SerializeToString()
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as ch,
            ThreadPoolExecutor(12) as pool,
        ):
            # No retries: a call the server dropped must show up as a failure here.
            check = ch.unary_unary("/pdp.v1.DecisionService/Check")
            check(data, timeout=30, wait_for_ready=True)  # connected before the burst
            started = time.perf_counter()
            check(data, timeout=30)
            one_call = time.perf_counter() - started
            futures = [pool.submit(check, data, timeout=30) for _ in range(12)]
            time.sleep(min(one_call, 0.05))
            proc.send_signal(signal.SIGTERM)
            # A call a server thread had taken when SIGTERM landed is answered in full; one
            # the transport held but no thread had taken yet is refused, retryably, never
            # cancelled (tests/security/test_drain.py checks the decision log against this).
            answered = 0
            for f in futures:
                try:
                    assert len(pb.CheckResponse.FromString(f.result()).results) == 500
                    answered += 1
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                    assert "shutting down" in (err.details() or ""), err
            assert answered >= 1
            assert proc.wait(30) == 0
        out = proc.stdout.read() if proc.stdout else ""
        assert "received SIGTERM" in out


def test_refuses_new_calls_after_shutdown(policy_dir: Path) -> None:
    port = free_port()
    with pdp_serve("--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}") as proc:
        wait_serving(port, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    with Client(f"127.0.0.1:{port}", timeout=0.5) as c, pytest.raises(grpc.RpcError) as info:
        c.check(ALICE, [{**DOC, "actions": ["read"]}])
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def test_two_workers_serve_one_port(policy_dir: Path) -> None:
    port = free_port()
    with pdp_serve(
        "--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}", "--workers", "2"
    ) as proc:
        wait_serving(port, proc)
        for _ in range(40):
            # A new connection each time: the kernel spreads connections over the workers.
            # A worker still loading its policies answers UNAVAILABLE: the client retries.
            patient = Retry(attempts=100, max_backoff_s=0.2)
            with Client(f"127.0.0.1:{port}", timeout=20, retry=patient) as c:
                assert c.is_allowed(ALICE, DOC, "read")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        allowed = [_cpus_allowed(int(pid)) for pid in children]
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:  # one core each, different cores
            assert sorted(allowed) == [str(cpus[0]), str(cpus[1])], allowed
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        out = proc.stdout.read() if proc.stdout else ""
        pids = {
            line.split("[", 1)[1].split("]", 1)[0]
            for line in out.splitlines()
            if "listening on" in line
        }
        assert len(pids) == 2, out


def test_bad_policies_exit_1(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: pdp/v1\nkind: Nonsense\n")
    with pdp_serve("--policies", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}") as proc:
        assert proc.wait(30) == 1


def test_a_directory_with_a_validator_error_is_not_served(tmp_path: Path) -> None:
    # It compiles, but its second rule is dead behind an unconditional first one (PDP109):
    # `pdp bundle build` refuses such a set, and so does serving the directory directly.
    (tmp_path / "notes.yaml").write_text(
        "apiVersion: pdp/v1\nkind: ResourcePolicy\nmetadata: {id: notes}\nspec:\n"
        "  resource: note\n  actions:\n    read: {scopes: [r]}\n  rules:\n"
        "    - {id: anyone, actions: [read], effect: allow}\n"
        "    - {id: owner, actions: [read], effect: allow,"
        " condition: resource.attr.owner == principal.id}\n"
    )
    with pdp_serve("--policies", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}") as proc:
        assert proc.wait(30) == 1
        output = proc.stdout.read() if proc.stdout else ""
    assert "notes.yaml:10:7: error PDP109" in output, output
    assert "Traceback" not in output


def test_more_workers_than_cores_are_left_to_the_os(policy_dir: Path) -> None:
    """Two busy workers pinned to one core switch contexts more than the OS placing them."""
    port = free_port()
    cpus = sorted(os.sched_getaffinity(0))
    workers = len(cpus) + 1
    with pdp_serve(
        "--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}", "--workers", str(workers)
    ) as proc:
        wait_serving(port, proc)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == workers
        time.sleep(0.5)  # a worker that pinned itself would have done so by now
        assert [os.sched_getaffinity(int(pid)) for pid in children] == [set(cpus)] * workers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_workers_stop_when_the_supervisor_is_killed(policy_dir: Path) -> None:
    port = free_port()
    with pdp_serve(
        "--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}", "--workers", "2"
    ) as proc:
        wait_serving(port, proc)
        children = [
            int(pid)
            for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        assert len(children) == 2
        proc.kill()  # no chance to forward a signal
        proc.wait(10)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in children):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no `Max open files` line")


def _started_with_limit(soft: int, hard: int) -> Any:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(policy_dir: Path) -> None:
    # A soft limit of 1,024 (a common default) under --max-connections' 10,000 per listener:
    # raised to the hard limit, as Go's runtime does for Cerbos and OPA.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        hard = soft  # lower the soft limit only
    port = free_port()
    start = _started_with_limit(512, hard)
    with pdp_serve(
        "--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}", "--workers", "1",
        preexec_fn=start,
    ) as proc:  # fmt: skip
        wait_serving(port, proc)
        assert _open_files_limit(proc.pid) == (hard, hard)


def test_a_hard_limit_below_the_connection_cap_is_warned_about(policy_dir: Path) -> None:
    port = free_port()
    with pdp_serve(
        "--policies", str(policy_dir), "--listen", f"127.0.0.1:{port}", "--workers", "1",
        "--max-connections", "5000", preexec_fn=_started_with_limit(512, 512),
    ) as proc:  # fmt: skip
        wait_serving(port, proc)
        assert _open_files_limit(proc.pid) == (512, 512)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        out = proc.stdout.read() if proc.stdout else ""
    assert "the file-descriptor limit (512) is below what --max-connections allows" in out, out
    assert "(5000, plus 256" in out, out

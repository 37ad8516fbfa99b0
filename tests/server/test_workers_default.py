"""`pdp serve` runs a worker per usable CPU by default (affinity and cgroup quota), one where
several cannot share the listeners, and deals connections to its workers round-robin."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import yaml
from security.serving import CHECK, Served, children, pdp_serve, wait_serving

from pdp.cli.cpus import cgroup_quota, usable_cpus
from pdp.cli.serve import resolve_workers
from pdp.client._convert import request_to_proto
from pdp.server._gen.pdp.v1 import decision_pb2 as pb

from .conftest import ALICE, DOC, free_port, write_policies

EIGHT = set(range(8))


def fake_tree(root: Path, cgroup: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    for rel, text in files.items():
        path = root / "sys/fs/cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_no_cgroup_files_count_the_affinity(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path, EIGHT) == 8
    assert usable_cpus(tmp_path, {3}) == 1
    assert cgroup_quota(tmp_path) is None


def test_cgroup_v2_quota_rounds_up_and_caps_the_affinity(tmp_path: Path) -> None:
    root = fake_tree(
        tmp_path, "0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "150000 100000\n"}
    )
    assert cgroup_quota(root) == 1.5
    assert usable_cpus(root, EIGHT) == 2  # 1.5 CPUs: two workers, each busy 3/4 of the time
    assert usable_cpus(root, {5}) == 1  # the affinity is tighter


def test_cgroup_v2_unlimited_and_the_tightest_ancestor(tmp_path: Path) -> None:
    root = fake_tree(
        tmp_path,
        "0::/a/b\n",
        {"cpu.max": "max 100000\n", "a/cpu.max": "300000 100000\n", "a/b/cpu.max": "max 100000\n"},
    )
    assert usable_cpus(root, EIGHT) == 3
    root2 = fake_tree(tmp_path / "2", "0::/\n", {"cpu.max": "max 100000\n"})
    assert usable_cpus(root2, EIGHT) == 8


def test_cgroup_v2_namespaced_path_missing_reads_the_mount(tmp_path: Path) -> None:
    """In a container the mount is its own cgroup while /proc names the host's path."""
    root = fake_tree(tmp_path, "0::/host/path/of/container\n", {"cpu.max": "200000 100000\n"})
    assert usable_cpus(root, EIGHT) == 2


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = fake_tree(
        tmp_path,
        "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
        {
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        },
    )
    assert usable_cpus(root, EIGHT) == 3
    unlimited = fake_tree(
        tmp_path / "u",
        "1:cpu:/\n",
        {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
    )
    assert usable_cpus(unlimited, EIGHT) == 8


def test_tiny_or_garbled_quota(tmp_path: Path) -> None:
    tiny = fake_tree(tmp_path / "t", "0::/\n", {"cpu.max": "1000 100000\n"})
    assert usable_cpus(tiny, EIGHT) == 1  # at least one
    for text in ("", "max", "abc 100000", "100000 0", "-5 100000", "1 2 3"):
        garbled = fake_tree(tmp_path / str(abs(hash(text))), "0::/\n", {"cpu.max": text})
        assert usable_cpus(garbled, EIGHT) == 8, text


def _args(**kw: object) -> argparse.Namespace:
    base = {
        "workers": "auto",
        "unix": None,
        "listen": None,
        "http_listen": None,
        "prometheus": None,
    }
    return argparse.Namespace(**{**base, **kw})


def test_auto_is_one_worker_where_several_cannot_share_the_listeners() -> None:
    assert resolve_workers(_args(), cpus=4) == (4, "auto: 4 usable CPUs")
    assert resolve_workers(_args(), cpus=1)[0] == 1
    assert resolve_workers(_args(unix=["/tmp/s"]), cpus=4)[0] == 1
    assert resolve_workers(_args(listen=["127.0.0.1:0"]), cpus=4)[0] == 1
    assert resolve_workers(_args(http_listen=["127.0.0.1:0"]), cpus=4)[0] == 1
    assert resolve_workers(_args(prometheus="127.0.0.1:9464"), cpus=4)[0] == 1
    assert resolve_workers(_args(workers=3, unix=["/tmp/s"]), cpus=4) == (3, "given")


def _print_config(*argv: str, prefix: tuple[str, ...] = ()) -> dict:
    cmd = [*prefix, sys.executable, "-m", "pdp.cli.main", "serve", *argv, "--print-config"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDP_")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return {"values": yaml.safe_load(out), "text": out}


def test_print_config_shows_the_effective_count() -> None:
    got = _print_config("--policies", "policies")
    assert got["values"]["workers"] == usable_cpus()
    assert "# default, auto:" in got["text"]
    assert _print_config("--policies", "policies", "--workers", "auto")["values"]["workers"] == (
        usable_cpus()
    )
    assert _print_config("--workers", "3")["values"]["workers"] == 3
    one = _print_config("--listen", "127.0.0.1:0")
    assert one["values"]["workers"] == 1 and "port 0" in one["text"]
    scraped = _print_config("--prometheus", "127.0.0.1:9464")
    assert scraped["values"]["workers"] == 1 and "--prometheus" in scraped["text"]


def test_workers_must_be_a_count_or_auto() -> None:
    cmd = [sys.executable, "-m", "pdp.cli.main", "serve", "--workers", "many", "--print-config"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2
    assert "--workers: takes a whole number from 1 to 256, or `auto`, not `many`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # no usage block


def _decide(port: int) -> int:
    data = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None).SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = pb.CheckResponse.FromString(ch.unary_unary(CHECK)(data, timeout=30))
    return reply.results[0].actions["read"].effect


@contextmanager
def taskset_serve(cpu: int | None, *argv: str) -> Iterator[Served]:
    """`[taskset -c CPU] pdp serve ...` with the default worker count (no PDP_WORKERS, which
    tests/conftest.py sets), as a real process in its own session."""
    cmd = [sys.executable, "-m", "pdp.cli.main", "serve", *argv]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    env = {k: v for k, v in os.environ.items() if k != "PDP_WORKERS"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    try:
        yield Served(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def test_taskset_one_cpu_serves_in_one_process(tmp_path: Path) -> None:
    policies = write_policies(tmp_path)
    port = free_port()
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--otel", "off"]
    cpu = min(os.sched_getaffinity(0))
    with taskset_serve(cpu, *argv) as served:
        wait_serving(port, served)
        assert _decide(port) == pb.EFFECT_ALLOW
        assert "workers: 1 (auto: 1 usable CPU" in served.output()
        assert children(served.proc.pid) == []  # no supervisor: this process serves
        assert os.sched_getaffinity(served.proc.pid) == {cpu}


def test_default_runs_one_worker_per_usable_cpu(tmp_path: Path) -> None:
    policies = write_policies(tmp_path)
    port = free_port()
    expected = usable_cpus()
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--otel", "off"]
    with taskset_serve(None, *argv) as served:
        wait_serving(port, served)
        assert _decide(port) == pb.EFFECT_ALLOW
        assert f"workers: {expected} (auto: {expected} usable CPU" in served.output()
        workers = children(served.proc.pid)
        assert len(workers) == (expected if expected > 1 else 0)


def _has_cap_bpf() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
            return bool(caps & (1 << 39) or caps & (1 << 21))  # CAP_BPF or CAP_SYS_ADMIN
    return False


@pytest.mark.parametrize("connections", [4, 8])
def test_connections_are_dealt_round_robin(tmp_path: Path, connections: int) -> None:
    """Each connection's calls go to the worker that accepted it; with the round-robin deal
    4 (or 8) connections are 2:2 (4:4) exactly, counted per worker in its decision log."""
    (tmp_path / "policies").mkdir()
    policies = write_policies(tmp_path / "policies")
    port = free_port()
    calls = 5
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--workers", "2"]
    argv += ["--otel", "off", "--decision-log", str(tmp_path / "decisions.jsonl")]
    argv += ["--decision-cache", "0"]
    data = request_to_proto(ALICE, [{**DOC, "actions": ["read"]}], None).SerializeToString()
    with pdp_serve(*argv) as served:
        wait_serving(port, served)
        served.wait_for("connections dealt", count=2)
        if not _has_cap_bpf():
            # Unprivileged: the kernel's hash deals (docs/SERVING.md), and the log says why.
            assert "needs CAP_BPF or root" in served.output()
            return
        assert served.count("connections dealt round-robin over the 2 workers") == 2
        # A channel of its own each (grpc would otherwise share one connection between them).
        channels = [
            grpc.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(connections)
        ]
        try:
            for ch in channels:
                ch.unary_unary(CHECK)(data, timeout=30)  # connects, in order
            for ch in channels:
                for _ in range(calls - 1):
                    ch.unary_unary(CHECK)(data, timeout=30)
        finally:
            for ch in channels:
                ch.close()
        served.proc.send_signal(signal.SIGTERM)
        assert served.exit_code() == 0
    per_worker = Counter(
        path.name for path in tmp_path.glob("decisions*.jsonl") for line in path.open() if line
    )
    assert sorted(per_worker.values()) == [connections // 2 * calls] * 2, per_worker


def test_workers_that_cannot_load_their_policies_stop_the_service(tmp_path: Path) -> None:
    """A worker exiting before it activated a bundle is failing to start, however long that
    took: the supervisor exits with its code instead of restarting it forever."""
    (tmp_path / "bad.yaml").write_text("apiVersion: pdp/v1\nkind: Nonsense\n")
    argv = ["--policies", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}", "--workers", "2"]
    with pdp_serve(*argv) as served:
        assert served.exit_code() == 1
        out = served.output()
    assert "exited with 1 at start; stopping" in out
    assert "restarting it" not in out


def _held_per_process(port: int, pids: list[int]) -> list[int]:
    """Established connections to `port` that each process in `pids` holds (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    held = []
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += os.readlink(fd) in inodes
        held.append(count)
    return held


def test_each_port_is_dealt_round_robin_on_its_own(tmp_path: Path) -> None:
    """Connections to the gRPC and the HTTP port, alternating: each port's are dealt evenly
    (a counter shared by both ports would give every gRPC connection to one worker)."""
    if not _has_cap_bpf():
        pytest.fail("this test needs CAP_BPF or root (the round-robin deal)")
    policies = write_policies(tmp_path)
    grpc_port, http_port = free_port(), free_port()
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{grpc_port}", "--workers", "2"]
    argv += ["--http-listen", f"127.0.0.1:{http_port}", "--otel", "off"]
    with pdp_serve(*argv) as served:
        wait_serving(grpc_port, served)
        served.wait_for("connections dealt round-robin", count=2)
        sockets = []
        try:
            for _ in range(4):
                sockets.append(socket.create_connection(("127.0.0.1", grpc_port)))
                sockets.append(socket.create_connection(("127.0.0.1", http_port)))
            pids = children(served.proc.pid)
            assert len(pids) == 2
            deadline = time.monotonic() + 60  # a cap: accepted by the workers' pollers
            while True:
                split = _held_per_process(grpc_port, pids), _held_per_process(http_port, pids)
                if sum(split[0]) == 4 and sum(split[1]) == 4:
                    break
                assert time.monotonic() < deadline, split
                time.sleep(0.05)
            assert split == ([2, 2], [2, 2])
        finally:
            for s in sockets:
                s.close()


def test_the_supervisor_loads_a_policy_directory_once_for_its_forked_workers(
    tmp_path: Path,
) -> None:
    """The first workers are forked with the directory already loaded, validated and compiled
    by the supervisor (pdp.cli.serve._preload_policy_dir), not loading it again each: the
    validator's warning is logged once, by the supervisor, and each worker serves it."""
    policies = write_policies(tmp_path)
    document = policies / "document.yaml"
    document.write_text(document.read_text().replace("      reason: legal_hold\n", ""))
    port = free_port()
    argv = ["--policies", str(policies), "--listen", f"127.0.0.1:{port}", "--workers", "2"]
    with pdp_serve(*argv) as served:
        wait_serving(port, served)
        assert _decide(port) == pb.EFFECT_ALLOW
        served.wait_for("serving policies from", count=2)
        supervisor = served.proc.pid
        assert served.count("warning PDP204") == 1, served.output()  # the rule without a reason
        assert served.count("pdp.watch[") == served.count(f"pdp.watch[{supervisor}]") > 0
        served.proc.send_signal(signal.SIGTERM)
        assert served.exit_code() == 0

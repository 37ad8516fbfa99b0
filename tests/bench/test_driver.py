"""The multi-payload load driver (bench/driver/grpcload.c): it builds, it sends every body of
its file to a real `pdp serve` (the decision log names each request's document), it counts
errors by grpc-status, and it fails on a connection it cannot make. No timing is asserted:
the driver's figures are a benchmark's, not a test's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.decision_logs import complete_records

from . import ROOT
from .test_compare_agreement import _load_peers

_load_peers()
from peers import driver, grpcload, workload  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux, /proc")

CHECK = grpcload.PDP_CHECK


@pytest.fixture(scope="module")
def binary() -> Path:
    path = driver.build()  # make bench-driver: libnghttp2-dev from apt when missing, then gcc
    assert path.is_file() and os.access(path, os.X_OK)
    return path


@pytest.fixture(scope="module")
def requests() -> list[dict]:
    return workload.generate(120)


@pytest.fixture
def bodies(tmp_path: Path, requests: list[dict]) -> Path:
    path = tmp_path / "bodies.bin"
    assert driver.write_bodies(path, (grpcload.pdp_payload(r) for r in requests)) == 120
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pdp_serve(tmp_path: Path, *extra: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    cmd = [
        str(Path(sys.executable).parent / "pdp"),
        *("serve", "--policies", str(ROOT / "bench/peers/pdp")),
        *("--listen", f"127.0.0.1:{port}", "--workers", "1", *extra),
    ]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = workload.heavy(1)
        ready["resources"][0]["id"] = "readiness-probe"  # not one of the bodies' documents
        probe = grpcload.pdp_payload(ready)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                grpcload.call_raw(port, CHECK, probe, timeout=2)
                break
            except Exception:
                assert time.monotonic() < deadline, "pdp serve did not answer in 120 s"
                time.sleep(0.2)
        yield port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_every_body_of_the_file_reaches_the_server(
    binary: Path, bodies: Path, requests: list[dict], tmp_path: Path
) -> None:
    decision_log = tmp_path / "decisions.jsonl"
    # Rotating from body 7 through 240 calls: every body is sent exactly twice.
    with pdp_serve(tmp_path, "--decision-log", str(decision_log)) as (port, _proc):
        out = run(binary, "--port", str(port), "--path", CHECK, "--bodies", str(bodies))
        assert out.returncode == 2  # neither -n nor -D
        out = run(
            binary,
            *("--port", str(port), "--path", CHECK, "--bodies", str(bodies)),
            *("-c", "3", "-m", "4", "-n", "240", "--start", "7"),
        )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["requests"] == 240
    assert result["successes"] == 240
    assert result["errors"] == {}
    assert result["bodies"] == 120
    assert 0 < result["p50_us"] <= result["p90_us"] <= result["p99_us"]

    # The server stopped (SIGTERM drains the decision log): one record per call, and every
    # document of the file twice — the driver rotates through the bodies, it does not repeat one.
    records = [json.loads(line) for line in decision_log.read_text().splitlines()]
    # Decided calls only: a readiness probe that timed out on a loaded machine left a record
    # with an error and no decisions. The multiset below still proves each driver call decided.
    calls = [rec for rec in records if rec["rpc"] == CHECK and "decisions" in rec]
    docs = [d["id"] for rec in calls for d in rec["decisions"] if d["id"] != "readiness-probe"]
    sent = [r["resources"][0]["id"] for r in requests]
    assert sorted(docs) == sorted(sent * 2)
    principals = {rec["principal"]["id"] for rec in calls if rec["principal"]["id"] != "acme-u1"}
    assert len(principals) > 10


def test_errors_are_counted_by_grpc_status(binary: Path, bodies: Path, tmp_path: Path) -> None:
    with pdp_serve(tmp_path) as (port, _proc):
        out = run(
            binary,
            *("--port", str(port), "--path", "/pdp.v1.DecisionService/NoSuchMethod"),
            *("--bodies", str(bodies), "-c", "1", "-m", "2", "-n", "10"),
        )
    assert out.returncode == 0, out.stderr  # the run completed: errors are reported, not fatal
    result = json.loads(out.stdout)
    assert result["requests"] == 10
    assert result["successes"] == 0
    assert result["errors"] == {"12": 10}  # UNIMPLEMENTED


def test_a_connection_it_cannot_make_fails_the_run(binary: Path, bodies: Path) -> None:
    port = _free_port()  # nothing listens there any more
    out = run(binary, "--port", str(port), "--path", CHECK, "--bodies", str(bodies), "-n", "5")
    assert out.returncode == 3
    assert "cannot connect" in out.stderr
    assert out.stdout == ""
    with pytest.raises(RuntimeError, match="exited 3"):
        driver.run(port, CHECK, bodies, connections=1, streams=1, requests=5)


def test_a_file_that_is_not_grpc_frames_is_refused(binary: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x00\x00\x00\x09short")  # says 9 bytes, holds 5
    out = run(binary, "--port", "1", "--path", CHECK, "--bodies", str(bad), "-n", "1")
    assert out.returncode == 2
    assert "past the end" in out.stderr


def test_read_bodies_returns_what_was_written(tmp_path: Path) -> None:
    messages = [b"", b"a", bytes(range(256)) * 3]
    path = tmp_path / "b.bin"
    driver.write_bodies(path, messages)
    assert driver.read_bodies(path) == messages


def test_computed_hit_rate() -> None:
    # Rotating through more distinct requests than the cache holds: no call finds its entry.
    assert driver.hit_rate(50_000, 30_000, 1000, 10_000, warmup=1000) == 0.0
    # One request repeated: every call after the warm-up's first is a hit.
    assert driver.hit_rate(1, 500, 0, 10_000, warmup=100) == 1.0
    # Fewer distinct requests than the cache holds: the second pass hits.
    assert driver.hit_rate(100, 400, 0, 10_000) == 0.75
    assert driver.hit_rate(100, 400, 0, 0) == 0.0  # cache off


def test_the_cache_size_read_from_pdp_serve_help_is_the_default() -> None:
    from pdp.server.cache import DEFAULT_CACHE_ENTRIES

    assert driver.default_cache_entries() == DEFAULT_CACHE_ENTRIES


def _logged_other_than_the_probe(decision_log: Path) -> bool:
    """Whether a call of the driver's was decided. Not "a record without the probe's document":
    a probe that timed out on a loaded machine is logged with an error and no request (a stress
    run killed the server on such a record, before the driver had connected)."""
    return any(
        d["id"] != "readiness-probe"
        for record in complete_records(decision_log)
        for d in record.get("decisions", ())
    )


def test_a_server_that_dies_mid_run_fails_the_run(
    binary: Path, bodies: Path, tmp_path: Path
) -> None:
    decision_log = tmp_path / "decisions.jsonl"
    with pdp_serve(tmp_path, "--decision-log", str(decision_log)) as (port, server):
        driver_proc = subprocess.Popen(
            [
                *(str(binary), "--port", str(port), "--path", CHECK, "--bodies", str(bodies)),
                *("-c", "2", "-m", "2", "-D", "300"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            # A call of the driver's, not pdp_serve's readiness probe, which is logged too: only
            # then is the driver surely connected, so the kill loses a live connection.
            while not _logged_other_than_the_probe(decision_log):
                assert driver_proc.poll() is None, driver_proc.communicate()
                assert time.monotonic() < deadline, "no call was logged in 120 s"
                time.sleep(0.1)
            os.killpg(server.pid, signal.SIGKILL)  # the server's whole group, as a crash
            _out, err = driver_proc.communicate(timeout=120)
        finally:
            if driver_proc.poll() is None:
                driver_proc.kill()
                driver_proc.wait(10)
    assert driver_proc.returncode == 3
    assert "connection lost" in err

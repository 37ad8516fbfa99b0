"""bench/server_threads.py: threads grouped by role, and their CPU read from /proc."""

from __future__ import annotations

import subprocess
import sys

import pytest

from . import load_bench

bench = load_bench("server_threads")
Stat = bench.ThreadStat

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def test_threads_are_told_apart_by_process_name_and_owner() -> None:
    assert bench.role_of(10, 10, "python", writer=False) == "server main"
    assert bench.role_of(10, 11, "python", writer=False) == "server python"
    assert bench.role_of(10, 12, "event_engine", writer=False) == "server grpc C"
    assert bench.role_of(10, 13, "pdp-feed", writer=False) == "server feeder"
    assert bench.role_of(20, 20, "pdp-tel-writer", writer=True) == "writer main"
    assert bench.role_of(20, 21, "pdp-span-export", writer=True) == "writer span export"
    assert bench.role_of(20, 22, "python", writer=True) == "writer python"
    assert set(bench.NAMED.values()) <= {role.split(" ", 1)[1] for role in bench.ROLES}


def test_per_call_figures_are_the_differences_summed_by_role() -> None:
    before = {
        (1, 1): Stat("server main", 1.0, 10),
        (1, 2): Stat("server python", 2.0, 100),
        (1, 3): Stat("server python", 3.0, 50),
        (1, 9): Stat("server python", 5.0, 5),  # ended before `after`: not counted
    }
    after = {
        (1, 1): Stat("server main", 1.0, 10),
        (1, 2): Stat("server python", 2.5, 300),
        (1, 3): Stat("server python", 3.25, 150),
        (1, 4): Stat("server feeder", 0.05, 20),  # started in between: counted from zero
    }
    got = bench.per_role(before, after, calls=1000)
    assert got["server main"] == (0.0, 0.0)
    assert got["server python"] == pytest.approx((750.0, 0.3))
    assert got["server feeder"] == pytest.approx((50.0, 0.02))
    assert got["writer main"] == (0.0, 0.0)


def test_a_busy_named_thread_is_found_in_its_session_with_its_cpu() -> None:
    code = (
        "import threading, time\n"
        "from pdp.telemetry.thread_names import name_this_thread\n"
        "def spin():\n"
        "    name_this_thread('pdp-feed')\n"
        "    end = time.thread_time() + 0.3\n"
        "    while time.thread_time() < end: pass\n"
        "    print('spun', flush=True)\n"
        "    time.sleep(60)\n"
        "threading.Thread(target=spin, daemon=True).start()\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "spun"
        threads = bench.session_threads(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    roles = {stat.role: stat for (pid, _), stat in threads.items() if pid == proc.pid}
    assert set(roles) >= {"server main", "server feeder"}
    assert roles["server feeder"].cpu_s >= 0.2
    assert roles["server feeder"].switches >= 1
    assert bench.session_threads(proc.pid) == {}  # gone with its process

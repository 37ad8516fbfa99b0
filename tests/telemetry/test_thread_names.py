"""pdp's telemetry threads carry their names in the operating system (Linux)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from pdp.server.wire import encode_observation
from pdp.telemetry import TelemetryOptions
from pdp.telemetry.offload import FEEDER_THREAD, WRITER_PROCESS, OffloadObserver
from pdp.telemetry.thread_names import MAX_NAME_BYTES, name_this_thread

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="names threads on Linux only")


def thread_names() -> set[str]:
    return {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}


def comm(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/comm").read_text().strip()


def test_a_thread_is_named_in_the_os_and_long_names_are_cut() -> None:
    seen: list[tuple[str, str]] = []

    def named(name: str) -> None:
        before = comm(threading.get_native_id())
        name_this_thread(name)
        seen.append((before, comm(threading.get_native_id())))

    for name in ("pdp-test", "pdp-a-name-longer-than-fifteen"):
        thread = threading.Thread(target=named, args=(name,))
        thread.start()
        thread.join()
    assert seen == [
        (seen[0][0], "pdp-test"),
        (seen[1][0], "pdp-a-name-longer-than-fifteen"[:MAX_NAME_BYTES]),
    ]
    assert seen[0][0] != "pdp-test"


def test_the_feeder_thread_and_the_writer_process_carry_their_names(tmp_path: Path) -> None:
    options = TelemetryOptions(decision_log=(str(tmp_path / "d.jsonl"),), otel=False)
    observer = OffloadObserver(
        options, encode=encode_observation, child=[sys.executable, "-m", "pdp.cli.telemetry_writer"]
    )
    try:
        deadline = time.monotonic() + 10  # the feeder names itself when it starts running
        while FEEDER_THREAD not in (names := thread_names()) and time.monotonic() < deadline:
            time.sleep(0.01)
        writer = Path(f"/proc/{observer._proc.pid}/comm").read_text().strip()
    finally:
        observer.close()
    assert FEEDER_THREAD in names
    assert writer == WRITER_PROCESS

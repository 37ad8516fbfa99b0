"""A served process freezes its heap after each engine swap; the engine a later swap replaces
is freed by reference counts (a compiled policy set holds no cycles), and cycles left behind
anyway are collected once the frozen heap doubles (pdp.cli.serve._HeapSettler)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.cli._common import load_and_compile
from pdp.cli.serve import _HeapSettler
from pdp.engine import run_test_suites

from .conftest import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "policies"


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # this test process's heap is the tests', not a server's


@pytest.fixture
def passes() -> Iterator[list[int]]:
    """The generations of the collector's passes while the test runs (`gc.callbacks`)."""
    seen: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(count)
    yield seen
    gc.callbacks.remove(count)


@pytest.mark.usefixtures("unfrozen")
def test_a_later_swap_freezes_without_a_pass_over_the_heap(passes: list[int]) -> None:
    settle = _HeapSettler()
    settle(None)
    frozen = gc.get_freeze_count()
    assert frozen > 0
    settle(None)  # nothing left behind: no collection, the heap frozen again
    assert passes == []
    assert gc.get_freeze_count() >= frozen


@pytest.mark.usefixtures("unfrozen")
def test_cycles_left_frozen_are_collected_once_the_frozen_heap_doubles() -> None:
    settle = _HeapSettler()
    settle(None)
    # A swapped-out engine's objects, were they cycles: only the collector frees them.
    cycles = [_Cycle() for _ in range(gc.get_freeze_count() + 1_000)]
    gone = weakref.ref(cycles[0])
    settle(None)  # frozen with the rest
    del cycles
    gc.collect()
    assert gone() is not None  # frozen: the collector's passes skip it
    settle(None)  # the frozen heap more than doubled: unfrozen and collected
    assert gone() is None
    assert gc.get_freeze_count() > 0


def test_a_compiled_policy_set_is_freed_by_reference_counts_alone() -> None:
    """What lets a later swap skip the collection: the example policies, compiled and run
    through their test suites (every condition's first call compiles it), leave no cycle."""
    source, policy_set = load_and_compile(EXAMPLES)
    report = run_test_suites(policy_set, source.test_suites)
    assert report.failed == 0 and source.test_suites
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        del policy_set, report, source
        assert gc.collect() == 0, sorted({type(o).__name__ for o in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


_SERVE = """
import gc, os, signal, sys, threading, time
import grpc
from pdp.cli.main import main

def probe():
    with grpc.insecure_channel("127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    for _ in range(200):  # the server listens before its policies are swapped in
        if gc.get_freeze_count():
            break
        time.sleep(0.05)
    print("frozen", gc.get_freeze_count(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=probe, daemon=True).start()
sys.exit(main(["serve", "--workers", "1", "--listen", "127.0.0.1:{port}", "--policies", {dir!r}]))
"""


def test_a_served_process_freezes_its_heap_once_its_policies_are_active(
    policy_dir: Path,
) -> None:
    port = free_port()
    script = textwrap.dedent(_SERVE).format(port=port, dir=str(policy_dir))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    frozen = [line for line in done.stdout.splitlines() if line.startswith("frozen ")]
    assert frozen, done.stdout + done.stderr
    assert int(frozen[0].split()[1]) > 1000, frozen

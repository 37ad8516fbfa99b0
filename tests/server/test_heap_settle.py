"""A served process freezes its heap after each engine swap, and a later swap collects the
engine it replaced (pdp.cli.serve._HeapSettler)."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.cli.serve import _HeapSettler

from .conftest import free_port


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # this test process's heap is the tests', not a server's


@pytest.mark.usefixtures("unfrozen")
def test_a_swap_freezes_and_the_next_collects_what_it_replaced() -> None:
    settle = _HeapSettler()
    old = _Cycle()  # a swapped-out engine's objects: a cycle only the collector frees
    gone = weakref.ref(old)
    settle(None)
    assert gc.get_freeze_count() > 0
    del old
    gc.collect()
    assert gone() is not None  # frozen: the collector's passes skip it
    settle(None)
    assert gone() is None
    assert gc.get_freeze_count() > 0


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

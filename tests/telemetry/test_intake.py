"""The queue between the serving threads and the thread that drains it, and how often that
thread looks at it (the writer thread of the in-process observer, the feeder of the writer
process)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdp.telemetry import MemorySink, TelemetryObserver, intake

from .conftest import ObsFactory


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(min_value=0, max_value=10_000_000),
    st.floats(min_value=0, max_value=10, allow_nan=False),
    st.integers(min_value=1, max_value=1_000_000),
)
def test_the_drainer_sleeps_as_long_as_a_quarter_of_the_queue_takes_to_fill(
    drained: int, elapsed_s: float, capacity: int
) -> None:
    interval = intake.poll_interval(drained, elapsed_s, capacity)
    assert intake.MIN_POLL_INTERVAL_S <= interval <= intake.MAX_POLL_INTERVAL_S
    if drained == 0 or elapsed_s == 0:
        assert interval == intake.MAX_POLL_INTERVAL_S  # nothing seen: the longest sleep
        return
    rate = drained / elapsed_s
    fills = rate * interval  # observations arriving while it sleeps, at the same rate
    if intake.MIN_POLL_INTERVAL_S < interval < intake.MAX_POLL_INTERVAL_S:
        assert fills == pytest.approx(intake.POLL_FILL * capacity)
    elif interval == intake.MAX_POLL_INTERVAL_S:
        assert fills <= intake.POLL_FILL * capacity * (1 + 1e-9)
    else:  # so fast that even the shortest sleep lets more in
        assert fills >= intake.POLL_FILL * capacity * (1 - 1e-9)
    # Twice the rate never earns a longer sleep.
    assert intake.poll_interval(2 * drained, elapsed_s, capacity) <= interval


def test_a_busy_drainer_looks_rarely_but_keeps_the_queue_from_filling() -> None:
    # 8,000 calls a second into the default 10,000-call queue: 0.31 s between looks, about
    # 2,500 calls queued at most; idle, half a second.
    assert intake.poll_interval(800, 0.1, 10_000) == pytest.approx(0.3125)
    assert intake.poll_interval(0, 0.5, 10_000) == intake.MAX_POLL_INTERVAL_S
    assert intake.poll_interval(100_000, 0.1, 10_000) == intake.MIN_POLL_INTERVAL_S


class CountedStop:
    """A stop event that records each requested sleep (without sleeping) and is set after
    `looks` of them."""

    def __init__(self, looks: int) -> None:
        self.looks = looks
        self.sleeps: list[float] = []

    def is_set(self) -> bool:
        return len(self.sleeps) >= self.looks

    def wait(self, timeout: float) -> bool:
        self.sleeps.append(timeout)
        return self.is_set()


@pytest.mark.parametrize(
    ("per_look", "expected"),
    [(0, intake.MAX_POLL_INTERVAL_S), (1_000_000, intake.MIN_POLL_INTERVAL_S)],
)
def test_the_drain_loop_sleeps_by_what_it_last_drained(per_look: int, expected: float) -> None:
    queue = intake.Intake(queue_size=1000)
    stop = CountedStop(looks=3)
    drains: list[bool] = []

    def drain() -> int:
        drains.append(stop.is_set())
        return per_look

    queue._sleep_between_drains(stop, drain)  # type: ignore[arg-type]
    assert stop.sleeps == [expected] * 3
    # One drain per look, and a last one after the stop was seen.
    assert drains == [False, False, False, True]


def test_the_writer_thread_paces_its_looks_by_its_queue(
    make_obs: ObsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []

    def recorded(drained: int, elapsed_s: float, capacity: int) -> float:
        seen.append((drained, capacity))
        return intake.MIN_POLL_INTERVAL_S

    monkeypatch.setattr(intake, "poll_interval", recorded)
    sink = MemorySink()
    observer = TelemetryObserver(sinks=[sink], queue_size=321)
    observer.on_check(make_obs())
    deadline = time.monotonic() + 10
    while not sink.records:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    observer.close()
    assert (1, 321) in seen  # the call it drained, against its own queue's size

"""A give-back whose numbers are out of range gives nothing back, in every store.

A give-back returns the quota of a call that ended in an error. Its takes come from the
engine, or over the supervisor's socket from a worker; none was checked: a negative cost
*took* quota, a NaN or infinite cost filled the bucket (`min(capacity, nan)` is the
capacity), a rate of 0 made Redis's `PEXPIRE` fail, a capacity past any policy's let a
bucket hold more than its limit. Now such a give-back is refused whole (logged) and the
bucket keeps its level; the supervisor answers the worker `bad request` for it, and refuses a
take of a rate of 0 which killed the thread serving that worker.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections.abc import Iterator

import pytest

from pdp.engine.counters import Counters, CounterStoreError, MemoryCounters, Take
from pdp.limits.redis import RedisCounters
from pdp.limits.supervised import CounterServer, SupervisedCounters

SLOW = 1e-9  # units a second: no refill between the steps of a test
# Each refused were it given back to a bucket of 5 holding 4 (one unit taken).
BAD = {
    "negative cost": dict(capacity=5, rate=SLOW, cost=-3),
    "NaN cost": dict(capacity=5, rate=SLOW, cost=math.nan),
    "infinite cost": dict(capacity=5, rate=SLOW, cost=math.inf),
    "rate 0": dict(capacity=5, rate=0, cost=1),
    "negative rate": dict(capacity=5, rate=-1.0, cost=1),
    "NaN rate": dict(capacity=5, rate=math.nan, cost=1),
    "infinite capacity": dict(capacity=math.inf, rate=SLOW, cost=1),
    "capacity 0": dict(capacity=0, rate=SLOW, cost=1),
    "capacity past any policy's": dict(capacity=10**13, rate=SLOW, cost=10**13),
    "cost past the capacity": dict(capacity=5, rate=SLOW, cost=6),
    "bool cost": dict(capacity=5, rate=SLOW, cost=True),
}


@contextlib.contextmanager
def _store(name: str, request: pytest.FixtureRequest) -> Iterator[Counters]:
    if name == "memory":
        yield MemoryCounters()
    elif name == "redis":
        counters = RedisCounters.from_url(request.getfixturevalue("redis_url"))
        try:
            yield counters
        finally:
            counters.close()
    else:
        server = CounterServer()
        counters = SupervisedCounters(server.connect().detach(), timeout=30.0)
        try:
            yield counters
        finally:
            counters.close()


@pytest.mark.parametrize("store", ["memory", "redis", "supervised"])
def test_an_out_of_range_give_back_leaves_the_bucket_alone(
    store: str, request: pytest.FixtureRequest
) -> None:
    with _store(store, request) as counters:
        for what, fields in BAD.items():
            key = f"p/l:{what}-{time.monotonic_ns()}"  # a bucket of its own on a shared Redis
            assert counters.take([Take(key, 5, SLOW, 1)], 0.0).granted
            if store == "supervised":
                # The supervisor refuses it: the worker learns its give-back was not taken.
                with pytest.raises(CounterStoreError, match="bad request"):
                    counters.give_back([Take(key, **fields)], 0.0)  # type: ignore[arg-type]
            else:
                counters.give_back([Take(key, **fields)], 0.0)  # type: ignore[arg-type]
            # A take of nothing reads the level: still 4.
            level = counters.take([Take(key, 5, SLOW, 0)], 0.0).remaining[0]
            assert level == pytest.approx(4, abs=1e-3), what
            # A give-back in range still works, and a bad one beside it spoils it whole.
            good = Take(key, 5, SLOW, 1)
            with contextlib.suppress(CounterStoreError):
                counters.give_back([good, Take(key, **fields)], 0.0)  # type: ignore[arg-type]
            assert counters.take([Take(key, 5, SLOW, 0)], 0.0).remaining[0] == pytest.approx(
                4, abs=1e-3
            ), what
            counters.give_back([good], 0.0)
            level = counters.take([Take(key, 5, SLOW, 0)], 0.0).remaining[0]
            assert level == pytest.approx(5, abs=1e-3), what


def _ask(sock: socket.socket, request: list) -> list:
    sock.sendall(json.dumps(request).encode() + b"\n")
    pending = b""
    while b"\n" not in pending:
        chunk = sock.recv(65536)
        assert chunk, "the supervisor closed the channel"
        pending += chunk
    return json.loads(pending.split(b"\n", 1)[0])


def test_the_supervisor_refuses_what_its_worker_would_never_send() -> None:
    server = CounterServer()
    sock = server.connect()
    sock.settimeout(30.0)
    with sock:
        # A give-back and a take of fields no engine builds: a key that is not a string (it
        # was read as its text), numbers spelled as booleans or strings, a negative cost.
        for raw in (
            [[5, 5, 1, 1]],
            [["p/l:k", True, 1, 1]],
            [["p/l:k", 5, "1", 1]],
            [["p/l:k", 5, 1, -1]],
            [["p/l:k", 5, 1, 10**400]],  # past any float: `isfinite` raised, killing the thread
            [["p/l:k", 5, 1]],
            "p/l:k",
        ):
            for verb in (["give_back"], []):
                reply = _ask(sock, [7, raw, *verb])
                assert reply[0] == 7 and str(reply[1]).startswith("bad request"), (raw, verb)
        # A take of a rate of 0 that the bucket refuses divided by 0 for its wait and killed
        # the thread serving this worker: every take of it then timed out.
        reply = _ask(sock, [8, [["p/l:zero", 1, 0, 2]]])
        assert reply[0] == 8 and str(reply[1]).startswith("bad request")
        reply = _ask(sock, [9, [["p/l:k", 1, 1, 1]]])
        assert reply[:2] == [9, True]

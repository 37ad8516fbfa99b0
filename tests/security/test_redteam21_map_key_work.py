"""Red team (session 21): map equality compared long keys uncharged.

`==` of two maps looks each key of one up in the other: a memcmp of the key when it is found
(~14 us for two equal 64 Ki-character keys stored 4 bytes wide). The charge counted a map's
values and sizes but never its keys, so `{R.attr.a: 1} == {R.attr.b: 1}` (a map literal keyed
by request strings) took the fast path: 1,500 of them ran ~21 ms per rule, uncharged and with
no stop time read, where `R.attr.a == R.attr.b` is charged since this session. Keys now count
as values do.
"""

from __future__ import annotations

import time

import pytest

from pdp.cel import CelEnv, Deadline, compile_cel
from pdp.cel._budget import STOP_AT, Interrupted
from pdp.errors import CelEvalError

CHARGED = "100 characters built or scanned count as one"
ENV = CelEnv(names=["a", "b"])
LONG_A = "\U0001f600" * 65536
LONG_B = "".join(["\U0001f600"] * 65536)  # equal, another object: compared in full


def _chain(op: str, n: int) -> str:
    return "[" + ", ".join([f"({op})"] * n) + "].size() == 0"


@pytest.mark.parametrize("op", ["{a: 1} == {b: 1}", "{a: 1} != {b: 1}", "[{a: 1}] == [{b: 1}]"])
def test_maps_of_long_keys_compared_over_and_over_run_out_of_budget(op: str) -> None:
    with pytest.raises(CelEvalError, match=CHARGED):
        compile_cel(_chain(op, 1500), ENV)({"a": LONG_A, "b": LONG_B})


def test_one_comparison_of_maps_of_long_keys_checks_the_stop_time() -> None:
    act = {"a": LONG_A, "b": LONG_B, STOP_AT: Deadline(time.monotonic() - 1.0)}
    with pytest.raises(Interrupted):
        compile_cel("{a: 1} == {b: 1}", ENV)(act)


def test_maps_of_short_keys_are_not_charged() -> None:
    act = {"a": "k1", "b": "k1", STOP_AT: Deadline(time.monotonic() - 1.0)}
    assert compile_cel(_chain("{a: 1} == {b: 1}", 1500), ENV)(act) is False

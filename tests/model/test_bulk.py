"""`pdp.bulk.bulk()`: the GC paused for a bulk build, its survivors promoted without a scan."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pdp.bulk import bulk


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    # Another test in this process may have left its heap frozen (an in-process `pdp serve`
    # freezes at each engine swap); then `bulk()` rightly promotes nothing.
    gc.unfreeze()
    yield


class _Obj:
    ref: object = None


def _in_oldest(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


def test_survivors_go_to_the_oldest_generation_and_collection_resumes() -> None:
    assert gc.isenabled()
    with bulk():
        assert not gc.isenabled()
        kept = [_Obj() for _ in range(10)]
    assert gc.isenabled()
    # Without the promotion they would sit in the young generation, to be scanned there first.
    assert all(_in_oldest(o) for o in kept)


def test_a_garbage_cycle_made_meanwhile_is_still_collected() -> None:
    with bulk():
        a, b = _Obj(), _Obj()
        a.ref, b.ref = b, a
        gone = weakref.ref(a)
        del a, b
    assert gone() is not None  # a cycle: refcounting alone cannot free it
    gc.collect()
    assert gone() is None


def test_nested_and_caller_paused_uses_leave_the_collector_as_they_found_it() -> None:
    with bulk():
        with bulk():
            pass
        assert not gc.isenabled()  # the outer build is still running
    assert gc.isenabled()
    gc.disable()
    try:
        with bulk():
            pass
        assert not gc.isenabled()  # the caller's own pause is theirs to end
    finally:
        gc.enable()


def test_a_frozen_heap_stays_frozen_and_nothing_is_promoted() -> None:
    frozen = _Obj()
    gc.freeze()  # as `pdp serve` does once its imports are done, and at each engine swap
    try:
        with bulk():
            built = _Obj()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        assert not _in_oldest(frozen)  # not thawed
        assert not _in_oldest(built)  # and not promoted: young, as before
    finally:
        gc.unfreeze()


def test_a_build_that_raises_leaves_its_objects_to_the_young_passes() -> None:
    with pytest.raises(ValueError), bulk():
        left = _Obj()
        raise ValueError("policy errors")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert not _in_oldest(left)  # young (a young pass may have run since: not the oldest)

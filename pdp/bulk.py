"""Building a large, long-lived object graph (a policy set) without the cyclic GC's passes.

Loading 10,000 policy files, then compiling them, makes millions of objects that live as long
as the policy set (YAML nodes, policy values, generated functions) and no garbage cycles to
speak of. With the collector running, each full pass rescans everything built so far; with it
merely paused, the first allocation after it resumes starts a young collection over all of it
(~0.3 s at 10,000 policies), and two more passes over the same objects follow as they age into
the middle and then the oldest generation (~1.5 s more, on whatever runs next). None of them
frees anything.

So `bulk()` pauses the collector and, when the build succeeds, moves every tracked object
straight into the oldest generation (`gc.freeze()` then `gc.unfreeze()`: two list splices, no
scan). They are still collected as usual: a garbage cycle among them is found by the next full
collection, not lost. A build that raises (policy errors) leaves its objects young, for the
usual passes to free.

A heap someone froze on purpose is left as it is (unfreezing would thaw it): then the build's
objects stay young too. `pdp serve` freezes what it imported before its policies load
(`resume_gc`), so its load and compile still pay the young passes. Joining the frozen set
instead would keep the cycles of a set nobody swaps in (the supervisor verifies reloads and
keeps no engine) frozen for good.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic GC for a bulk build; what it built goes to the oldest generation unseen.

    Nested uses, and a caller's own `gc.disable()`, are left as they were: only the use that
    found the collector running promotes and resumes it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    built = False
    try:
        yield
        built = True
    finally:
        if was_enabled:
            if built and gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()

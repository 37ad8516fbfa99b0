"""Building a large, long-lived object graph (a policy set) without the cyclic GC's passes.

Loading 10,000 policy files, then compiling them, makes millions of objects that live as long
as the policy set (YAML nodes, policy values, ASTs turned into generated functions) and no
garbage cycles to speak of. With the collector running, each full pass rescans everything
built so far; with it merely paused, the first allocation after it resumes starts a young
collection over all of it (~0.3 s at 10,000 policies), and two more passes over the same
objects follow as they age into the middle and then the oldest generation (~1.5 s more, spent
on whatever runs next, unless it freezes the heap first as `pdp serve` does). None of them
frees anything.

So `bulk()` pauses the collector and, at the end, moves every tracked object straight into
the oldest generation (`gc.freeze()` then `gc.unfreeze()`: two list splices, no scan). They
are still collected as usual: a garbage cycle among them is found by the next full
collection, not lost.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic GC for a bulk build; its survivors go to the oldest generation unseen.

    Nested uses, and a caller's own `gc.disable()`, are left as they were: only the use that
    found the collector running promotes and resumes it. Objects someone froze on purpose stay
    frozen: then nothing is promoted (and resuming starts the young collection as before).
    `pdp serve` freezes its heap at each engine swap (`pdp.cli.serve._HeapSettler`), so only
    its first load and compile promote; a reload's objects are its next swap's to settle.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()

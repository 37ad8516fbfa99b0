"""Building a large, long-lived object graph (a policy set) without the cyclic GC's passes.

Loading 10,000 policy files, then compiling them, makes millions of objects that live as long
as the policy set (YAML nodes, policy values, generated functions) and no garbage cycles to
speak of. With the collector running, each full pass rescans everything built so far; with it
merely paused, the first allocation after it resumes starts a young collection over all of it
(~0.3 s at 10,000 policies), and two more passes over the same objects follow as they age into
the middle and then the oldest generation (~1.5 s more, on whatever runs next). None of them
frees anything.

So `bulk()` pauses the collector and, when the build succeeds, moves every tracked object out
of the young generations without a scan: into the oldest generation (`gc.freeze()` then
`gc.unfreeze()`: two list splices), where a garbage cycle among them is still found by the
next full collection; or, when the heap is frozen already (`pdp serve` freezes what it
imported before its policies load, and its heap at each engine swap), into the frozen set with
the rest, for whoever froze it to thaw (serve's next swap unfreezes and collects). A build
that raises (policy errors) leaves its objects young, for the usual passes to free.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic GC for a bulk build; what it built leaves the young generations unseen.

    Nested uses, and a caller's own `gc.disable()`, are left as they were: only the use that
    found the collector running settles the build and resumes it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    built = False
    try:
        yield
        built = True
    finally:
        if was_enabled:
            if built:
                _settle()
            gc.enable()


def _settle() -> None:
    if gc.get_freeze_count():
        gc.freeze()  # join the frozen heap; unfreezing here would thaw what someone froze
    else:
        gc.freeze()
        gc.unfreeze()  # into the oldest generation

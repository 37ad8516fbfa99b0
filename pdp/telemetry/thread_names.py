"""Names for pdp's own threads in the operating system, not only in Python.

`top -H`, `ps -L` and /proc show a thread's kernel name, and Python 3.11's `threading` sets only
its own: every Python thread shows as `python`, the RPC pool and the telemetry threads alike.
Naming the telemetry threads lets an operator (and `bench/server_threads.py`) see what each
costs. Linux only (`prctl(PR_SET_NAME)`); elsewhere, or if libc will not say, nothing happens.
"""

from __future__ import annotations

import ctypes
import sys

_PR_SET_NAME = 15
# The kernel keeps 15 bytes of a name (16 with its terminating zero).
MAX_NAME_BYTES = 15


def name_this_thread(name: str) -> None:
    """Give the calling thread `name` (cut to 15 bytes) in the operating system."""
    if sys.platform != "linux":
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:MAX_NAME_BYTES]), 0, 0, 0)

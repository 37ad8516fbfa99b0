"""Log lines an anonymous caller can trigger, at most one per cause per interval.

A bad token or path costs the caller one request and must not cost the operator one log line
(and certainly not a traceback) each: the first occurrence of a cause is logged, later ones
within `interval` seconds are counted, and the next line says how many were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

MAX_CAUSES = 256  # causes are reason codes; the cap only guards against a caller-made key


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, cause: str) -> int | None:
        """None when `cause` was let through within the interval (this one is counted), else
        how many of it were suppressed since the last one let through."""
        now = self.clock()
        with self._lock:
            if cause not in self._last and len(self._last) >= MAX_CAUSES:
                cause = "other"
            last = self._last.get(cause)
            if last is not None and now - last < self.interval:
                self._suppressed[cause] = self._suppressed.get(cause, 0) + 1
                return None
            self._last[cause] = now
            return self._suppressed.pop(cause, 0)

    def suppressed_note(self, suppressed: int) -> str:
        """What a line let through adds about the ones suppressed before it."""
        if not suppressed:
            return ""
        return f" ({suppressed} more like it suppressed in the last {self.interval:g} s)"

    def log(self, level: int, cause: str, message: str, *, exc_info: bool = False) -> bool:
        """Log `message` unless `cause` was logged within the interval; True when logged."""
        suppressed = self.admit(cause)
        if suppressed is None:
            return False
        message += self.suppressed_note(suppressed)
        self.logger.log(level, "%s", message, exc_info=exc_info)
        return True


def printable(text: str, limit: int = 200) -> str:
    """Caller-influenced text made safe for one log line (no CR/LF or other controls)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[:limit] + "…"

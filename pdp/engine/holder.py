"""The atomic reference to the active engine.

A new policy set is compiled and indexed aside, then swapped in by rebinding one attribute
(atomic under the GIL). A caller reads `holder.current` once per request and decides wholly
under that engine, so a decision never mixes two bundles.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pdp.errors import NoPoliciesError

if TYPE_CHECKING:
    from pdp.engine.counters import Counters
    from pdp.engine.engine import Engine


@dataclass(frozen=True, slots=True)
class Activation:
    """Status of the holder, reported by the server-info RPC and health."""

    activated_at: float | None  # unix time of the last successful swap
    last_attempt_at: float | None
    last_error: str
    # A state that is no failure, set by `note` (a cached bundle serving while its source has
    # not answered yet): shown by `/readyz` too, which shows no refusal reasons.
    note: str = ""


class EngineHolder:
    """`counters`, when given, is the rate-limit store every engine swapped in decides with,
    so quotas carry over from one bundle to the next."""

    def __init__(self, engine: Engine | None = None, counters: Counters | None = None) -> None:
        self.counters = counters
        if engine is not None and counters is not None:
            engine.counters = counters
        self._engine = engine
        self._lock = threading.Lock()  # serialises writers only; readers never take it
        self._activated_at = time.time() if engine is not None else None
        self._last_attempt_at: float | None = self._activated_at
        self._last_error = ""
        self._note = ""
        self._listeners: list[Callable[[Engine], None]] = []

    @property
    def current(self) -> Engine | None:
        return self._engine

    def require(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise NoPoliciesError("no policies are active yet")
        return engine

    def swap(self, engine: Engine) -> None:
        if self.counters is not None:
            engine.counters = self.counters  # before it is published
        with self._lock:
            self._engine = engine
            now = time.time()
            self._activated_at = now
            self._last_attempt_at = now
            self._last_error = ""
            self._note = ""
            listeners = list(self._listeners)
        for listener in listeners:
            listener(engine)

    def record_failure(self, error: str) -> None:
        """A candidate was refused; the active engine (if any) keeps serving."""
        # A refusal may quote the refused bundle (a key id, a file name): text that is no
        # Unicode (`\ud800`) is kept escaped, or every ServerInfo answer would fail to encode.
        error = error.encode("utf-8", "backslashreplace").decode("utf-8")
        with self._lock:
            self._last_attempt_at = time.time()
            self._last_error = error

    def note(self, message: str) -> None:
        """Report `message` as `last_error` without counting a failed attempt ("" clears it):
        a state the status must tell, such as a cached bundle serving while its source has not
        answered yet. `record_failure` is what refusals and unreachable sources use. The note
        stays (`status.note`) until the next swap or note, whatever failures follow."""
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        with self._lock:
            self._last_error = message
            self._note = message

    def mirror(self, status: Activation) -> None:
        """Take `status`'s attempt, error and note as this holder's own (a worker of
        `pdp serve --workers N` showing its supervisor's view of the bundle source); the
        activation time stays this holder's."""
        with self._lock:
            self._last_attempt_at = status.last_attempt_at
            self._last_error = status.last_error
            self._note = status.note

    def on_swap(self, listener: Callable[[Engine], None]) -> None:
        """Call `listener(engine)` after every swap (health status, metrics, caches)."""
        with self._lock:
            self._listeners.append(listener)

    @property
    def status(self) -> Activation:
        return Activation(self._activated_at, self._last_attempt_at, self._last_error, self._note)

"""Where decision-log records go: a `Sink` protocol and its implementations.

Sinks are called only from the decision-log writer thread, one batch at a time, so they need
no locking of their own against each other; `MemorySink` locks anyway because tests read it
from another thread.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from pdp.telemetry.config import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES

try:
    import orjson as _orjson
except ImportError:  # optional: the standard library does the same, slower
    _orjson = None  # type: ignore[assignment]

Record = dict[str, Any]


class Sink(Protocol):
    def write(self, records: Sequence[Record]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def to_json_line(record: Record) -> str:
    return to_json_bytes(record).decode()


def to_json_bytes(record: Record) -> bytes:
    """One JSON line, UTF-8. orjson when installed: serialising is the writer's largest cost
    on big batch records, and orjson does it several times faster than the standard library.
    `default=str` keeps one odd value (say, a datetime in an obligation) from losing the record.
    """
    if _orjson is not None:
        return _orjson.dumps(record, default=str, option=_orjson.OPT_APPEND_NEWLINE)
    return (
        json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
    ).encode()


class MemorySink:
    """Keeps records in a list; for tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self.closed = False

    def write(self, records: Sequence[Record]) -> None:
        # Round-trip through JSON so tests see exactly what a file sink would have written.
        lines = [json.loads(to_json_line(r)) for r in records]
        with self._lock:
            self._records.extend(lines)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    @property
    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)


class StreamSink:
    """JSON lines on a text stream (stdout by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def write(self, records: Sequence[Record]) -> None:
        self._stream.write("".join(to_json_line(r) for r in records))

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()  # never close stdout: the process may still print to it


class RotatingFileSink:
    """JSON lines appended to a file, rotated by size: `path` → `path.1` → ... → `path.N`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if backups < 0:
            raise ValueError("backups must not be negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")
        self._size = self._file.tell()

    def write(self, records: Sequence[Record]) -> None:
        lines = [to_json_bytes(record) for record in records]
        total = sum(map(len, lines))
        if self._size + total <= self.max_bytes:
            # The common case: the whole batch fits, one large write instead of one per record.
            self._file.write(b"".join(lines))
            self._size += total
            return
        for data in lines:
            # A record is never split across files; an oversized record gets a file of its own.
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                src = self._backup(i)
                if src.exists():
                    os.replace(src, self._backup(i + 1))
            os.replace(self.path, self._backup(1))
        self._file = self.path.open("ab")
        self._size = 0

    def _backup(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())  # a graceful shutdown must not lose the tail
            self._file.close()

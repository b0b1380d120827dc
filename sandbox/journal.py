"""What the sandbox providers did, kept in an append-only JSON-lines file and replayed when the sandbox starts.

One line per provider call that changed something (its remembered answer and the ledger changes it made), written
and flushed before the call is answered: a restart of the process, even a kill -9, loses nothing (the lines are in
the operating system's cache); a crash of the machine may lose the last ones. Concurrent calls may write their
lines in another order than they took their ids; replaying does not depend on it. One process writes a journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from sandbox.problems import JSON

FILE_NAME = "sandbox-ledgers.jsonl"
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)  # records are plain trees


class JournalInUse(RuntimeError):
    """Another process holds the journal: two sandboxes must not share a data folder."""


class Journal:
    """The journal in `folder`, or none (everything stays in memory) when `folder` is None."""

    def __init__(self, folder: str | os.PathLike[str] | None) -> None:
        """Open (or create) the journal and lock it for this process."""
        self.path = Path(folder) / FILE_NAME if folder is not None else None
        self.generation = 0  # counts clear() calls: a record read before one belongs to forgotten ledgers
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a+b")
            _lock(self._file, self.path)

    def records(self) -> Iterator[JSON]:
        """Every record written so far, oldest first; read them all before appending.

        A last line without its newline was torn by a crash while it was written: it is cut off, not replayed.
        """
        if self._file is None:
            return
        self._file.seek(0)
        offset = 0
        for line in self._file:
            if not line.endswith(b"\n"):
                self._file.truncate(offset)
                return
            offset += len(line)
            yield json.loads(line)

    def append(self, record: JSON, generation: int) -> None:
        """Write one record as one line and hand it to the operating system, unless the journal was cleared since
        `generation` was read."""
        line = _ENCODER.encode(record).encode() + b"\n"
        with self._lock:
            if self._file is not None and generation == self.generation:
                self._file.write(line)  # appends go to the end, wherever records() left the position
                self._file.flush()

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self.generation += 1
            if self._file is not None:
                self._file.truncate(0)

    def close(self) -> None:
        """Close the file, which lets another process (or another Journal) open it."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _lock(file: IO[bytes], path: Path) -> None:
    """Hold an exclusive lock on the journal for as long as this process keeps it open."""
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalInUse(f"{path} is in use by another sandbox process; give each sandbox its own data folder") \
            from None


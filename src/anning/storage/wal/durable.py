"""The durable mark of a data directory's write log: the sequence through which every event is
on disk (fsynced), for the change feed's readers.

The feed must never hand out an event that a power loss could still take away: its sequence
would then be given to another event, and upstream, which merged the first, would skip the
second. A writer learns what is durable when its fsync returns; readers in other processes do
not. So after each fsync a writer writes the last sequence it made durable here (8 bytes,
little-endian, at offset 0; no fsync of its own: after a power loss a restart's recovery writes
it again). Any value written is true when written (an fsync covers every byte written to the
file before it, whoever wrote them), so a value lower than another process's only holds the
feed back until the next write. No file (a data directory of an earlier version, or no writer
yet): nothing is held back.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

__all__ = ["DURABLE_NAME", "DurableMark", "read_durable"]

DURABLE_NAME = "events.durable"
_MARK = struct.Struct("<Q")
log = logging.getLogger("anning.storage")


class DurableMark:
    """A writer's handle on the mark (opened on first use)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / DURABLE_NAME
        self._fd: int | None = None
        self._failed = False

    def set(self, sequence: int) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.pwrite(self._fd, _MARK.pack(sequence), 0)
        except OSError as exc:  # the feed waits; the writes themselves are not affected
            if not self._failed:
                log.warning("%s: the durable mark cannot be written (%s): the change feed "
                            "holds back until it can", self.path, exc)
            self._failed = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_durable(directory: Path) -> int | None:
    """The sequence through which every event of the log is durable; None: no mark."""
    try:
        with open(directory / DURABLE_NAME, "rb") as f:
            data = f.read(_MARK.size)
    except FileNotFoundError:
        return None
    if len(data) != _MARK.size:
        return 0  # being written for the first time: nothing is known durable yet
    value: int = _MARK.unpack(data)[0]
    return value

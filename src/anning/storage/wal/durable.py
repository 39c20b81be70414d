"""The durable mark of a data directory's write log: the sequence through which every event is
on disk (fsynced), for the change feed's readers.

The feed must never hand out an event that a power loss could still take away: its sequence
would then be given to another event, and upstream, which merged the first, would skip the
second. A writer learns what is durable when its fsync returns; readers in other processes do
not. So after each fsync a writer writes the last sequence it made durable here (8 bytes,
little-endian, at offset 0; no fsync of its own: after a power loss a restart's recovery writes
it again). Any value written is true when written (an fsync covers every byte written to the
file before it, whoever wrote them). The mark only rises: two workers finish their fsyncs in
either order, and the one with the lower sequence must not write over the higher one (the feed
would then stop short of events already durable until some later write, forever if none
came; seen in CI). So the writer takes the file's flock, and writes only a higher value. No
file (a data directory of an earlier version, or no writer yet): nothing is held back.
"""

from __future__ import annotations

import fcntl
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
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                current = os.pread(self._fd, _MARK.size, 0)
                if len(current) < _MARK.size or _MARK.unpack(current)[0] < sequence:
                    os.pwrite(self._fd, _MARK.pack(sequence), 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
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

"""The write log (SPEC §6): every real-time event, durable before it is acknowledged.

Append-only segment files `events-NNNNNN.log` in the data directory, shared by every worker
process: a writer (anning.storage.wal.writer: group commit, rotation, retirement) and a reader
(anning.storage.wal.reader: the tail, leaving out this process's own writes), over the records
of anning.storage.records. Recovery at start-up is anning.storage.recovery's.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from anning.model.events import Event, EventColumns
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import LEGACY_LOG_NAME, segment_name
from anning.storage.wal.reader import LogReader
from anning.storage.wal.segments import OwnWrites, list_segments, newest_started
from anning.storage.wal.writer import LogWriter

__all__ = ["EventLog", "LogPosition"]


@dataclass(frozen=True)
class LogPosition:
    """Where a log object stands: what it has written and synced, read, and whether writes
    are stopped (carried across a fork)."""

    writing: int
    synced: int
    known_end: int
    next_sequence: int  # the writer's: of the next event after known_end
    reading: int
    read: int
    next_to_read: int
    behind: bool
    failure: str | None


class EventLog:
    """Append to and tail the segments of one data directory; safe across threads and
    processes. `io` is the file layer (plain OS calls unless a test gives another); `at`
    resumes a position (a forked worker's own descriptors on the same log)."""

    def __init__(self, directory: str | PathLike[str], io: FileIO = OS_IO,
                 at: LogPosition | None = None) -> None:
        self.directory = Path(directory)
        self.io = io
        self.own = OwnWrites()
        if at is None:
            self._adopt_legacy()
            numbers = list_segments(io, self.directory)
            newest = newest_started(io, self.directory)
            writing = newest if newest is not None else 1
            at = LogPosition(writing, 0, -1, 0, numbers[0] if numbers else writing, 0, 0,
                             False, None)
            self.writer = LogWriter(self.directory, io, self.own, at.writing)
            if not numbers:  # a new log: its first segment says where the sequences start
                segment = self.writer.segment
                self.writer.locked(segment, lambda: self.writer.start_segment(segment, 1))
                io.fsync_dir(self.directory)
        else:
            self.writer = LogWriter(self.directory, io, self.own, at.writing, at.synced,
                                    at.failure)
            self.writer.segment.known_end = at.known_end
            self.writer.segment.next_sequence = at.next_sequence
        self.reader = LogReader(self.directory, io, self.own, at.reading, at.read,
                                at.next_to_read, at.behind)

    def _adopt_legacy(self) -> None:
        legacy = self.directory / LEGACY_LOG_NAME
        if self.io.exists(legacy) and not list_segments(self.io, self.directory):
            self.io.rename(legacy, self.directory / segment_name(1))
            self.io.fsync_dir(self.directory)

    def position(self) -> LogPosition:
        writer, reader = self.writer, self.reader
        return LogPosition(writer.segment.number, writer.segment.synced,
                           writer.segment.known_end, writer.segment.next_sequence,
                           reader.segment.number, reader.offset, reader.next_sequence,
                           reader.behind, writer.failure)

    def reopen(self) -> EventLog:
        """The same log through new descriptors, its position kept (for a forked worker: an
        O_APPEND file position shared with other processes would garble sequences, and a
        flock shared through an inherited descriptor would not exclude the parent)."""
        return EventLog(self.directory, self.io, self.position())

    # -- the writer's and the reader's ---------------------------------------------------------
    @property
    def failure(self) -> str | None:
        return self.writer.failure

    @property
    def behind(self) -> bool:
        return self.reader.behind

    def append(self, framed: list[bytes], counts: list[int]) -> list[int]:
        return self.writer.append(framed, counts)

    def tail(self) -> list[Event]:
        return self.reader.tail()

    def rotate(self) -> int:
        return self.writer.rotate()

    def retire(self, upto: int) -> int:
        return self.writer.retire(upto)

    def size(self) -> int:
        return self.writer.size()

    def lag(self) -> int:
        return self.reader.lag(self.writer.segment)

    def segments(self) -> list[int]:
        return list_segments(self.io, self.directory)

    def records(self, first: int, last: int, next_sequence: int) -> EventColumns:
        return self.reader.records(first, last, next_sequence)

    def close(self) -> None:
        del self.writer, self.reader

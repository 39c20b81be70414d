"""The write log's reader: what every process appended since it last looked, in order.

A reader tails the segments from where it stopped, taking only whole records whose checksum
holds (so every check that starts after an acknowledgement sees it, in every process), and
leaves out this process's own writes (their events were taken before they were written). A
seal sends it on to the next segment; a next segment that a checkpoint has retired already
leaves it `behind`: the checkpoint holds what it missed.
"""

from __future__ import annotations

import threading
from pathlib import Path

from anning.model.events import Event, EventColumns
from anning.storage.fileio import FileIO
from anning.storage.layout import segment_name
from anning.storage.wal.segments import OwnWrites, Segment, scan

__all__ = ["LogReader"]


class LogReader:
    """Tails the segments of one directory from a position."""

    def __init__(self, directory: Path, io: FileIO, own: OwnWrites, segment: int,
                 offset: int = 0, next_sequence: int = 0, behind: bool = False) -> None:
        self.directory = directory
        self.io = io
        self.own = own
        self.lock = threading.Lock()
        self.segment = Segment(io, directory, segment)
        self.offset = offset
        self.next_sequence = next_sequence  # of the next event to read (0: not known yet)
        self.behind = behind  # the reader met a segment a checkpoint has retired already

    def move_to(self, segment: Segment, offset: int, next_sequence: int) -> None:
        """Go on from `offset` of `segment` (after a recovery read it all)."""
        self.segment, self.offset, self.behind = segment, offset, False
        self.next_sequence = next_sequence

    def tail(self) -> list[Event]:
        """The events appended since the last call (by any other process, or by this one
        outside its own writes), in order, with their sequences."""
        return self.tail_columns().events()

    def tail_columns(self) -> EventColumns:
        """`tail`, as columns (no object per event: a feed that follows a busy log)."""
        reader = self.segment  # held: a recovery may replace (and close) it meanwhile
        if self.io.size(reader.fd) <= self.offset and reader is self.segment:
            return EventColumns.empty()
        with self.lock:
            parts: list[EventColumns] = []
            while True:
                found = scan(self.io, self.segment, self.offset, final=False,
                             next_sequence=self.next_sequence, own=self.own)
                parts.append(found.events)
                self.offset = found.end
                self.next_sequence = found.next_sequence or self.next_sequence
                if found.following is None:
                    return EventColumns.concat(parts)
                newer = Segment(self.io, self.directory, found.following, create=False)
                if newer.fd < 0:  # folded into a checkpoint: the engine must take that first
                    self.behind = True
                    return EventColumns.concat(parts)
                self.segment, self.offset = newer, 0

    def records(self, first: int, last: int, next_sequence: int) -> EventColumns:
        """The events of segments first..last as on disk (for a checkpoint's fold), with
        their sequences (`next_sequence`: the first's, for segments of an earlier version
        that do not say)."""
        parts: list[EventColumns] = []
        for number in range(first, last + 1):
            path = self.directory / segment_name(number)
            if not self.io.exists(path):
                continue
            found = scan(self.io, Segment(self.io, self.directory, number), 0, final=True,
                         next_sequence=next_sequence)
            parts.append(found.events)
            next_sequence = found.next_sequence or next_sequence
        return EventColumns.concat(parts)

    def lag(self, writing: Segment) -> int:
        """Bytes appended (by any process) that this reader has not taken in yet."""
        reader = self.segment
        lag = max(0, self.io.size(reader.fd) - self.offset)
        if writing.number > reader.number:
            lag += self.io.size(writing.fd)
        return lag

"""Recovery of the write log at start-up: read every record after the checkpoint, repair.

Run by the process that owns the data directory before it serves (a server's parent, before it
forks its workers; a tool's only process). A torn last record (a crash mid-write) is dropped
with a warning and cut off; a bad record before the end raises CorruptLog naming the file and
the offset, and start-up stops. A rotation whose process died before it sealed the old segment
is sealed now, so readers of it do not wait for records that never come. The newest segment is
left with its header record (a new log's first, or after a log of an earlier version, a fresh
segment), so that every write from now on is stamped with its sequence.
"""

from __future__ import annotations

import logging

from anning.errors import DiskFull, WritesStopped
from anning.model.events import EventColumns
from anning.storage import records
from anning.storage.wal.log import EventLog
from anning.storage.wal.segments import Segment, list_segments, scan

__all__ = ["replay"]

log = logging.getLogger("anning.storage.recovery")


def replay(wal: EventLog, after: int = 0, next_sequence: int = 1) -> EventColumns:
    """Every event of the segments after `after` (those a checkpoint does not hold), in order,
    with their sequences (`next_sequence`: the one the first event after the checkpoint has);
    the log's reader goes on from their end."""
    writer, reader, io = wal.writer, wal.reader, wal.io
    # the write lock too: the flock keeps other processes' writers out, not our threads
    with reader.lock, writer.lock:
        out: list[EventColumns] = []
        numbers = [n for n in list_segments(io, wal.directory) if n > after] or \
            [writer.segment.number]
        segment, end = writer.segment, 0
        headed = False
        first_of_newest = next_sequence
        for number in numbers:
            segment = writer.segment if number == writer.segment.number else \
                Segment(io, wal.directory, number, create=False)
            if segment.fd < 0:  # retired meanwhile by another process's checkpoint
                continue
            first_of_newest = next_sequence
            # under the lock: a live writer of another process is never cut off mid-record
            end, next_sequence, headed = writer.locked(
                segment, lambda s=segment, n=next_sequence: _read_whole(wal, s, n, out))
        if not headed:  # an empty new log, or one of an earlier version: a fresh segment
            segment, end = _fresh_segment(wal, segment, end, next_sequence)
        reader.move_to(segment, end, next_sequence)
        wal.own.clear()  # the writes marked so far are all behind the reader now
        # what a killed writer left unsynced is durable from here on: the feed may hand it out
        if segment.fd >= 0:
            io.fsync(segment.fd)
        writer.durable.set(next_sequence - 1)
        _seal_older(wal, numbers[-1], first_of_newest)
        return EventColumns.concat(out)


def _read_whole(wal: EventLog, segment: Segment, next_sequence: int,
                out: list[EventColumns]) -> tuple[int, int, bool]:
    """A segment's events; returns where they end, the sequence after them, and whether the
    segment has its header record."""
    found = scan(wal.io, segment, 0, final=True, next_sequence=next_sequence)
    out.append(found.events)
    size = wal.io.size(segment.fd)
    if found.end < size:
        log.warning("%s: dropping a torn last record at offset %d (%d bytes)",
                    segment.path, found.end, size - found.end)
        wal.io.truncate(segment.fd, found.end)
        wal.io.fsync(segment.fd)
    headed = found.end > 0 and _starts_with_header(wal, segment)
    segment.known_end, segment.next_sequence = found.end, found.next_sequence or next_sequence
    return found.end, segment.next_sequence, headed


def _starts_with_header(wal: EventLog, segment: Segment) -> bool:
    # the first record's payload starts 0x92 (an array of 2), 0x04 (version 4: a header)
    return wal.io.pread(segment.fd, 2, records.FRAME.size) == b"\x92\x04"


def _fresh_segment(wal: EventLog, segment: Segment, end: int,
                   next_sequence: int) -> tuple[Segment, int]:
    """The newest segment has no header: give it one when it is empty, else seal it (a log of
    an earlier version) and start the next with one."""
    writer = wal.writer
    if end == 0:
        writer.locked(segment, lambda: writer.start_segment(segment, next_sequence))
        return segment, wal.io.size(segment.fd)
    newer = Segment(wal.io, wal.directory, segment.number + 1)
    writer.locked(newer, lambda: writer.start_segment(newer, next_sequence))
    wal.io.fsync_dir(wal.directory)
    writer.locked(segment, lambda: writer.put(segment, records.encode_seal(newer.number,
                                                                           next_sequence)))
    writer.segment = newer
    return newer, wal.io.size(newer.fd)


def _seal_older(wal: EventLog, newest: int, first_of_newest: int) -> None:
    """Seal the segment before the newest: a rotation whose process died before writing the
    seal would leave readers of it waiting for records that never come."""
    older = Segment(wal.io, wal.directory, newest - 1, create=False)
    if older.fd < 0:
        return
    try:
        wal.writer.locked(older, lambda: wal.writer.put(
            older, records.encode_seal(newest, first_of_newest)))
    except (DiskFull, WritesStopped) as exc:
        log.warning("%s: could not seal it: %s", older.path, exc)

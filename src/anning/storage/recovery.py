"""Recovery of the write log at start-up: read every record after the checkpoint, repair.

Run by the process that owns the data directory before it serves (a server's parent, before it
forks its workers; a tool's only process). A torn last record (a crash mid-write) is dropped
with a warning and cut off; a bad record before the end raises CorruptLog naming the file and
the offset, and start-up stops. A rotation whose process died before it sealed the old segment
is sealed now, so readers of it do not wait for records that never come.
"""

from __future__ import annotations

import logging

from anning.errors import DiskFull, WritesStopped
from anning.storage import records
from anning.storage.wal.log import EventLog
from anning.storage.wal.segments import Segment, list_segments, scan

__all__ = ["replay"]

log = logging.getLogger("anning.storage.recovery")


def replay(wal: EventLog, after: int = 0) -> list[records.EventFields]:
    """Every event of the segments after `after` (those a checkpoint does not hold), in order;
    the log's reader goes on from their end."""
    writer, reader, io = wal.writer, wal.reader, wal.io
    # the write lock too: the flock keeps other processes' writers out, not our threads
    with reader.lock, writer.lock:
        out: list[records.EventFields] = []
        numbers = [n for n in list_segments(io, wal.directory) if n > after] or \
            [writer.segment.number]
        segment, end = writer.segment, writer.segment.synced
        for number in numbers:
            segment = writer.segment if number == writer.segment.number else \
                Segment(io, wal.directory, number, create=False)
            if segment.fd < 0:  # retired meanwhile by another process's checkpoint
                continue
            # under the lock: a live writer of another process is never cut off mid-record
            end = writer.locked(segment, lambda s=segment: _read_whole(wal, s, out))
        reader.move_to(segment, end)
        wal.own.clear()  # the writes marked so far are all behind the reader now
        _seal_older(wal, numbers[-1])
        return out


def _read_whole(wal: EventLog, segment: Segment, out: list[records.EventFields]) -> int:
    found = scan(wal.io, segment, 0, final=True)
    out.extend(found.events)
    size = wal.io.size(segment.fd)
    if found.end < size:
        log.warning("%s: dropping a torn last record at offset %d (%d bytes)",
                    segment.path, found.end, size - found.end)
        wal.io.truncate(segment.fd, found.end)
        wal.io.fsync(segment.fd)
    return found.end


def _seal_older(wal: EventLog, newest: int) -> None:
    """Seal the segment before the newest: a rotation whose process died before writing the
    seal would leave readers of it waiting for records that never come."""
    older = Segment(wal.io, wal.directory, newest - 1, create=False)
    if older.fd < 0:
        return
    try:
        wal.writer.locked(older, lambda: wal.writer.put(older, records.encode_seal(newest)))
    except (DiskFull, WritesStopped) as exc:
        log.warning("%s: could not seal it: %s", older.path, exc)

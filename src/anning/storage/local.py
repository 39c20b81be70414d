"""The events of one data directory: its write log and its checkpoint, as an EventSource.

A write is one record of the write log (anning.storage.wal), durable before it is acknowledged,
its events stamped with the directory's next sequences; every worker process tails the log for
the others' records. Once the log holds enough, a checkpoint folds its sealed segments into
`events.ckpt` - every event past the watermark of the snapshot on disk, as taken - and retires
them. A process whose reader meets a retired segment catches up from the checkpoint.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anning.errors import AnningError
from anning.model.events import Event, EventColumns
from anning.storage import records
from anning.storage.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir
from anning.storage.recovery import replay
from anning.storage.source import CheckpointReport, SourceCondition, Update
from anning.storage.wal import EventLog, LogPosition
from anning.storage.wal.durable import read_durable
from anning.storage.wal.reader import LogReader
from anning.storage.wal.segments import OwnWrites, Segment, list_segments, scan

__all__ = ["LocalEventLog", "LocalFeed", "file_identity", "read_events", "read_events_through"]

log = logging.getLogger("anning.storage")
FileIdentity = tuple[int, int, int]


def file_identity(path: Path) -> FileIdentity | None:
    """Which file stands at `path` now (inode, mtime, size), or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_events(data: DataDir, after: int = 0, io: FileIO = OS_IO) -> EventColumns:
    """Every event on disk with a sequence past `after` (the checkpoint's and the log's), in
    sequence order, reading whole records only: safe beside running servers and writers."""
    return _read_positioned(data, after, io)[0]


def read_events_through(data: DataDir, after: int = 0,
                        io: FileIO = OS_IO) -> tuple[EventColumns, int]:
    """`read_events`, and the last sequence on disk as of that same read (the log's last, else
    the checkpoint's): all a load may say it has folded. Asked of the checkpoint again after
    the read, it could name events written (and checkpointed) since, which the read missed."""
    events, (_segment, _offset, following) = _read_positioned(data, after, io)
    return events, following - 1


def _read_positioned(data: DataDir, after: int,
                     io: FileIO) -> tuple[EventColumns, tuple[int, int, int]]:
    """`read_events`, and where the log's reading ended: (segment, offset, next sequence)."""
    while True:
        identity = file_identity(data.checkpoint)
        checkpoint = read_checkpoint(data.checkpoint) if identity is not None else \
            Checkpoint.empty()
        logged: list[EventColumns] = []
        next_sequence = checkpoint.last_sequence + 1
        position = (checkpoint.covers + 1, 0, next_sequence)
        for number in [n for n in list_segments(io, data.path) if n > checkpoint.covers]:
            segment = Segment(io, data.path, number, create=False)
            if segment.fd < 0:
                continue
            found = scan(io, segment, 0, final=False, next_sequence=next_sequence)
            logged.append(found.events)
            next_sequence = found.next_sequence or next_sequence
            position = (number, found.end, next_sequence)
        if file_identity(data.checkpoint) == identity:
            break  # else a checkpoint meanwhile may have retired what was to be read
    return EventColumns.concat([checkpoint.events.after(after),
                                *(part.after(after) for part in logged)]), position


class LocalFeed:
    """Every event of a data directory past a sequence, in order, each once: first what the
    checkpoint and the log hold, then what is appended, as it comes (the change feed)."""

    def __init__(self, data: DataDir, after: int, io: FileIO = OS_IO) -> None:
        self.data = data
        self.io = io
        self.sent = after  # the last sequence handed out
        self._reader: LogReader | None = None
        self._pending = EventColumns.empty()

    def read(self, max_events: int) -> EventColumns:
        """Up to `max_events` events past those read before (none: nothing new yet)."""
        if not len(self._pending):
            if self._reader is None or self._reader.behind:
                events, (segment, offset, following) = _read_positioned(self.data, self.sent,
                                                                         self.io)
                self._reader = None
                if self.data.segment(segment).exists():  # (a reader never makes a segment)
                    self._reader = LogReader(self.data.path, self.io, OwnWrites(), segment,
                                             offset, following)
            else:
                events = self._reader.tail_columns().after(self.sent)
            self._pending = events
        # never an event a power loss could still take away (anning.storage.wal.durable)
        durable = read_durable(self.data.path)
        ready = len(self._pending) if durable is None else \
            int(np.searchsorted(self._pending.sequence, np.uint64(durable), "right"))
        count = min(ready, max_events)
        out = self._pending.take(np.arange(count))
        self._pending = self._pending.take(np.arange(count, len(self._pending)))
        if len(out):
            self.sent = int(out.sequence[-1])
        return out

    def close(self) -> None:
        self._reader = None


class LocalEventLog:
    """The write log and checkpoint of one data directory, as an EventSource."""

    def __init__(self, data: DataDir, io: FileIO = OS_IO, at: LogPosition | None = None,
                 checkpoint_id: FileIdentity | None = None) -> None:
        self.data = data
        self.io = io
        data.path.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(data.path, io, at)
        self.checkpoint_id = checkpoint_id  # the checkpoint file last read
        self._checkpoint_lock = threading.Lock()

    # -- the EventSource -----------------------------------------------------------------------
    @property
    def failure(self) -> str | None:
        return self.log.failure

    @property
    def last_sequence(self) -> int:
        """Of the last event this process wrote or read (0: none)."""
        return max(self.log.writer.segment.next_sequence, self.log.reader.next_sequence, 1) - 1

    def append(self, writes: Sequence[Sequence[Event]]) -> list[int | Exception]:
        """Each write's events durable, one record a write; the sequence of each one's last
        (all of them, or an error raised: one write and one fsync)."""
        framed = [records.encode_events(events) for events in writes]
        counts = [len(events) for events in writes]
        firsts = self.log.append(framed, counts)
        return [first + count - 1 for first, count in zip(firsts, counts, strict=True)]

    @property
    def applied(self) -> int:
        return self.last_sequence  # the log is read to its end before a load asks

    @property
    def lost(self) -> str:
        return ""  # a reader that meets a retired segment catches up from the checkpoint

    def condition(self) -> SourceCondition:
        failure = self.log.failure
        return SourceCondition(writable=failure is None, writes_problem=failure or "",
                               detail=f"write log of {self.data.path}")

    def served(self, folded_through: int) -> None:
        pass

    def recover(self) -> EventColumns:
        """Every event on disk (the checkpoint's, then the log's after it, a torn tail cut, a
        missing seal or header written); the reader goes on from the end."""
        path = self.data.checkpoint
        while True:
            identity = file_identity(path)
            checkpoint = read_checkpoint(path) if identity is not None else Checkpoint.empty()
            if checkpoint.origin:
                raise AnningError(f"{path}: this data directory is a replica of "
                                  f"{checkpoint.origin} (its sequences are that stream's): "
                                  "serve it with --nats, or load a snapshot into a fresh one")
            logged = replay(self.log, checkpoint.covers, checkpoint.last_sequence + 1)
            if file_identity(path) == identity:
                break
            # another process checkpointed meanwhile and may have retired what we were to read
        if checkpoint.covers and self.log.segments()[0] <= checkpoint.covers:
            self.log.retire(checkpoint.covers)  # a checkpoint that crashed before retiring
        self.checkpoint_id = identity
        return EventColumns.concat([checkpoint.events, logged])

    def poll(self) -> Update:
        """The events others appended since the last poll; `behind` when a checkpoint retired
        segments under the reader (what they held must be caught up from it first)."""
        if self.log.behind:
            return Update([], behind=True)
        taken = self.log.tail()
        return Update(taken, behind=self.log.behind)

    def behind(self) -> bool:
        return self.log.behind

    def catch_up(self) -> EventColumns:
        """After a poll said `behind`: the events from the reader's position on, from the
        checkpoint and the segments after it (own writes among them too); the reader goes on
        from the end."""
        reader = self.log.reader
        with reader.lock, self.log.writer.lock:
            while True:
                identity = file_identity(self.data.checkpoint)
                checkpoint = read_checkpoint(self.data.checkpoint) if identity is not None \
                    else Checkpoint.empty()
                logged: list[EventColumns] = []
                next_sequence = checkpoint.last_sequence + 1
                segment, end = self.log.writer.segment, 0
                for number in [n for n in self.log.segments() if n > checkpoint.covers]:
                    candidate = Segment(self.io, self.data.path, number, create=False)
                    if candidate.fd < 0:
                        continue
                    found = scan(self.io, candidate, 0, final=False,
                                 next_sequence=next_sequence)
                    logged.append(found.events)
                    next_sequence = found.next_sequence or next_sequence
                    segment, end = candidate, found.end
                if file_identity(self.data.checkpoint) == identity:
                    break
            start = max(reader.next_sequence, 1) - 1
            reader.move_to(segment, end, next_sequence)
            self.log.own.clear()
            self.checkpoint_id = identity
        return EventColumns.concat([checkpoint.events.after(start),
                                    *(part.after(start) for part in logged)])

    def events_after(self, sequence: int) -> EventColumns:
        return read_events(self.data, sequence, self.io)

    def feed(self, after: int) -> LocalFeed:
        return LocalFeed(self.data, after, self.io)

    def checkpoint(self, watermark: int, min_bytes: int = 0) -> CheckpointReport | None:
        """Fold the sealed log into the checkpoint (the events past `watermark`) and retire the
        folded segments. Runs beside checks and writes, taking only what the sealed segments
        and the old checkpoint hold. One process at a time (a lock file); None when another is
        at it or the log is smaller than `min_bytes`."""
        with self._checkpoint_lock, self.data.lock("checkpoint") as mine:
            if not mine or self.log.size() < max(min_bytes, 1):
                return None
            started = time.monotonic()
            path = self.data.checkpoint
            sealed = self.log.rotate()
            old = read_checkpoint(path) if path.exists() else Checkpoint.empty()
            folded = self.log.records(old.covers + 1, sealed, old.last_sequence + 1)
            last = int(folded.sequence[-1]) if len(folded) else old.last_sequence
            events = EventColumns.concat([old.events.after(watermark),
                                          folded.after(watermark)])
            write_checkpoint(path, Checkpoint(events, sealed, last, max(watermark,
                                                                        old.watermark)),
                             self.io)
            retired = self.log.retire(sealed)
        return CheckpointReport(rows=len(events), covers=sealed, retired_bytes=retired,
                                seconds=time.monotonic() - started)

    def lag(self) -> int:
        return self.log.lag()

    def size(self) -> int:
        return self.log.size()

    def reopen(self) -> LocalEventLog:
        return LocalEventLog(self.data, self.io, self.log.position(), self.checkpoint_id)

    def close(self) -> None:
        self.log.close()

    def __repr__(self) -> str:
        return f"LocalEventLog({os.fspath(self.data.path)!r})"

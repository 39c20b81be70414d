"""The events of one data directory: its write log, its checkpoint, and taking them up.

The local `EventSource`: a write is one record of the write log (anning.storage.wal), durable
before it is acknowledged; every worker process tails the log for the others' records. Once the
log holds enough, a checkpoint folds its sealed segments into `events.ckpt` (the latest event
per key) and retires them; a process whose reader meets a retired segment, or that sees a new
checkpoint file, takes the checkpoint up with the log after it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from anning.model.events import Event, EventTable
from anning.storage import records
from anning.storage.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir
from anning.storage.recovery import replay
from anning.storage.source import CheckpointReport, Update
from anning.storage.wal import EventLog, LogPosition
from anning.storage.wal.segments import Segment, scan

__all__ = ["LocalEventLog"]

log = logging.getLogger("anning.storage")
FileIdentity = tuple[int, int, int]


def file_identity(path: Path) -> FileIdentity | None:
    """Which file stands at `path` now (inode, mtime, size), or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class LocalEventLog:
    """The write log and checkpoint of one data directory, as an EventSource."""

    def __init__(self, data: DataDir, io: FileIO = OS_IO, at: LogPosition | None = None,
                 checkpoint_id: FileIdentity | None = None) -> None:
        self.data = data
        self.io = io
        data.path.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(data.path, io, at)
        self.checkpoint_id = checkpoint_id  # the checkpoint file whose events are held
        self._checkpoint_lock = threading.Lock()

    # -- the EventSource -----------------------------------------------------------------------
    @property
    def failure(self) -> str | None:
        return self.log.failure

    @property
    def last_sequence(self) -> int:
        segment = self.log.writer.segment
        return (segment.number << 40) | segment.synced

    def append(self, writes: Sequence[Sequence[Event]]) -> list[int]:
        framed = [records.encode_events(events) for events in writes]
        end = self.log.append(framed)
        # one write(): the records lie back to back in one segment, so each one's sequence
        # (segment, end offset) is the next one's less that one's bytes
        sequences = []
        for record in reversed(framed):
            sequences.append(end)
            end -= len(record)
        return sequences[::-1]

    def recover(self, after_ms: int) -> EventTable:
        """The checkpoint and every record after it (a torn tail cut, a missing seal written),
        folded; the reader goes on from the end."""
        return self._read(after_ms, repair=True)

    def poll(self) -> Update:
        """The records others appended; `reload` when a checkpoint retired segments under the
        reader (what they held is in the checkpoint, which must be served before any answer)."""
        if self.log.behind:
            return Update([], reload=True)
        taken = [records.event_of(fields) for fields in self.log.tail()]
        return Update(taken, reload=self.log.behind)

    def poll_blocked(self) -> bool:
        return self.log.behind

    def reload_due(self) -> bool:
        """A checkpoint file this process has not taken up, or segments retired under it."""
        return self.log.behind or file_identity(self.data.checkpoint) != self.checkpoint_id

    def reload(self, after_ms: int) -> EventTable:
        """The checkpoint and the log after it (no repair: that is the owner's)."""
        return self._read(after_ms, repair=False)

    def _read(self, after_ms: int, repair: bool) -> EventTable:
        path = self.data.checkpoint
        while True:
            identity = file_identity(path)
            checkpoint = read_checkpoint(path) if identity is not None else \
                Checkpoint(EventTable.empty(), 0, 0)
            events = replay(self.log, checkpoint.covers) if repair else \
                self._read_after(checkpoint.covers)
            if file_identity(path) == identity:
                break
            # another process checkpointed meanwhile and may have retired what we were to read
        if repair and checkpoint.covers and self.log.segments()[0] <= checkpoint.covers:
            self.log.retire(checkpoint.covers)  # a checkpoint that crashed before retiring
        self.checkpoint_id = identity
        return checkpoint.table.fold_records(events, after_ms) if events else \
            checkpoint.table.after(after_ms)

    def _read_after(self, covers: int) -> list[records.EventFields]:
        """The events of every segment after `covers`, reading each to its end; the reader goes
        on from there. Under the reader's lock (its tail must not run meanwhile) and the
        writer's (no write of ours is half marked as our own meanwhile)."""
        reader = self.log.reader
        with reader.lock, self.log.writer.lock:
            out: list[records.EventFields] = []
            segment: Segment | None = None
            end = 0
            for number in [n for n in self.log.segments() if n > covers]:
                candidate = Segment(self.io, self.data.path, number, create=False)
                if candidate.fd < 0:
                    continue
                found = scan(self.io, candidate, 0, final=False, own=None)
                # a seal ends a segment; past it only seals may follow
                out.extend(found.events)
                segment, end = candidate, found.end
            if segment is None:  # nothing after the checkpoint yet: the writer's segment
                segment = self.log.writer.segment
                end = self.io.size(segment.fd)
            reader.move_to(segment, end)
            self.log.own.clear()
            return out

    def checkpoint(self, after_ms: int, min_bytes: int = 0) -> CheckpointReport | None:
        """Fold the sealed log into the checkpoint and retire the folded segments. Runs beside
        checks and writes, taking only what the sealed segments and the old checkpoint hold.
        One process at a time (a lock file)."""
        with self._checkpoint_lock, self.data.lock("checkpoint") as mine:
            if not mine or self.log.size() < max(min_bytes, 1):
                return None
            started = time.monotonic()
            path = self.data.checkpoint
            sealed = self.log.rotate()
            old = read_checkpoint(path) if path.exists() else \
                Checkpoint(EventTable.empty(), 0, 0)
            table = old.table.fold_records(self.log.records(old.covers + 1, sealed), after_ms)
            write_checkpoint(path, Checkpoint(table, sealed, after_ms), self.io)
            retired = self.log.retire(sealed)
        return CheckpointReport(rows=len(table), covers=sealed, retired_bytes=retired,
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

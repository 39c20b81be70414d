"""The write log's writer: appends made durable with one group commit, rotation, retirement.

A write is one write() under an exclusive flock of the current segment (records of several
processes never interleave, and a write cut short by a full disk can be cut back to the last
whole record), then an fsync. Group commit: the writes of a process's threads that queue while
one write is under way go out as one write() and one fsync. Every event gets the next dense
sequence of the data directory, stamped into its record under the segment's lock (anning.
storage.records.stamp): the n-th event ever written has sequence n, across processes, segments,
checkpoints and restarts. Each segment starts with a header record naming its first sequence,
and its seal names the next one, so a segment read alone knows the sequence of every event.

A checkpoint rotates the log: it creates the next segment and appends a seal to the current one
while holding its lock. A writer looks for a newer segment under the same lock, so nothing but
seals follows a seal. An fsync or write failure is never retried into a success: the write
fails and writes stop (WritesStopped) until an operator restarts. The outcome of a write whose
fsync failed is unknown, as after a timeout: its bytes may be in the file (and be read, here
and after a restart) or be lost with the page cache; it is not cut out, since the same fsync
also covered records of other processes that may have been acknowledged. A full disk fails the
write (DiskFull) with the segment cut back to its last whole record; writes go on once there
is space again.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path

from anning.errors import DiskFull, TooLarge, WritesStopped
from anning.storage import records
from anning.storage.fileio import FileIO
from anning.storage.layout import segment_name
from anning.storage.wal.durable import DurableMark
from anning.storage.wal.segments import (
    OwnWrites,
    Segment,
    list_segments,
    locked,
    newest_started,
    scan,
)

__all__ = ["LogWriter"]

log = logging.getLogger("anning.storage.wal")
# no room for this write, nothing wrong with the disk: a full file system, a quota, or a
# file-size limit (RLIMIT_FSIZE, the file system's largest file); the write is cut back
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _Write:
    """One append waiting in the group commit: its records (each the events of one caller's
    write) and their event counts, then its outcome: each record's first sequence."""

    __slots__ = ("counts", "done", "error", "firsts", "records", "wake")

    def __init__(self, framed: list[bytes], counts: list[int]) -> None:
        self.records = framed
        self.counts = counts
        self.done = False
        self.error: BaseException | None = None
        self.firsts: list[int] = []
        self.wake = threading.Lock()
        self.wake.acquire()


class LogWriter:
    """Appends to the newest segment of one directory; safe across threads and processes."""

    def __init__(self, directory: Path, io: FileIO, own: OwnWrites, segment: int,
                 synced: int = 0, failure: str | None = None) -> None:
        self.directory = directory
        self.io = io
        self.own = own
        self.lock = threading.Lock()  # this process's writes to the segments, and recovery
        self._queue_lock = threading.Lock()
        self._queue: list[_Write] = []  # writes waiting for a leader (group commit)
        self._leading = False
        self.failure = failure
        self.segment = Segment(io, directory, segment)
        self.segment.synced = synced
        self.durable = DurableMark(directory)

    # -- appending ---------------------------------------------------------------------------
    def append(self, framed: list[bytes], counts: list[int]) -> list[int]:
        """Write framed records (anning.storage.records.encode_events, `counts[i]` events in
        record i) and make them durable; return each record's first sequence. Raises DiskFull
        (nothing kept, writes go on), WritesStopped or TooLarge.

        Group commit, leader and followers: the writes that queue while one thread writes
        and fsyncs go out together, as one write() and one fsync by the next leader, who wakes
        each of them. Per write that is one hand-off instead of a lock, a write and an fsync
        each (every syscall gives up the GIL, and the writers queue behind each hand-off)."""
        if any(len(r) - records.FRAME.size > records.MAX_RECORD for r in framed):
            raise TooLarge(f"a write log record of more than {records.MAX_RECORD} bytes")
        write = _Write(framed, counts)
        with self._queue_lock:
            self._queue.append(write)
            lead = not self._leading
            self._leading = True
        if not lead:
            write.wake.acquire()  # released by a leader: our write is done, or it is our turn
        if not write.done:
            self._lead()
        if write.error is not None:
            raise write.error
        return write.firsts

    def _lead(self) -> None:
        """Write and sync every queued write, wake their threads, hand on to the next."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        framed = [r for w in batch for r in w.records]
        counts = [c for w in batch for c in w.counts]
        try:
            with self.lock:
                if self.failure:
                    raise WritesStopped(self.failure)
                segment, start, end, first = self._write_locked(framed, counts)
            try:
                self._sync(segment, end)
            except BaseException:
                # Unknown outcome: the bytes may be read back, here as in every other process.
                # Not ours to skip any more, or this process would disagree with the others.
                self.own.unmark(segment.number, start)
                raise
            for w in batch:  # consecutive sequences, in the order the records went out
                for count in w.counts:
                    w.firsts.append(first)
                    first += count
            self.durable.set(first - 1)  # for the change feed's readers
        except BaseException as exc:  # the one outcome of the batch, raised in each thread
            for w in batch:  # (as a Future's exception is, by every caller of result())
                w.error = exc
        finally:
            with self._queue_lock:
                following = self._queue[0] if self._queue else None
                self._leading = following is not None
            if following is not None:
                following.wake.release()  # not done: it leads the next batch
            for w in batch:  # the leader's own lock too: nobody waits on it, no harm
                w.done = True
                w.wake.release()

    def current_segment(self) -> Segment:
        """The newest segment, moving to it (and sealing the old) if a checkpoint rotated."""
        segment = self.segment
        if not self.io.exists(segment.path):  # retired under us: checkpoints of others
            newest = newest_started(self.io, self.directory)
            segment = self.segment = Segment(self.io, self.directory,
                                             newest if newest is not None else segment.number)
        while self.io.exists(self.directory / segment_name(segment.number + 1)):
            newer = Segment(self.io, self.directory, segment.number + 1)
            self.locked(segment, lambda s=segment, n=newer.number: self._seal(s, n))
            segment = self.segment = newer
        return segment

    def _seal(self, segment: Segment, following: int) -> None:
        """Under the segment's lock: end it, saying where the sequences go on."""
        self.put(segment, records.encode_seal(following, self.sequence_at(segment)))

    def sequence_at(self, segment: Segment) -> int:
        """Under the segment's lock: the sequence the next event appended to it gets. Read from
        the records since what this process last knew (another process's writes): their
        frames are walked and only the last write's header is decoded."""
        size = self.io.size(segment.fd)
        if size == segment.known_end:
            return segment.next_sequence
        start = segment.known_end if segment.known_end >= 0 else 0
        found = scan(self.io, segment, start, final=True,
                     next_sequence=segment.next_sequence if start else 0)
        if not found.next_sequence:
            raise self.stop(f"{segment.path}: the sequence after offset {start} cannot be told "
                            "(a segment without its header record)")
        if found.end < size:
            # Under the lock no write is under way: bytes past the last whole record are a
            # writer's that died mid-write, never acknowledged. Cut, or the next record would
            # stand behind them and they would read as corruption in the middle.
            log.warning("%s: dropping a torn record at offset %d (%d bytes)", segment.path,
                        found.end, size - found.end)
            try:
                self.io.truncate(segment.fd, found.end)
            except OSError as exc:
                raise self.stop(f"cutting {segment.path} back to {found.end} failed: "
                                f"{exc}") from exc
        segment.known_end, segment.next_sequence = found.end, found.next_sequence
        return found.next_sequence

    def _write_locked(self, framed: list[bytes],
                      counts: list[int]) -> tuple[Segment, int, int, int]:
        segment = self.segment
        while True:
            done = self.locked(segment, lambda s=segment: self._append_locked(s, framed, counts))
            if done is not None:
                return (segment, *done)
            segment = self.current_segment()

    def _append_locked(self, segment: Segment, framed: list[bytes],
                       counts: list[int]) -> tuple[int, int, int] | None:
        """Under the segment's lock: stamp the records' sequences and write them, unless a
        checkpoint rotated (None). Returns (start, end, first sequence). The rotation is looked
        for only when the file changed since our last write: a seal or another process's record
        moved its end (two stats less on the common path)."""
        if self.io.size(segment.fd) != segment.written and self._rotated(segment):
            return None
        first = next_sequence = self.sequence_at(segment)  # may cut a dead writer's torn tail
        start = segment.known_end
        stamped = []
        for record, count in zip(framed, counts, strict=True):
            stamped.append(records.stamp(record, next_sequence))
            next_sequence += count
        end = self.put(segment, b"".join(stamped), own=True, start=start,
                       next_sequence=next_sequence)
        segment.written = segment.known_end = end
        segment.next_sequence = next_sequence
        return start, end, first

    def _rotated(self, segment: Segment) -> bool:
        return self.io.exists(self.directory / segment_name(segment.number + 1)) or \
            not self.io.exists(segment.path)

    def locked(self, segment: Segment, action):  # type: ignore[no-untyped-def]
        return locked(self.io, segment, action, self.stop)

    def put(self, segment: Segment, data: bytes, own: bool = False,
            start: int | None = None, next_sequence: int = 0) -> int:
        """One write under the segment's lock; on a full disk, cut back and raise DiskFull.
        An `own` write is marked so that this process's reader skips it: the engine took its
        events already (before the write, so no reader can meet it unmarked)."""
        io = self.io
        if start is None:
            start = io.size(segment.fd)
        if own:
            self.own.mark(segment.number, start, start + len(data), next_sequence)
        try:
            try:
                written = io.write(segment.fd, data)
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise self.stop(f"write to {segment.path} failed: {exc}") from exc
                written = -1
            if written != len(data):
                self._cut_back(segment, start, written)
        except BaseException:
            self.own.unmark(segment.number, start)
            raise
        return start + written

    def _cut_back(self, segment: Segment, start: int, written: int) -> None:
        """A write the disk could not hold: cut the segment back to its last whole record."""
        try:
            self.io.truncate(segment.fd, start)
        except OSError as exc:
            raise self.stop(f"cutting {segment.path} back to {start} after a full disk "
                            f"failed: {exc}") from exc
        kept = "none" if written < 0 else f"{written} bytes"
        raise DiskFull(f"{segment.path}: no space left for a write ({kept} of it written, cut "
                       f"back to offset {start})")

    def _sync(self, segment: Segment, end: int) -> None:
        with segment.sync_lock:
            if segment.synced >= end:  # another thread's fsync, begun after our write, covered it
                return
            if self.failure:
                raise WritesStopped(self.failure)
            # what this process has written so far (no stat: every syscall under a lock is a
            # hand-off of the GIL that the waiting writers queue behind)
            target = max(end, segment.written)
            try:
                self.io.fsync(segment.fd)
            except OSError as exc:
                raise self.stop(f"fsync of {segment.path} failed: {exc}") from exc
            segment.synced = max(segment.synced, target)

    def start_segment(self, segment: Segment, first_sequence: int) -> None:
        """Under the segment's lock: its header record, if it has none yet (two processes may
        open a new log at once; one header is written)."""
        if self.io.size(segment.fd) == 0:
            end = self.put(segment, records.encode_header(first_sequence))
            self.io.fsync(segment.fd)
            segment.known_end, segment.next_sequence = end, first_sequence

    def stop(self, why: str) -> WritesStopped:
        """Writes stop until a restart; the error to raise."""
        if self.failure is None:
            self.failure = why
            log.error("writes stopped until a restart: %s", why)
        return WritesStopped(self.failure)

    # -- rotation and retirement (checkpoints) -----------------------------------------------
    def rotate(self) -> int:
        """Start a new segment; return the number of the one sealed (for a checkpoint to fold).
        Every record of the sealed one is whole and on disk when this returns."""
        with self.lock:
            if self.failure:
                raise WritesStopped(self.failure)
            segment = self.current_segment()

            def seal() -> Segment:
                following = self.sequence_at(segment)
                newer = Segment(self.io, self.directory, segment.number + 1)
                # the header before the name is durable, the name before the seal points at it
                self.locked(newer, lambda: self.start_segment(newer, following))
                self.io.fsync_dir(self.directory)
                self.put(segment, records.encode_seal(newer.number, following))
                return newer

            self.segment = self.locked(segment, seal)
            self._sync(segment, self.io.size(segment.fd))
            return segment.number

    def retire(self, upto: int) -> int:
        """Delete the segments up to `upto` (a checkpoint holds their events now); return the
        bytes freed."""
        freed = 0
        for number in list_segments(self.io, self.directory):
            if number <= upto:
                path = self.directory / segment_name(number)
                try:
                    size = path.stat().st_size
                    self.io.unlink(path)
                except FileNotFoundError:  # another process retired it first
                    continue
                freed += size
        if freed:
            self.io.fsync_dir(self.directory)
        return freed

    def size(self) -> int:
        """Bytes in the segments on disk."""
        return sum((self.directory / segment_name(n)).stat().st_size
                   for n in list_segments(self.io, self.directory))

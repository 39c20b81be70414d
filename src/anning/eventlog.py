"""The write log (SPEC §6): every real-time event, durable before it is acknowledged.

Append-only segment files `events-NNNNNN.log` in the data directory, shared by every worker
process. A record is `length u32 | crc32 u32 | msgpack payload`, written with one write() under
an exclusive flock of the segment (records of several processes never interleave, and a write cut
short by a full disk can be cut back to the last whole record), then fsync'd. Group commit: the
writes of a process's threads that queue while one write is under way go out as one write() and
one fsync. A record's sequence is (segment << 40) | the offset where it ends.

A checkpoint rotates the log: it creates the next segment and appends a seal record to the
current one while holding its lock. A writer checks for a newer segment under the same lock, so
nothing but seals follows a seal; readers that meet a seal move on to the next segment. Sealed
segments are folded into a checkpoint and then retired (deleted).

Readers tail the segments from where they stopped, taking only whole records whose checksum
holds, so every check that starts after an acknowledgement sees it, in every process. An fsync
or write failure is never retried into a success: the write fails and writes stop
(WritesStopped) until an operator restarts; checks go on. The outcome of a write whose fsync
failed is unknown, as after a timeout: its bytes may be in the file (and be read, here and after
a restart) or be lost with the page cache; it is not cut out, since the same fsync also covered
records of other processes that may have been acknowledged. A full disk fails the write (DiskFull)
with the log cut back to its last whole record; writes go on once there is space again.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import re
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from os import PathLike
from pathlib import Path

import msgpack
import numpy as np

from anning._events import FRAME_BAD, FRAME_END, FRAME_TORN, join_payloads, scan_frames
from anning.logio import OS_IO, FileIO

__all__ = ["CorruptLog", "DiskFull", "EventLog", "WritesStopped", "encode"]

log = logging.getLogger("anning.eventlog")
_FRAME = struct.Struct("<II")
MAX_RECORD = 64 << 20  # the largest gRPC message: a WriteBatch is one record
SEGMENT_SHIFT = 40
_SEAL_VERSION = 0  # a payload [0, next segment] is the log's own seal, not an event
_BATCH_VERSION = 2  # [2, [event fields...]...]: the events of one batch, expanded on reading
_SEGMENT = re.compile(r"^events-(\d{6,})\.log$")
_LEGACY = "events.log"  # a single-file log of an earlier version: becomes segment 1
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class WritesStopped(Exception):
    """Writes are stopped after a failure of the disk; checks go on (UNAVAILABLE for writes)."""


class DiskFull(Exception):
    """This write did not fit on the disk: nothing of it was kept; retry when there is space."""


class CorruptLog(Exception):
    """A bad record before the end of the log: start-up stops, naming the file and offset."""


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode(record: Iterable[object]) -> bytes:
    return frame(msgpack.packb(list(record), use_bin_type=True))


def _seal(following: int) -> bytes:
    return encode((_SEAL_VERSION, following))


def segment_name(number: int) -> str:
    return f"events-{number:06d}.log"


def sequence_of(segment: int, offset: int) -> int:
    return segment << SEGMENT_SHIFT | offset


class _Segment:
    """One open segment file; closed when the last thread using it lets go."""

    def __init__(self, io: FileIO, directory: Path, number: int, create: bool = True) -> None:
        self.io = io
        self.number = number
        self.path = directory / segment_name(number)
        self.fd = -1
        self.fd = io.open(self.path) if create or io.exists(self.path) else -1
        self.synced = 0
        self.written = -1  # where this process's last write here ended (-1: not known)
        self.sync_lock = threading.Lock()

    def __del__(self) -> None:
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                self.io.close(fd)


class _Write:
    """One append waiting in the group commit: its bytes, then its outcome."""

    __slots__ = ("data", "done", "error", "sequence", "wake")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = False
        self.error: BaseException | None = None
        self.sequence = 0
        self.wake = threading.Lock()
        self.wake.acquire()


class EventLog:
    """Append to and tail the segments of one data directory; safe across threads and
    processes. `io` is the file layer (plain OS calls unless a test gives another)."""

    def __init__(self, directory: str | PathLike[str], io: FileIO = OS_IO) -> None:
        self.directory = Path(directory)
        self.io = io
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Write] = []  # writes waiting for a leader (group commit)
        self._leading = False
        self.failure: str | None = None
        self._adopt_legacy()
        numbers = self.segments()
        last = numbers[-1] if numbers else 1
        self._writer = _Segment(io, self.directory, last)
        if not numbers:
            io.fsync_dir(self.directory)
        self._reader = _Segment(io, self.directory, numbers[0] if numbers else last)
        self._read = 0
        self.behind = False  # the reader met a segment a checkpoint has retired already
        self._own: dict[tuple[int, int], int] = {}  # (segment, start) -> end of our writes

    def _adopt_legacy(self) -> None:
        legacy = self.directory / _LEGACY
        if self.io.exists(legacy) and not self.segments():
            legacy.rename(self.directory / segment_name(1))
            self.io.fsync_dir(self.directory)

    def segments(self) -> list[int]:
        """The segment numbers on disk, in order."""
        found = (_SEGMENT.match(name) for name in self.io.listdir(self.directory))
        return sorted(int(m.group(1)) for m in found if m)

    # -- writing -----------------------------------------------------------------------------
    def append(self, records: list[bytes]) -> int:
        """Write framed records and make them durable; return the sequence of the last.
        Raises DiskFull (nothing kept, writes go on) or WritesStopped.

        Group commit, leader and followers: the writes that queue while one thread writes
        and fsyncs go out together, as one write() and one fsync by the next leader, who wakes
        each of them. Per write that is one hand-off instead of a lock, a write and an fsync
        each (every syscall gives up the GIL, and the writers queue behind each hand-off)."""
        data = b"".join(records)
        if any(len(r) - _FRAME.size > MAX_RECORD for r in records):
            raise OverflowError(f"a write log record of more than {MAX_RECORD} bytes")
        write = _Write(data)
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
        return write.sequence

    def _lead(self) -> None:
        """Write and sync every queued write, wake their threads, hand on to the next."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        try:
            with self._write_lock:
                if self.failure:
                    raise WritesStopped(self.failure)
                segment, end = self._write_locked(b"".join(w.data for w in batch))
            self._sync(segment, end)
            for w in reversed(batch):  # each write's sequence: where its own bytes end
                w.sequence = sequence_of(segment.number, end)
                end -= len(w.data)
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

    def _current_segment(self) -> _Segment:
        """The newest segment, moving to it (and sealing the old) if a checkpoint rotated."""
        segment = self._writer
        if not self.io.exists(segment.path):  # retired under us: checkpoints of others
            segment = self._writer = _Segment(self.io, self.directory, self.segments()[-1])
        while self.io.exists(self.directory / segment_name(segment.number + 1)):
            newer = _Segment(self.io, self.directory, segment.number + 1)
            self._locked(segment, lambda s=segment, n=newer.number: self._put(s, _seal(n)))
            segment = self._writer = newer
        return segment

    def _write_locked(self, data: bytes) -> tuple[_Segment, int]:
        segment = self._writer
        while True:
            end = self._locked(segment, lambda s=segment: self._append_locked(s, data))
            if end is not None:
                return segment, end
            segment = self._current_segment()

    def _append_locked(self, segment: _Segment, data: bytes) -> int | None:
        """Under the segment's lock: write, unless a checkpoint rotated (None). The rotation
        is looked for only when the file changed since our last write: a seal or another
        process's record moved its end (two stats less on the common path)."""
        start = self.io.size(segment.fd)
        if start != segment.written and self._rotated(segment):
            return None
        end = self._put(segment, data, own=True, start=start)
        segment.written = end
        return end

    def _rotated(self, segment: _Segment) -> bool:
        return self.io.exists(self.directory / segment_name(segment.number + 1)) or \
            not self.io.exists(segment.path)

    def _locked(self, segment: _Segment, action):
        try:
            self.io.lock(segment.fd)
        except OSError as exc:
            raise self._stop(f"lock of {segment.path} failed: {exc}") from exc
        try:
            return action()
        finally:
            with contextlib.suppress(OSError):
                self.io.unlock(segment.fd)

    def _put(self, segment: _Segment, data: bytes, own: bool = False,
             start: int | None = None) -> int:
        """One write under the segment's lock; on a full disk, cut back and raise DiskFull.
        An `own` write is marked so that this process's tail skips it: the engine took its
        events already (before the write, so no tail can read it unmarked)."""
        io = self.io
        if start is None:
            start = io.size(segment.fd)
        key = (segment.number, start)
        if own:
            self._own[key] = start + len(data)
        try:
            try:
                written = io.write(segment.fd, data)
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise self._stop(f"write to {segment.path} failed: {exc}") from exc
                written = -1
            if written != len(data):
                self._cut_back(segment, start, written)
        except BaseException:
            self._own.pop(key, None)
            raise
        return start + written

    def _cut_back(self, segment: _Segment, start: int, written: int) -> None:
        """A write the disk could not hold: cut the segment back to its last whole record."""
        try:
            self.io.truncate(segment.fd, start)
        except OSError as exc:
            raise self._stop(f"cutting {segment.path} back to {start} after a full disk "
                             f"failed: {exc}") from exc
        kept = "none" if written < 0 else f"{written} bytes"
        raise DiskFull(f"{segment.path}: no space left for a write ({kept} of it written, cut "
                       f"back to offset {start})")

    def _sync(self, segment: _Segment, end: int) -> None:
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
                raise self._stop(f"fsync of {segment.path} failed: {exc}") from exc
            segment.synced = max(segment.synced, target)

    def _stop(self, why: str) -> WritesStopped:
        if self.failure is None:
            self.failure = why
            log.error("writes stopped until a restart: %s", why)
        return WritesStopped(self.failure)

    def rotate(self) -> int:
        """Start a new segment; return the number of the one sealed (for a checkpoint to fold).
        Every record of the sealed one is whole and on disk when this returns."""
        with self._write_lock:
            if self.failure:
                raise WritesStopped(self.failure)
            segment = self._current_segment()

            def seal() -> _Segment:
                newer = _Segment(self.io, self.directory, segment.number + 1)
                self.io.fsync_dir(self.directory)
                self._put(segment, _seal(newer.number))
                return newer

            self._writer = self._locked(segment, seal)
            self._sync(segment, self.io.size(segment.fd))
            return segment.number

    def retire(self, upto: int) -> int:
        """Delete the segments up to `upto` (a checkpoint holds their events now); return the
        bytes freed."""
        freed = 0
        for number in self.segments():
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
        return sum((self.directory / segment_name(n)).stat().st_size for n in self.segments())

    # -- reading -----------------------------------------------------------------------------
    def tail(self) -> list[list]:
        """The event records appended since the last call (by any process), in order."""
        reader = self._reader  # held: a replay may replace (and close) it meanwhile
        if self.io.size(reader.fd) <= self._read and reader is self._reader:
            return []
        with self._read_lock:
            out: list[list] = []
            while True:
                records, end, following = self._scan(self._reader, self._read, final=False,
                                                     own=self._own)
                out.extend(records)
                self._read = end
                if following is None:
                    return out
                newer = _Segment(self.io, self.directory, following, create=False)
                if newer.fd < 0:  # folded into a checkpoint: the engine must load that first
                    self.behind = True
                    return out
                self._reader, self._read = newer, 0

    def replay(self, after: int = 0) -> list[list]:
        """Every event record of the segments after `after` (those a checkpoint does not hold),
        for recovery; the reader goes on from their end. A torn last record is dropped with a
        warning and cut off; a bad record before the end raises CorruptLog naming the file and
        the offset."""
        # the write lock too: the flock keeps other processes' writers out, not our threads
        with self._read_lock, self._write_lock:
            out: list[list] = []
            numbers = [n for n in self.segments() if n > after] or [self._writer.number]
            segment, end = self._writer, self._writer.synced
            for number in numbers:
                segment = self._writer if number == self._writer.number else \
                    _Segment(self.io, self.directory, number, create=False)
                if segment.fd < 0:  # retired meanwhile by another process's checkpoint
                    continue
                # under the lock: a live writer of another process is never cut off mid-record
                end = self._locked(segment, lambda s=segment: self._recover(s, out))
            self._reader, self._read, self.behind = segment, end, False
            self._own.clear()  # the writes marked so far are all behind the reader now
            self._seal_older(numbers[-1])
            return out

    def _seal_older(self, newest: int) -> None:
        """Seal the segment before the newest: a rotation whose process died before writing
        the seal would leave readers of it waiting for records that never come."""
        older = _Segment(self.io, self.directory, newest - 1, create=False)
        if older.fd < 0:
            return
        try:
            self._locked(older, lambda: self._put(older, _seal(newest)))
        except (DiskFull, WritesStopped) as exc:
            log.warning("%s: could not seal it: %s", older.path, exc)

    def _recover(self, segment: _Segment, out: list[list]) -> int:
        records, end, _ = self._scan(segment, 0, final=True)
        out.extend(records)
        size = self.io.size(segment.fd)
        if end < size:
            log.warning("%s: dropping a torn last record at offset %d (%d bytes)",
                        segment.path, end, size - end)
            self.io.truncate(segment.fd, end)
            self.io.fsync(segment.fd)
        return end

    def records(self, first: int, last: int) -> Iterator[list]:
        """The event records of segments first..last as on disk (for a checkpoint's fold)."""
        for number in range(first, last + 1):
            path = self.directory / segment_name(number)
            if not self.io.exists(path):
                continue
            records, _, _ = self._scan(_Segment(self.io, self.directory, number), 0, final=True)
            yield from records

    def _scan(self, segment: _Segment, start: int, final: bool,
              own: dict[tuple[int, int], int] | None = None,
              ) -> tuple[list[list], int, int | None]:
        """Whole records from `start`: (event records, where they end, the segment a seal
        points to or None), leaving out this process's `own` writes. The frames and checksums
        are walked in the compiled core."""
        size = self.io.size(segment.fd)
        data = self.io.pread(segment.fd, size - start, start) if size > start else b""
        offsets, lengths, stop, why = scan_frames(data, MAX_RECORD)
        if own and len(offsets):  # left out before decoding: a 10,000-event batch is 100 ms
            keep = _not_own(own, segment.number, start + offsets - _FRAME.size)
            offsets, lengths = offsets[keep], lengths[keep]
        records: list[list] = []
        for i, record in enumerate(_decode(data, offsets, lengths, segment.path, start)):
            if record and record[0] == _SEAL_VERSION:
                if not final:
                    return records, start + int(offsets[i] + lengths[i]), int(record[1])
                continue
            if record and record[0] == _BATCH_VERSION:  # a batch: all of it or nothing
                records.extend((1, *item) for item in record[1])
                continue
            records.append(record)
        if final and why != FRAME_END:
            bad_end = stop + _FRAME.size + _FRAME.unpack_from(data, stop)[0] \
                if why == FRAME_BAD else len(data)
            # a bad frame with bytes after it, or a whole good frame after a torn one, is
            # corruption in the middle; else it is a torn tail
            if bad_end < len(data) or (why == FRAME_TORN and _later_record_ok(data, stop)):
                raise CorruptLog(f"{segment.path}: bad record at offset {start + stop}")
        return records, start + stop, None

    def reopen(self) -> EventLog:
        """The same log through new descriptors, read position kept (for a forked worker:
        an O_APPEND file position shared with other processes would garble sequences, and a
        flock shared through an inherited descriptor would not exclude the parent)."""
        other = EventLog.__new__(EventLog)
        other.directory, other.io, other.failure = self.directory, self.io, self.failure
        other.behind = self.behind
        other._write_lock, other._read_lock = threading.Lock(), threading.Lock()
        other._queue_lock, other._queue, other._leading = threading.Lock(), [], False
        other._own = {}
        other._writer = _Segment(self.io, self.directory, self._writer.number)
        other._writer.synced = self._writer.synced
        other._reader = _Segment(self.io, self.directory, self._reader.number)
        other._read = self._read
        return other

    def lag(self) -> int:
        """Bytes appended (by any process) that this reader has not taken in yet."""
        reader, writer = self._reader, self._writer
        lag = max(0, self.io.size(reader.fd) - self._read)
        if writer.number > reader.number:
            lag += self.io.size(writer.fd)
        return lag

    def close(self) -> None:
        self._writer = self._reader = None  # type: ignore[assignment]


def _decode(data: bytes, offsets: np.ndarray, lengths: np.ndarray, path: Path,
            start: int) -> list:
    """The payloads as one msgpack stream (three times quicker than a call a record); a
    payload that is not exactly one value is found and named record by record."""
    unpacker = msgpack.Unpacker(raw=False, use_list=False, max_buffer_size=0)
    unpacker.feed(join_payloads(data, offsets, lengths))
    values: list = []
    try:
        # a slice at a time: one C call over a whole segment would hold the GIL, and every
        # check of the process, for a tenth of a second
        while chunk := list(itertools.islice(unpacker, 4096)):
            values += chunk
    except (ValueError, msgpack.UnpackException):
        values = []
    if len(values) == len(offsets):
        return values
    view = memoryview(data)
    for offset, length in zip(offsets.tolist(), lengths.tolist(), strict=True):
        try:
            msgpack.unpackb(view[offset:offset + length], raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CorruptLog(f"{path}: undecodable record at offset "
                             f"{start + offset - _FRAME.size}: {exc}") from None
    raise CorruptLog(f"{path}: records from offset {start} do not decode one value each")


def _not_own(own: dict[tuple[int, int], int], segment: int, frames: np.ndarray) -> np.ndarray:
    """Which of the frames starting at `frames` (sorted file offsets) are not this process's
    own writes; the own writes met are taken out of `own`. An own write is one write() of one
    or more frames: (segment, where its first frame starts) -> where its last one ends."""
    first, last = int(frames[0]), int(frames[-1])
    met = [(start, end) for (number, start), end in own.items()
           if number == segment and first <= start <= last]
    if not met:
        return np.ones(len(frames), bool)
    starts, ends = np.array(met, np.int64).T
    at = np.searchsorted(frames, starts)
    met_here = frames[np.minimum(at, len(frames) - 1)] == starts
    for start in starts[met_here].tolist():
        del own[(segment, start)]
    edges = np.zeros(len(frames) + 1, np.int64)
    np.add.at(edges, at[met_here], 1)
    np.add.at(edges, np.searchsorted(frames, ends[met_here]), -1)
    return np.cumsum(edges[:-1]) == 0


def _later_record_ok(data: bytes, pos: int) -> bool:
    """Whether a whole, valid record follows a bad one (within 64 KiB): then the bad one is
    not a torn tail but corruption in the middle."""
    for k in range(pos + 1, min(len(data), pos + (64 << 10)) - _FRAME.size + 1):
        length, crc = _FRAME.unpack_from(data, k)
        end = k + _FRAME.size + length
        if 0 < length <= MAX_RECORD and end <= len(data) and zlib.crc32(
                data[k + _FRAME.size : end]) == crc:
            return True
    return False

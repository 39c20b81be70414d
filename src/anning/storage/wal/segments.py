"""The write log's segment files: opening one, locking it, and reading its records.

A segment `events-NNNNNN.log` holds framed records (anning.storage.records) back to back. The
frames and checksums are walked in the compiled core, and so are the writes of this version
decoded, to columns (records.decode_columns); seals and headers, and segments of an earlier
version, are decoded by msgpack. What a scan meets first that is not a whole good record
decides: the end of the data, a torn tail (a crash mid-write), or corruption before the end (a
bad record followed by more).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgpack
import numpy as np
import numpy.typing as npt

from anning._events import FRAME_BAD, FRAME_END, FRAME_TORN, join_payloads, scan_frames
from anning.errors import CorruptLog
from anning.model.events import EventColumns
from anning.storage import records
from anning.storage.fileio import FileIO
from anning.storage.layout import segment_name, segment_number

__all__ = ["OwnWrites", "Scan", "Segment", "list_segments", "locked", "newest_started", "scan"]

T = TypeVar("T")


def list_segments(io: FileIO, directory: Path) -> list[int]:
    """The segment numbers on disk, in order."""
    found = (segment_number(name) for name in io.listdir(directory))
    return sorted(n for n in found if n is not None)


def newest_started(io: FileIO, directory: Path) -> int | None:
    """The newest segment to write to (None: no log yet). A newest one still empty while an
    older one exists is being started by another process's rotation, which holds the older
    one's lock until the new one's header is written: the older one is where a writer begins
    (it moves on under that lock, as after any rotation), or it would meet a segment whose
    first sequence cannot be told yet."""
    numbers = list_segments(io, directory)
    if len(numbers) >= 2 and io.path_size(directory / segment_name(numbers[-1])) == 0:
        return numbers[-2]
    return numbers[-1] if numbers else None


class Segment:
    """One open segment file; its descriptor closes when the last user lets go."""

    def __init__(self, io: FileIO, directory: Path, number: int, create: bool = True) -> None:
        self.io = io
        self.number = number
        self.path = directory / segment_name(number)
        self.fd = -1
        self.fd = io.open(self.path) if create or io.exists(self.path) else -1
        self.synced = 0
        self.written = -1  # where this process's last write here ended (-1: not known)
        # the sequence the next event here gets, as of offset `known_end` (-1: not known)
        self.known_end = -1
        self.next_sequence = 0
        self.sync_lock = threading.Lock()

    def __del__(self) -> None:
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                self.io.close(fd)


def locked(io: FileIO, segment: Segment, action: Callable[[], T],
           on_error: Callable[[str], BaseException]) -> T:
    """`action()` under the segment's exclusive flock (records of several processes never
    interleave). A failing lock is `on_error(why)`, raised."""
    try:
        io.lock(segment.fd)
    except OSError as exc:
        raise on_error(f"lock of {segment.path} failed: {exc}") from exc
    try:
        return action()
    finally:
        with contextlib.suppress(OSError):
            io.unlock(segment.fd)


class OwnWrites:
    """This process's writes not yet passed by its reader: (segment, start) -> (end, the
    sequence after it). The reader leaves them out (the engine took their events before
    writing them) and goes on counting after them."""

    def __init__(self) -> None:
        self.spans: dict[tuple[int, int], tuple[int, int]] = {}

    def mark(self, segment: int, start: int, end: int, next_sequence: int) -> None:
        self.spans[(segment, start)] = (end, next_sequence)

    def unmark(self, segment: int, start: int) -> None:
        self.spans.pop((segment, start), None)

    def clear(self) -> None:
        self.spans.clear()

    def keep(self, segment: int, frames: npt.NDArray[np.int64],
             visible_end: int) -> tuple[npt.NDArray[np.bool_], int, int | None]:
        """Which of the frames starting at `frames` (sorted file offsets; the last whole one
        ends at `visible_end`) are not our own writes, the sequence after the last own write
        met (0: none met), and where the read must stop (None: nowhere): the start of an own
        write only partly there yet. A write() is not atomic for a reader's pread: the read
        may end inside it, and a write forgotten when its first frame was met would have its
        later frames read as another process's, with sequences already counted (the reader
        then stopped on "sequence n, after n": the write benchmark met it). An own write is
        one write() of one or more frames, from where its first frame starts to where its
        last one ends; only those met whole are forgotten."""
        first, last = int(frames[0]), int(frames[-1])
        # a copy first: the writer thread marks its writes while this reader looks (one C
        # call under the GIL; iterating the dict itself can meet it changing size)
        met = [(start, end, after) for (number, start), (end, after) in list(self.spans.items())
               if number == segment and first <= start <= last]
        if not met:
            return np.ones(len(frames), bool), 0, None
        starts, ends, afters = np.array(met, np.int64).T
        at = np.searchsorted(frames, starts)
        met_here = frames[np.minimum(at, len(frames) - 1)] == starts
        partial = met_here & (ends > visible_end)
        cut = int(starts[partial].min()) if partial.any() else None
        if cut is not None:
            met_here &= starts < cut
        for start in starts[met_here].tolist():
            # pop: the writer unmarks a write whose fsync failed, maybe since the copy above
            self.spans.pop((segment, start), None)
        edges = np.zeros(len(frames) + 1, np.int64)
        np.add.at(edges, at[met_here], 1)
        np.add.at(edges, np.searchsorted(frames, ends[met_here]), -1)
        keep: npt.NDArray[np.bool_] = np.cumsum(edges[:-1]) == 0
        if cut is not None:
            keep &= frames < cut
        return keep, int(afters[met_here].max()) if met_here.any() else 0, cut


class Scan:
    """What a scan of a segment found: the events of whole records with their sequences (as
    columns), where they end, the sequence that comes next (0: not known), and the segment a
    seal points to (None when no seal was met)."""

    __slots__ = ("end", "events", "following", "next_sequence")

    def __init__(self, events: EventColumns, end: int, next_sequence: int,
                 following: int | None) -> None:
        self.events = events
        self.end = end
        self.next_sequence = next_sequence
        self.following = following


def scan(io: FileIO, segment: Segment, start: int, final: bool, next_sequence: int,
         own: OwnWrites | None = None) -> Scan:
    """Whole records from `start`, leaving out this process's `own` writes, with their
    sequences (`next_sequence`: the one that comes next at `start`, 0 when not known: then a
    segment's header or a write's own sequence tells). Not `final` (a live tail): stops at a
    seal. `final` (recovery, or a sealed segment): reads past seals, and a bad record with a
    good one after it raises CorruptLog naming the file and the offset; so does a sequence out
    of order."""
    size = io.size(segment.fd)
    data = io.pread(segment.fd, size - start, start) if size > start else b""
    offsets, lengths, stop, why = scan_frames(data, records.MAX_RECORD)
    cut = None
    if own is not None and own.spans and len(offsets):
        # left out before decoding: a 10,000-event batch is 100 ms to decode
        keep, after_own, cut = own.keep(segment.number, start + offsets - records.FRAME.size,
                                        start + stop)
        offsets, lengths = offsets[keep], lengths[keep]
    else:
        after_own = 0
    decoded, columns = _decode(data, offsets, lengths, segment.path, start)
    firsts: list[int] = []
    counts: list[int] = []
    expected = next_sequence
    for i, record in enumerate(decoded):
        offset = start + int(offsets[i]) - records.FRAME.size
        if isinstance(record, records.Seal):
            if record.next_sequence:
                expected = record.next_sequence
            if not final:
                return Scan(_sequenced(columns, firsts, counts),
                            start + int(offsets[i] + lengths[i]), max(expected, after_own),
                            record.next_segment)
            continue
        if isinstance(record, records.Header):
            expected = record.first_sequence
            continue
        first = record.first_sequence or expected
        if record.first_sequence and expected and record.first_sequence < expected:
            raise CorruptLog(segment.path, f"record at offset {offset}: sequence "
                             f"{record.first_sequence}, after {expected - 1}")
        if not first:
            raise CorruptLog(segment.path, f"record at offset {offset}: a write of an earlier "
                             "version where its sequence cannot be told")
        if counts and first < firsts[-1] + counts[-1]:
            # a header or seal in the middle set `expected` back: the events after it took
            # sequences already given (SPEC §4: no duplicates)
            raise CorruptLog(segment.path, f"record at offset {offset}: sequence {first}, "
                             f"after {firsts[-1] + counts[-1] - 1}")
        if record.count:
            firsts.append(first)
            counts.append(record.count)
        expected = first + record.count
    if final and why != FRAME_END:
        bad_end = stop + records.FRAME.size + records.FRAME.unpack_from(data, stop)[0] \
            if why == FRAME_BAD else len(data)
        # a bad frame with bytes after it, or a whole good frame after a torn one, is
        # corruption in the middle; else it is a torn tail
        if bad_end < len(data) or (why == FRAME_TORN and _later_record_ok(data, stop)):
            raise CorruptLog(segment.path, f"bad record at offset {start + stop}")
    # an own write only partly there: read again from its start, once it is whole
    return Scan(_sequenced(columns, firsts, counts), start + stop if cut is None else cut,
                max(expected, after_own), None)


def _sequenced(columns: EventColumns, firsts: list[int], counts: list[int]) -> EventColumns:
    """The events of the writes scanned (the first len(counts) of `columns`), the i-th write's
    numbered from firsts[i]."""
    total = sum(counts)
    if not total:
        return EventColumns.empty()
    if total < len(columns):  # a seal ended a live tail's scan before the rest
        columns = columns.take(np.arange(total))
    if len(counts) == 1:
        sequence = np.arange(firsts[0], firsts[0] + total, dtype=np.uint64)
    else:
        count = np.array(counts, np.int64)
        shift = np.array(firsts, np.int64) - (np.cumsum(count) - count)
        sequence = (np.repeat(shift, count) + np.arange(total)).astype(np.uint64)
    columns.columns["sequence"] = columns.sequence = sequence
    return columns


def _decode(data: bytes, offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64],
            path: Path, start: int) -> tuple[list[records.Seal | records.Header | records.Write],
                                             EventColumns]:
    """The records, and the events of their writes as columns (sequences still 0). Writes of
    this version are decoded in one compiled pass; what it leaves (seals, headers) one by one;
    a segment with writes of an earlier version as one msgpack stream, all in Python."""
    fast = records.decode_columns(data, offsets, lengths)
    if fast is not None:
        writes, columns = fast
        out: list[records.Seal | records.Header | records.Write] = []
        for i, write in enumerate(writes):
            if write is None:
                other = _decode_one(data, int(offsets[i]), int(lengths[i]), path, start)
                if isinstance(other, records.Write):
                    break  # an earlier version's write (or a bad one): all in Python
                out.append(other)
            else:
                out.append(write)
        else:
            return out, columns
    values = _decode_stream(data, offsets, lengths, path, start)
    slow = [_record(value, path, start + int(offsets[i]) - records.FRAME.size)
            for i, value in enumerate(values)]
    fields = [f for record in slow if isinstance(record, records.Write)
              for f in record.events or ()]
    return slow, records.columns_of([0] * len(fields), fields)


def _decode_one(data: bytes, offset: int, length: int, path: Path,
                start: int) -> records.Seal | records.Header | records.Write:
    where = start + offset - records.FRAME.size
    try:
        value = msgpack.unpackb(memoryview(data)[offset:offset + length], raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptLog(path, f"undecodable record at offset {where}: {exc}") from None
    return _record(value, path, where)


def _record(value: object, path: Path, where: int) -> records.Seal | records.Header | \
        records.Write:
    """A decoded payload as a record; CorruptLog naming its offset when it is none."""
    try:
        return records.decode(value)
    except records.RecordError as exc:
        raise CorruptLog(path, f"record at offset {where}: {exc}") from None


def _decode_stream(data: bytes, offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64],
                   path: Path, start: int) -> list[object]:
    """The payloads as one msgpack stream (three times quicker than a call a record); a
    payload that is not exactly one value is found and named record by record."""
    unpacker = msgpack.Unpacker(raw=False, use_list=False, max_buffer_size=0)
    unpacker.feed(join_payloads(data, offsets, lengths))
    values: list[object] = []
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
            raise CorruptLog(path, f"undecodable record at offset "
                             f"{start + offset - records.FRAME.size}: {exc}") from None
    raise CorruptLog(path, f"records from offset {start} do not decode one value each")


def _later_record_ok(data: bytes, pos: int) -> bool:
    """Whether a whole, valid record follows a bad one (within 64 KiB): then the bad one is
    not a torn tail but corruption in the middle."""
    size = records.FRAME.size
    for k in range(pos + 1, min(len(data), pos + (64 << 10)) - size + 1):
        length, crc = records.FRAME.unpack_from(data, k)
        end = k + size + length
        if 0 < length <= records.MAX_RECORD and end <= len(data) and zlib.crc32(
                data[k + size : end]) == crc:
            return True
    return False

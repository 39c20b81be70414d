"""The write log (SPEC §6): every real-time event, durable before it is acknowledged.

One append-only file in the data directory, shared by every worker process. A record is
`length u32 | crc32 u32 | msgpack payload`, written with one write() on an O_APPEND descriptor
(so records of several processes never interleave), then fsync'd: group commit, as a thread
that finds its record already covered by another thread's fsync does not sync again. A record's
sequence is the offset where it ends. Readers tail the file from where they stopped, taking only
whole records whose checksum holds, so every check that starts after an acknowledgement sees it,
in every process. An fsync or write failure is never retried into a success: the write fails and
writes stop (WritesStopped) until an operator restarts; checks go on.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

import msgpack

__all__ = ["CorruptLog", "EventLog", "WritesStopped"]

log = logging.getLogger("anning.eventlog")
_FRAME = struct.Struct("<II")
MAX_RECORD = 1 << 20


class WritesStopped(Exception):
    """Writes are stopped after a failure of the disk; checks go on (UNAVAILABLE for writes)."""


class CorruptLog(Exception):
    """A bad record before the end of the log: start-up stops, naming the file and offset."""


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode(record: Iterable[object]) -> bytes:
    return frame(msgpack.packb(list(record), use_bin_type=True))


class EventLog:
    """Append and tail one log file; safe across threads and processes."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._synced = 0
        self._read = 0
        self.failure: str | None = None

    # -- writing -----------------------------------------------------------------------------
    def append(self, records: list[bytes]) -> int:
        """Write framed records and make them durable; return the sequence of the last."""
        data = b"".join(records)
        with self._write_lock:
            if self.failure:
                raise WritesStopped(self.failure)
            try:
                written = os.write(self.fd, data)
                if written != len(data):
                    raise OSError(28, f"short write: {written} of {len(data)} bytes")
                end = os.lseek(self.fd, 0, os.SEEK_CUR)
            except OSError as exc:
                self._stop(f"write to {self.path} failed: {exc}")
                raise WritesStopped(self.failure) from exc
        self._sync(end)
        return end

    def _sync(self, end: int) -> None:
        with self._sync_lock:
            if self._synced >= end:  # another thread's fsync, begun after our write, covered it
                return
            if self.failure:
                raise WritesStopped(self.failure)
            target = os.fstat(self.fd).st_size
            try:
                os.fsync(self.fd)
            except OSError as exc:
                self._stop(f"fsync of {self.path} failed: {exc}")
                raise WritesStopped(self.failure) from exc
            self._synced = max(self._synced, target)

    def _stop(self, why: str) -> None:
        self.failure = why
        log.error("writes stopped: %s", why)

    # -- reading -----------------------------------------------------------------------------
    def tail(self) -> list[list]:
        """The records appended since the last call (by any process), in order."""
        if os.fstat(self.fd).st_size <= self._read:
            return []
        with self._read_lock:
            records, self._read = self._scan(self._read, final=False)
            return records

    def replay(self) -> list[list]:
        """Every record from the start (recovery). A torn last record is dropped with a
        warning and cut off; a bad record before the end raises CorruptLog."""
        with self._read_lock:
            records, end = self._scan(0, final=True)
            size = os.fstat(self.fd).st_size
            if end < size:
                log.warning("%s: dropping a torn last record at offset %d (%d bytes)",
                            self.path, end, size - end)
                os.ftruncate(self.fd, end)
                os.fsync(self.fd)
            self._read = end
            self._synced = end
            return records

    def _scan(self, start: int, final: bool) -> tuple[list[list], int]:
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, size - start, start) if size > start else b""
        records, pos = [], 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            end = pos + _FRAME.size + length
            if length > MAX_RECORD or end > len(data):
                break
            payload = data[pos + _FRAME.size : end]
            if zlib.crc32(payload) != crc:
                if final and end < len(data):
                    raise CorruptLog(f"{self.path}: bad record at offset {start + pos}")
                break
            try:
                records.append(msgpack.unpackb(payload, raw=False))
            except (ValueError, msgpack.UnpackException) as exc:
                raise CorruptLog(f"{self.path}: undecodable record at offset {start + pos}: "
                                 f"{exc}") from None
            pos = end
        if final and pos < len(data) and _later_record_ok(data, pos):
            raise CorruptLog(f"{self.path}: bad record at offset {start + pos}")
        return records, start + pos

    def reopen(self) -> EventLog:
        """The same log through a new descriptor, read position kept (for a forked worker)."""
        other = EventLog(self.path)
        other._read = self._read
        other._synced = self._synced
        os.close(self.fd)
        return other

    def lag(self) -> int:
        """Bytes appended (by any process) that this reader has not taken in yet."""
        return max(0, os.fstat(self.fd).st_size - self._read)

    def close(self) -> None:
        os.close(self.fd)


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

"""The file operations of the data directory, in one replaceable place.

Production uses `OS_IO`: plain OS calls. Tests put a layer in its place
(`anning.testing.crashio.CrashIO`) that keeps the bytes not yet fsync'd apart and throws them
away at a simulated crash, or fails an fsync or a write with ENOSPC on request; the code above
it is the same either way. Everything anning writes goes through here: the write log, and the
files written whole (snapshots, checkpoints) through the one atomic `replace_file`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from os import PathLike

from anning.storage.layout import temporary_name

__all__ = ["OS_IO", "FileIO"]

Buffer = bytes | bytearray | memoryview


class FileIO:
    """What anning asks of the file system. Every method is a thin OS call."""

    def open(self, path: str | PathLike[str]) -> int:
        """Open (create) a file for appending and reading."""
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)

    def create(self, path: str | PathLike[str]) -> int:
        """Create (or empty) a file for writing from its start."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: Buffer) -> int:
        return os.write(fd, data)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def lock(self, fd: int) -> None:
        """Exclusive across processes (flock), for one append or one seal."""
        fcntl.flock(fd, fcntl.LOCK_EX)

    def unlock(self, fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

    def exists(self, path: str | PathLike[str]) -> bool:
        return os.path.exists(path)

    def path_size(self, path: str | PathLike[str]) -> int | None:
        """The size of the file at `path`; None when there is none."""
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def listdir(self, path: str | PathLike[str]) -> list[str]:
        return os.listdir(path)

    def unlink(self, path: str | PathLike[str]) -> None:
        os.unlink(path)

    def rename(self, source: str | PathLike[str], target: str | PathLike[str]) -> None:
        """Atomically put `source` in the place of `target` (durable after fsync_dir)."""
        os.replace(source, target)

    def fsync_dir(self, path: str | PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace_file(self, path: str | PathLike[str], chunks: Iterable[Buffer]) -> None:
        """Write a whole file atomically: a temporary file, fsync, rename over `path`, fsync of
        the directory. A reader sees the old file or the whole new one, before and after a
        crash; a crash leaves at most a temporary file, which `sweep_temporaries` removes."""
        path = os.fspath(path)
        tmp = temporary_name(path)
        fd = self.create(tmp)
        try:
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                while view:
                    view = view[self.write(fd, view):]
            self.fsync(fd)
        except BaseException:
            self.close(fd)
            self.unlink(tmp)
            raise
        self.close(fd)
        self.rename(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")


OS_IO = FileIO()

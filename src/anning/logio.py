"""The file operations of the write log and its checkpoints, in one replaceable place.

Production uses `OS_IO`: plain OS calls. Tests put a layer in its place that keeps the bytes not
yet fsync'd apart and throws them away at a simulated crash, or fails an fsync or a write with
ENOSPC on request; the log's code above it is the same either way.
"""

from __future__ import annotations

import fcntl
import os
from os import PathLike

__all__ = ["OS_IO", "FileIO"]


class FileIO:
    """What the log asks of the file system. Every method is a thin OS call."""

    def open(self, path: str | PathLike[str]) -> int:
        """Open (create) a file for appending and reading."""
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes) -> int:
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

    def listdir(self, path: str | PathLike[str]) -> list[str]:
        return os.listdir(path)

    def unlink(self, path: str | PathLike[str]) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str | PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace_file(self, path: str | PathLike[str], chunks: list[bytes]) -> None:
        """Write a whole file: temporary file, fsync, rename over `path`, directory fsync."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                while view:
                    view = view[self.write(fd, view):]
            self.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")


OS_IO = FileIO()

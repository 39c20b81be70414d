"""What lives in a data directory, under which names, and the locks that share it.

    index.anx           the binary snapshot (anning.storage.snapshot)
    events.ckpt         the events checkpoint (anning.storage.checkpoint)
    events-NNNNNN.log   the write log's segments (anning.storage.wal)
    checkpoint.lock     one checkpoint at a time, across processes
    load.lock           one snapshot load at a time, across processes
    rejects.csv         the bad rows of the last snapshot load
    last-load.json      how the last snapshot load ended, by any process (anning.storage.loadrecord)
    .NAME.tmpPID        a file being written whole by process PID (FileIO.replace_file)

Every name is made here; no other module spells one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

__all__ = [
    "CHECKPOINT_NAME",
    "SNAPSHOT_NAME",
    "DataDir",
    "exclusive",
    "segment_name",
    "segment_number",
    "sweep_temporaries",
    "temporary_name",
]

SNAPSHOT_NAME = "index.anx"
CHECKPOINT_NAME = "events.ckpt"
LEGACY_LOG_NAME = "events.log"  # a single-file log of an early version: becomes segment 1
REJECTS_NAME = "rejects.csv"
LAST_LOAD_NAME = "last-load.json"
_SEGMENT = re.compile(r"^events-(\d{6,})\.log$")
_TEMPORARY = re.compile(r"^\.(.+)\.tmp(\d+)$")


def segment_name(number: int) -> str:
    return f"events-{number:06d}.log"


def segment_number(name: str) -> int | None:
    """The number of a segment file's name, or None for any other name."""
    m = _SEGMENT.match(name)
    return int(m.group(1)) if m else None


def temporary_name(path: str | PathLike[str]) -> str:
    """Where a file is written before it is renamed over `path`: hidden, named by our pid so
    that a sweep can tell a dead writer's leftover from a live writer's work."""
    head, tail = os.path.split(os.fspath(path))
    return os.path.join(head, f".{tail}.tmp{os.getpid()}")


def sweep_temporaries(directory: str | PathLike[str]) -> list[str]:
    """Delete the temporary files of writers that died (a load or checkpoint killed mid-way:
    as big as what they were writing). Returns the names removed."""
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TEMPORARY.match(name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(2)), 0)
            continue  # alive: its writer is at work
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, someone else's
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def exclusive(path: str | PathLike[str]) -> Iterator[bool]:
    """A lock file across processes, without waiting: yields whether we hold it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


class DataDir:
    """The paths of one data directory."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def snapshot(self) -> Path:
        return self.path / SNAPSHOT_NAME

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def rejects(self) -> Path:
        return self.path / REJECTS_NAME

    @property
    def last_load(self) -> Path:
        return self.path / LAST_LOAD_NAME

    @property
    def metrics(self) -> Path:
        return self.path / ".metrics"

    def segment(self, number: int) -> Path:
        return self.path / segment_name(number)

    def lock(self, name: str) -> contextlib.AbstractContextManager[bool]:
        """`checkpoint` or `load`: held by one process at a time (see `exclusive`)."""
        return exclusive(self.path / f"{name}.lock")

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r})"

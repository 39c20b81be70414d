"""A file layer for tests that can lose power: `CrashIO` keeps what is durable apart from what is
only written, so `crash()` throws away what an fsync had not covered yet.

Writes go to the real files at once (every reader sees them, like the page cache). Per file
(inode) the layer remembers its durable length, set by fsync. Per directory it keeps a journal
of the names created, unlinked or renamed since the directory's last fsync_dir. A crash:
- cuts every file back to its durable length (or, with `rng`, keeps a random part of what is
  not durable: a power loss may write some dirty pages and not others; `keep_unsynced` keeps
  exactly that many bytes),
- undoes the journalled name changes (with `rng`, each one only maybe), so a file created since
  its directory's last fsync_dir disappears, an unlink comes back, a rename is undone,
- and from then on every call fails with EIO (the old process is dead; a test starts a new
  Engine on the same directory with a new CrashIO, like a restart).

Faults: `fail_fsync_next(n, errno)`, `enospc_after(nbytes, short=...)` then `space_back()`,
and `arm(...)` to crash just before a chosen call (the n-th from now, or the next of one kind).
"""

from __future__ import annotations

import errno as errnos
import fcntl
import itertools
import os
import random
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from typing import Any

from anning.storage.fileio import Buffer, FileIO

__all__ = ["CrashIO", "PowerLoss"]


class PowerLoss(OSError):
    """What every call of a crashed layer raises (an I/O error, as the engine would see)."""

    def __init__(self) -> None:
        super().__init__(errnos.EIO, "simulated power loss")


@dataclass
class _File:
    path: str  # where the inode is linked now (a stash path once unlinked)
    durable: int  # bytes an fsync has covered


@dataclass
class _Arm:
    at_call: int | None
    op: str | None
    rng: random.Random | None
    keep_unsynced: int | None


class CrashIO(FileIO):
    """The engine's file layer over real files, with power loss and faults on request."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # one call at a time against a crash
        self._fds: dict[int, int] = {}  # fd -> inode
        self._files: dict[int, _File] = {}  # inode -> state
        # directory -> name changes not yet durable
        self._journal: dict[str, list[tuple[Any, ...]]] = {}
        self._stash: str | None = None
        self._names = itertools.count()
        self.calls = 0  # every call so far (crash points are counted in these)
        self.counts: dict[str, int] = {}  # calls by kind
        self.dead = False
        self._arm: _Arm | None = None
        self._fsync_failures: list[int] = []
        self._free: int | None = None  # bytes the disk can still take (None: no limit)
        self._short = True
        # called (outside the layer's lock) with each call's name before it runs: a test may
        # run another thread's write at an exact point
        self.hook: Callable[[str], None] | None = None

    # -- faults ------------------------------------------------------------------------------
    def fail_fsync_next(self, n: int = 1, errno: int = errnos.EIO) -> None:
        with self._lock:
            self._fsync_failures += [errno] * n

    def enospc_after(self, nbytes: int, short: bool = True) -> None:
        """The disk takes `nbytes` more; a write past that writes what fits and returns the short
        count (`short`, and something fits) or raises ENOSPC writing nothing."""
        with self._lock:
            self._free, self._short = nbytes, short

    def space_back(self) -> None:
        with self._lock:
            self._free = None

    def arm(self, after: int | None = None, op: str | None = None,
            rng: random.Random | None = None, keep_unsynced: int | None = None) -> None:
        """Crash just before a later call: the `after`-th from now (0: the next), or the next
        call named `op` (both: the first `op` call once `after` calls have passed)."""
        with self._lock:
            at = self.calls + (after or 0) if after is not None or op is None else None
            self._arm = _Arm(at, op, rng, keep_unsynced)

    def disarm(self) -> None:
        with self._lock:
            self._arm = None

    # -- the crash ---------------------------------------------------------------------------
    def crash(self, rng: random.Random | None = None, keep_unsynced: int | None = None) -> None:
        """Power loss now: see the module's docstring. Idempotent."""
        with self._lock:
            if self.dead:
                return
            self.dead = True
            for ino, state in self._files.items():
                try:
                    st = os.stat(state.path)
                except FileNotFoundError:
                    continue
                if st.st_ino != ino:  # the name is another file's by now
                    continue
                size = st.st_size
                extra = max(0, size - state.durable)
                if keep_unsynced is not None:
                    extra = min(extra, keep_unsynced)
                elif rng is not None:
                    extra = rng.randint(0, extra)
                else:
                    extra = 0
                if state.durable + extra < size:
                    os.truncate(state.path, state.durable + extra)
            for ops in self._journal.values():
                for op in reversed(ops):
                    if rng is None or rng.random() < 0.5:
                        _undo(op)
                    else:
                        _forget(op)
            self._journal.clear()

    def _before(self, op: str) -> None:
        if self.hook is not None:
            self.hook(op)

    def _enter(self, op: str) -> None:
        """Count a call (under the lock); crash first if armed for it; fail if dead."""
        if self.dead:
            raise PowerLoss()
        self.calls += 1
        self.counts[op] = self.counts.get(op, 0) + 1
        arm = self._arm
        if arm is not None and (arm.at_call is None or self.calls > arm.at_call) and \
                (arm.op is None or arm.op == op):
            self._arm = None
            self.crash(arm.rng, arm.keep_unsynced)
            raise PowerLoss()

    # -- the file operations -----------------------------------------------------------------
    def open(self, path: str | PathLike[str]) -> int:
        path = os.fspath(path)
        self._before("open")
        with self._lock:
            self._enter("open")
            existed = os.path.exists(path)
            fd = super().open(path)
            ino = os.fstat(fd).st_ino
            self._fds[fd] = ino
            if not existed:
                self._files[ino] = _File(path, 0)
                self._log(path, ("create", path))
            elif ino not in self._files or self._files[ino].path != path:
                self._files[ino] = _File(path, os.fstat(fd).st_size)  # on disk already
            return fd

    def close(self, fd: int) -> None:
        with self._lock:  # a dead process's descriptors close too (they are its own)
            self._fds.pop(fd, None)
            os.close(fd)

    def write(self, fd: int, data: Buffer) -> int:
        self._before("write")
        with self._lock:
            self._enter("write")
            data = bytes(data)
            if self._free is not None and len(data) > self._free:
                if not self._short or self._free == 0:
                    raise OSError(errnos.ENOSPC, "No space left on device (simulated)")
                data = data[:self._free]
            written = os.write(fd, data)
            if self._free is not None:
                self._free -= written
            return written

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._before("pread")
        with self._lock:
            self._enter("pread")
            return os.pread(fd, size, offset)

    def size(self, fd: int) -> int:
        self._before("size")
        with self._lock:
            self._enter("size")
            return os.fstat(fd).st_size

    def fsync(self, fd: int) -> None:
        self._before("fsync")
        with self._lock:
            self._enter("fsync")
            if self._fsync_failures:
                code = self._fsync_failures.pop(0)
                raise OSError(code, f"{os.strerror(code)} (simulated fsync failure)")
            size = os.fstat(fd).st_size
        self._before("fsync-running")  # a slow disk: a test may hold this fsync here
        os.fsync(fd)  # outside the lock: other threads write meanwhile (group commit)
        with self._lock:
            if self.dead:  # the power went while the disk was busy: not acknowledged
                raise PowerLoss()
            state = self._files.get(self._fds.get(fd, -1))
            if state is not None:
                state.durable = max(state.durable, min(size, os.fstat(fd).st_size))

    def truncate(self, fd: int, size: int) -> None:
        self._before("truncate")
        with self._lock:
            self._enter("truncate")
            before = os.fstat(fd).st_size
            os.ftruncate(fd, size)
            if self._free is not None:
                self._free += max(0, before - size)
            state = self._files.get(self._fds.get(fd, -1))
            if state is not None:
                state.durable = min(state.durable, size)

    def lock(self, fd: int) -> None:
        self._before("lock")
        with self._lock:
            self._enter("lock")
        fcntl.flock(fd, fcntl.LOCK_EX)  # may wait: never under our lock

    def unlock(self, fd: int) -> None:
        self._before("unlock")
        fcntl.flock(fd, fcntl.LOCK_UN)  # a dead process's locks go with it too

    def exists(self, path: str | PathLike[str]) -> bool:
        self._before("exists")
        with self._lock:
            self._enter("exists")
            return os.path.exists(path)

    def path_size(self, path: str | PathLike[str]) -> int | None:
        self._before("path_size")
        with self._lock:
            self._enter("path_size")
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None

    def listdir(self, path: str | PathLike[str]) -> list[str]:
        self._before("listdir")
        with self._lock:
            self._enter("listdir")
            return os.listdir(path)

    def unlink(self, path: str | PathLike[str]) -> None:
        path = os.fspath(path)
        self._before("unlink")
        with self._lock:
            self._enter("unlink")
            stash = self._stash_path(path)
            os.rename(path, stash)  # kept aside until the directory's fsync makes it final
            self._moved(path, stash)
            self._log(path, ("unlink", path, stash))

    def fsync_dir(self, path: str | PathLike[str]) -> None:
        path = os.path.abspath(os.fspath(path))
        self._before("fsync_dir")
        with self._lock:
            self._enter("fsync_dir")
            super().fsync_dir(path)
            for op in self._journal.pop(path, []):
                _forget(op)

    def create(self, path: str | PathLike[str]) -> int:
        path = os.fspath(path)
        self._before("create")
        with self._lock:
            self._enter("create")
            existed = os.path.exists(path)
            fd = super().create(path)
            ino = os.fstat(fd).st_ino
            self._fds[fd] = ino
            self._files[ino] = _File(path, 0)  # emptied, if it was there: nothing of it durable
            if not existed:
                self._log(path, ("create", path))
            return fd

    def rename(self, source: str | PathLike[str], target: str | PathLike[str]) -> None:
        """Counts only once its directory is fsync'd: a crash before that brings the old
        file back (kept aside until then) and the new one under its temporary name."""
        source, target = os.fspath(source), os.fspath(target)
        self._before("rename")
        with self._lock:
            self._enter("rename")
            stash = None
            if os.path.exists(target):
                stash = self._stash_path(target)
                os.link(target, stash)  # the old file, for a crash to bring back
                self._moved(target, stash)
            os.replace(source, target)
            self._moved(source, target)
            self._log(target, ("rename", source, target, stash))

    # -- bookkeeping -------------------------------------------------------------------------
    def _log(self, path: str, op: tuple[Any, ...]) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        self._journal.setdefault(directory, []).append(op)

    def _stash_path(self, path: str) -> str:
        if self._stash is None:  # beside the data directory: same file system for rename
            parent = os.path.dirname(os.path.dirname(os.path.abspath(path)))
            self._stash = tempfile.mkdtemp(prefix=".crashio-", dir=parent)
        return os.path.join(self._stash, f"{next(self._names)}-{os.path.basename(path)}")

    def _moved(self, old: str, new: str) -> None:
        for state in self._files.values():
            if state.path == old:
                state.path = new


def _undo(op: tuple[Any, ...]) -> None:
    """Undo one name change at a crash (each tolerates what later undos already did)."""
    if op[0] == "create":
        if os.path.exists(op[1]):
            os.unlink(op[1])
    elif op[0] == "unlink":
        os.replace(op[2], op[1])
    elif op[0] == "rename":
        tmp, path, stash = op[1:]
        if os.path.exists(path):
            os.replace(path, tmp)  # the new file goes back to its temporary name
        if stash is not None:
            os.replace(stash, path)


def _forget(op: tuple[Any, ...]) -> None:
    """A name change became durable: drop what was kept to undo it."""
    stash = op[2] if op[0] == "unlink" else op[3] if op[0] == "rename" else None
    if stash is not None and os.path.exists(stash):
        os.unlink(stash)

"""Real faults of the disk for a real server process: a tmpfs that fills up, a file-size limit
(RLIMIT_FSIZE) set on the running process, and fsync failing with EIO through a shared library
preloaded into it (LD_PRELOAD) - the process makes the same system calls as in production and
gets the errors a failing disk gives."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FAIL_FSYNC_ENV", "build_fsync_shim", "fill_up", "tmpfs"]

FAIL_FSYNC_ENV = "ANNING_TEST_FAIL_FSYNC"  # names a file: while it exists, fsync fails

_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* fsync and fdatasync fail with EIO while the file named by $%(env)s exists. */
static int failing(void) {
    const char *flag = getenv("%(env)s");
    return flag != NULL && access(flag, F_OK) == 0;
}

int fsync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (failing()) { errno = EIO; return -1; }
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}
"""


def build_fsync_shim(directory: Path) -> Path | None:
    """Compile the shim into `directory`; None when there is no C compiler."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return None
    source = directory / "failfsync.c"
    library = directory / "failfsync.so"
    source.write_text(_SHIM % {"env": FAIL_FSYNC_ENV}, encoding="utf-8")
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(source),
                    "-ldl"], check=True, capture_output=True, timeout=120)
    return library


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[bool]:
    """A tmpfs of `size_bytes` mounted on `path` for the block; yields False (and mounts
    nothing) where mounting is not permitted (not root, or no CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                              str(path)], capture_output=True, timeout=30).returncode == 0 \
        if shutil.which("mount") else False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill_up(directory: Path) -> Path:
    """A file in `directory` that takes all the space left there (written until ENOSPC)."""
    filler = directory / "filler"
    chunk = b"\0" * (64 << 10)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        # the last whole pages: smaller writes until not one byte more fits
        for size in (4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler

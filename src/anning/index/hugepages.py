"""Arrays on transparent huge pages, for the parts of an index that every check probes.

A check reads one random Bloom block (and, for the few that may be present, a random directory
slot): over 4 KiB pages nearly every such read also misses the TLB, and in a virtual machine a
TLB miss is a two-level page walk. On 2 MiB pages the same checks run about a third quicker
(10M entries: 19.7 ns a check against 28.7 with huge pages refused to the process). numpy asks
for huge pages for its larger arrays, but an array carved from a reused part of the heap does
not get them; these come from a fresh anonymous mapping, 2 MiB aligned, with MADV_HUGEPAGE
given before the first touch. Where the kernel has no transparent huge pages, or they are set
to `never` (/sys/kernel/mm/transparent_hugepage/enabled), they are plain arrays, and a loaded
index leaves its arrays on the file's pages: a copy would gain nothing and cost memory.
"""

from __future__ import annotations

import contextlib
import mmap
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["copy", "enabled", "worth", "zeros"]

HUGE_PAGE = 2 << 20
SMALLEST = 4 << 20  # below this the TLB covers an array well enough on small pages
_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)  # None: no transparent huge pages here
_NO_ADVICE = getattr(mmap, "MADV_NOHUGEPAGE", None)
THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def enabled() -> bool:
    """Whether the kernel would give this process transparent huge pages when asked
    (`always` or `madvise`), read afresh: an operator may switch them at run time."""
    if _ADVICE is None:
        return False
    try:
        return "[never]" not in THP_ENABLED.read_text()
    except OSError:  # a kernel built without them
        return False


def worth(nbytes: int) -> bool:
    """Whether an array of `nbytes` gains from huge pages here."""
    return nbytes >= SMALLEST and enabled()


def zeros(n: int, dtype: npt.DTypeLike) -> np.ndarray:
    """A zeroed, writable 1-d array of `n` items, on huge pages where it is large enough."""
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if not worth(nbytes):
        return np.zeros(n, dtype)
    # Private and anonymous: zero pages never touched yet, shared copy-on-write with a worker
    # forked later (a shared anonymous mapping would be shmem, where THP is usually off).
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -np.frombuffer(region, np.uint8, 1).ctypes.data % HUGE_PAGE
    whole = nbytes // HUGE_PAGE * HUGE_PAGE
    assert _ADVICE is not None  # worth() said so
    with contextlib.suppress(OSError):  # refused: small pages then
        region.madvise(_ADVICE, start, whole)
        # The tail on small pages: a huge page for its last few bytes would hold up to 2 MiB
        # that nothing uses (the directory is 2^d + 1 slots: 4 bytes past a huge page).
        if whole < nbytes and _NO_ADVICE is not None:
            region.madvise(_NO_ADVICE, start + whole, len(region) - start - whole)
    return np.frombuffer(region, dtype, n, start)


def copy(array: np.ndarray) -> np.ndarray:
    """`array` (1-d) copied onto huge pages, when it is large enough to gain from them (else
    the array itself: a copy onto small pages would only unshare a file's pages)."""
    if not worth(array.nbytes):
        return array
    out = zeros(len(array), array.dtype)
    out[:] = array
    return out

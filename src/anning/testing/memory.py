"""What a loaded snapshot costs in resident memory, measured in a fresh process.

`touched_rss(path)` runs `python -m anning.testing.memory PATH` in a process of its own (no
pages left over from whatever built or wrote the file), which imports anning, notes its
resident set, reads the snapshot, touches every page of every array of the index (as a day of
random checks would) and notes it again. The growth is what the index really costs, to be set
beside `nbytes`, what it says it costs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

__all__ = ["Resident", "touched_rss"]

PAGE = 4096


@dataclass(frozen=True)
class Resident:
    """Bytes resident in the measuring process: growth over the load and the touch, split into
    anonymous memory (the copies, the tables) and file pages mapped in (the entries)."""

    entries: int
    nbytes: int
    rss: int
    anon: int
    file: int
    huge: int  # anonymous memory on transparent huge pages, after the touch
    seconds: float
    copied: list[str]  # of the Bloom filter and directory, those not served from the file


    @property
    def ratio(self) -> float:
        return self.rss / self.nbytes if self.nbytes else float("inf")


def touched_rss(path: str | PathLike[str], thp_enabled: str | PathLike[str] | None = None,
                timeout: float = 600.0) -> Resident:
    """Measure `path` in a fresh process; `thp_enabled`: a file read instead of the kernel's
    /sys/kernel/mm/transparent_hugepage/enabled (to see what a machine set to `never` does)."""
    command = [sys.executable, "-m", "anning.testing.memory", str(path)]
    if thp_enabled is not None:
        command.append(str(thp_enabled))
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode:
        raise RuntimeError(f"measuring {path} failed ({out.returncode}):\n{out.stderr}")
    return Resident(**json.loads(out.stdout))


def _status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile of this process, in bytes; AnonHugePages from smaps_rollup."""
    fields: dict[str, int] = {}
    for name in ("/proc/self/status", "/proc/self/smaps_rollup"):
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "AnonHugePages"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def _backing_file(address: int) -> str:
    """The file mapped at `address` in this process ("" for anonymous memory)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo <= address < hi:
            return fields[5] if len(fields) > 5 else ""
    return ""


def _measure(path: str, thp_enabled: str | None) -> Resident:
    import gc
    import os
    import time

    import numpy as np

    from anning.index import hugepages
    from anning.storage.snapshot import read_snapshot

    if thp_enabled is not None:
        hugepages.THP_ENABLED = Path(thp_enabled)
    gc.collect()
    before = _status()
    started = time.perf_counter()
    index = read_snapshot(path)
    core = index._core
    for array in (core.directory, core.words, core.bloom, core.sender_scope,
                  core.sender_entity):
        raw = array.reshape(-1).view(np.uint8)
        if raw.size:  # a byte of every page, and the last
            int(raw[::PAGE].sum(dtype=np.uint64)) + int(raw[-1])
    seconds = time.perf_counter() - started
    gc.collect()
    after = _status()
    return Resident(
        entries=len(index), nbytes=index.nbytes,
        rss=after["VmRSS"] - before["VmRSS"],
        anon=after.get("RssAnon", 0) - before.get("RssAnon", 0),
        file=after.get("RssFile", 0) - before.get("RssFile", 0),
        huge=after.get("AnonHugePages", 0), seconds=round(seconds, 3),
        copied=[name for name in ("bloom", "directory")
                if _backing_file(getattr(core, name).ctypes.data) != os.path.realpath(path)])


if __name__ == "__main__":
    import dataclasses

    print(json.dumps(dataclasses.asdict(
        _measure(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))))

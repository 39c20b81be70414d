"""What the machine did meanwhile, from /proc (Linux): CPU and context switches of a process
tree, the machine's busy time, memory, and what an fsync costs on a disk.

The benchmarks run servers and load on one machine, so every figure is the machine's as much as
anning's: a note beside a figure says how many cores the server and the clients used and how
busy the rest of the machine was (`other work`), so that a run disturbed by something else can
be told from a slow one.
"""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path

__all__ = ["GIB", "Accounted", "cpu_of", "disk", "machine_busy", "mem_available", "others",
           "peak_rss", "process_tree", "rss", "switches_of"]

GIB = 1 << 30
_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """pid and its descendants, parents first."""
    out = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                for child in text.split():
                    out.extend(process_tree(int(child)))
    return out


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of a process so far; 0 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def switches_of(pid: int) -> int:
    """Context switches of all the threads of a process (voluntary and not)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
    return total


def machine_busy() -> tuple[float, float]:
    """(busy seconds, total seconds) of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


def others(seconds: float = 2.0) -> float:
    """Cores busy over `seconds` while the benchmark runs nothing: the machine's other work."""
    busy0 = machine_busy()
    time.sleep(seconds)
    busy1 = machine_busy()
    return round((busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * (os.cpu_count() or 1), 2)


class Accounted:
    """A server made of processes (`pids()`): their CPU and context switches."""

    def pids(self) -> list[int]:
        raise NotImplementedError

    def cpu(self) -> dict[int, float]:
        return {pid: cpu_of(pid) for pid in self.pids()}

    def switches(self) -> int:
        return sum(switches_of(pid) for pid in self.pids())


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def disk(directory: Path) -> dict[str, str | float]:
    """The file system type (on tmpfs fsync costs nothing) and a median small-append fsync:
    the least one group commit costs."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(directory)], capture_output=True,
                          text=True).stdout.strip()
    probe = directory / "fsync-probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(50):
            os.write(fd, b"x" * 64)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        probe.unlink()
    return {"fs": kind, "fsync_ms": round(statistics.median(times) * 1e3, 3)}

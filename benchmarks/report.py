"""A benchmark report a person would rather look at: `benchmarks/report/index.html` with plots.

    python -m benchmarks.report                   # up to 10,000,000 entries (~10 min on 2 cores)
    python -m benchmarks.report --quick           # up to 100,000 entries, short runs (~1 min)
    python benchmarks/report.py ...               # the same

What it runs, each figure beside its peers from the same run (and in the table, as ratios):

- ns per check against the list's size (--sizes): anning's batch `check_ids` (the full check:
  sender, entity, global, category), numpy `searchsorted`, a Python set, the rbloom Bloom filter
  (PyPI) and Redis (SMISMEMBER, pipelined; when `redis-server` is installed, up to --redis-max
  entries); the peers answer only "is this number listed";
- bytes per entry at the largest size: anning's `nbytes` and its touched resident memory in a
  fresh process (anning.testing.memory), the peers' memory;
- `anning load` rows/s of a clean CSV (benchmarks.lib.csvgen) against Python's csv module;
- unary Check latency, one worker: `h2load` (Debian's nghttp2-client: a native client, so the
  figure is the server's) and the Python client, sequential and paced at --rate, against a
  grpc.aio constant-answer servicer of the same proto (benchmarks.lib.peers); CDFs plotted;
- checks/s of each client mode there is (unary, batch, columns, stream, and the coalescing
  ones where the client has them).

Every answer is checked (anning's against the peers and its metrics' exact counts, the peers
against each other); a wrong one fails the run (exit 1). Missed targets are only reported. The
output folder is not in git.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/report.py`: run as the package it is
    root = Path(__file__).resolve().parents[1]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    os.execv(sys.executable, [sys.executable, "-m", "benchmarks.report", *sys.argv[1:]])

import multiprocessing
import subprocess

import numpy as np

from anning import write_snapshot
from anning.testing.memory import touched_rss
from benchmarks.lib import datagen, h2load
from benchmarks.lib.csvgen import write_clean_csv
from benchmarks.lib.figures import Figures
from benchmarks.lib.htmlreport import write_report
from benchmarks.lib.machine import others
from benchmarks.lib.peerset import MembershipPeers
from benchmarks.lib.servicefigures import client_modes, unary_latency

OUT = Path(__file__).resolve().parent / "report"


def timed(fn, rounds: int = 5) -> tuple[float, object]:
    """Median seconds of `rounds` calls (one warm-up), and the last result."""
    result = fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def core(sizes: list[int], queries: int, redis_max: int, figures: Figures,
         series: dict, work: Path) -> None:
    """ns per check by size; bytes per entry (and touched RSS) at the largest size."""
    for n in sizes:
        print(f"core: {n:,} entries", flush=True)
        _core_size(n, n == sizes[-1], queries, n <= redis_max, figures, series, work)


def _core_size(n: int, largest: bool, queries: int, redis: bool, figures: Figures,
               series: dict, work: Path) -> None:
    data = datagen.generate(n, queries)
    index = datagen.build_index(data.universe, data.entries)
    q = data.queries
    ids = index.sender_ids(q.sender_strings(data.universe))
    seconds, out = timed(lambda: index.check_ids(ids, q.numbers))
    peers = MembershipPeers(data.entries.numbers, redis=redis)
    try:
        member = peers.searchsorted(q.numbers)
        # anning answers every listed number with a marketing entry for its sender, and
        # nothing for a number that is not listed at all
        hit = q.present & ((q.entry_mask & 1) == 1)
        if np.any(out[hit] == 0) or np.any(out[~member] != 0):
            figures.fail(f"core {n:,}: anning's answers disagree with the list")
        found = {"anning": seconds / len(q.numbers) * 1e9,
                 **peers.ns_per_check(q.numbers, min(queries, 200_000), member, figures)}
        for name, ns in found.items():
            series.setdefault("ns/check", {}).setdefault(name, []).append((n, ns))
            figures.add(f"ns/check at {n:,}", name, ns, "ns/check")
        if largest:
            memory = series.setdefault("bytes/entry", {})
            memory["anning nbytes"] = index.nbytes / n
            path = work / "index.anx"
            write_snapshot(index, path)
            r = touched_rss(path)
            path.unlink()
            memory["anning touched RSS"] = r.rss / r.entries
            figures.compare("touched RSS after load", "B/entry", "anning RSS",
                            [r.rss / r.entries], "nbytes", [r.nbytes / r.entries],
                            goal="ratio <= 1.05", note=f"{n:,} entries, fresh process")
            figures.add("bytes/entry", "anning", index.nbytes / n, "B/entry")
            for name, b in peers.bytes_per_entry().items():
                memory[name] = b
                figures.add("bytes/entry", name, b, "B/entry")
    finally:
        peers.close()


def load(rows: int, figures: Figures, series: dict, work: Path) -> None:
    """`anning load` of a clean CSV in its own process, against csv.reader over the file."""
    path = work / "snapshot.csv"
    print(f"load: writing {rows:,} rows", flush=True)
    write_clean_csv(path, rows)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "anning.cli", "load", str(path), "--data",
                          str(work / "load-data"), "--json", "--quiet"],
                         capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        figures.fail(f"anning load exited {out.returncode}: {out.stderr[-500:]}")
        return
    import json

    report = json.loads(out.stdout)
    if report["rows"] != rows or report["loaded"] < rows * 0.99:
        figures.fail(f"anning load read {report['rows']:,} of {rows:,} rows")

    def read() -> int:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader)
            return sum(1 for row in reader if int(row[0]))

    peer_seconds, peered = timed(read, rounds=1)
    if peered != rows:
        figures.fail(f"csv.reader read {peered:,} rows of {rows:,}")
    series["load rows/s"] = {"anning load (whole process)": rows / seconds,
                             "csv.reader (split and int only)": rows / peer_seconds}
    figures.add("load rows/s", "anning", rows / seconds, "rows/s", better="higher",
                note=f"{rows:,} rows, the whole `anning load` process (start, parse, "
                     f"normalise, fold, write, fsync); load alone {report['seconds']:.2f} s")
    figures.add("load rows/s", "csv.reader", rows / peer_seconds, "rows/s", better="higher")
    path.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI size: small lists, short runs")
    p.add_argument("--sizes", help="list sizes, comma-separated (default 100k,1M,10M; quick "
                                   "10k,100k)")
    p.add_argument("--queries", type=int, default=None, help="checks a size (1M; quick 200k)")
    p.add_argument("--redis-max", type=int, default=10_000_000,
                   help="largest list given to Redis (its load is the slow part)")
    p.add_argument("--load-rows", type=int, default=None, help="CSV rows (2M; quick 200k)")
    p.add_argument("--serve-entries", type=int, default=None,
                   help="the served list of the latency runs (1M; quick 100k)")
    p.add_argument("--calls", type=int, default=None, help="sequential calls (20k; quick 3k)")
    p.add_argument("--rate", type=int, default=1000, help="paced calls a second")
    p.add_argument("--paced-seconds", type=float, default=None, help="(10; quick 3)")
    p.add_argument("--reps", type=int, default=None,
                   help="latency repetitions a server, alternating (3; quick 1)")
    p.add_argument("--suites", default="core,load,latency,clients",
                   help="which to run (comma-separated; default all)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    quick = args.quick
    sizes = [int(float(s)) for s in args.sizes.split(",")] if args.sizes else \
        ([10_000, 100_000] if quick else [100_000, 1_000_000, 10_000_000])
    queries = args.queries or (200_000 if quick else 1_000_000)
    suites = set(args.suites.split(","))
    figures = Figures("anning report (medians; ratio = anning / peer)", "anning")
    figures.context.update(sizes=",".join(f"{s:,}" for s in sizes), queries=queries,
                           cpus=os.cpu_count() or 1, other_work_before=others(1.0))
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    figures.context["thp"] = thp.read_text().strip() if thp.exists() else "none"
    series: dict = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="anning-report-") as tmp:
        work = Path(tmp)
        if "core" in suites:
            core(sizes, queries, args.redis_max, figures, series, work)
        if "load" in suites:
            load(args.load_rows or (200_000 if quick else 2_000_000), figures, series, work)
        if suites & {"latency", "clients"}:
            entries = args.serve_entries or (100_000 if quick else 1_000_000)
            ctx = multiprocessing.get_context("spawn")
            if "latency" in suites:
                if h2load.available() is None:
                    figures.notes.append("h2load is not installed (apt-get install "
                                         "nghttp2-client): the native latency runs left out")
                unary_latency(ctx, work, entries, args.calls or (3_000 if quick else 20_000),
                              args.rate, args.paced_seconds or (2.0 if quick else 10.0),
                              figures, series, args.reps or (1 if quick else 3))
            if "clients" in suites:
                client_modes(work, entries, 1.0 if quick else 3.0, figures, series)
    figures.context["seconds"] = round(time.monotonic() - started, 1)
    figures.context["other_work_after"] = others(1.0)
    status = figures.finish(None)
    write_report(args.out, figures, series)
    print(f"report written to {args.out / 'index.html'}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())

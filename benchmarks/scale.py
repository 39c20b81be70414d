"""Scale run: generate N entries in chunks, build the index, answer 1M checks, report figures.

    python -m benchmarks.scale                         # 20,000,000 entries
    python -m benchmarks.scale --entries 500000000     # the SPEC §8 size: needs ~14 GiB

Reports generation and build time, ns per check (median of --repeat runs over the query set),
bytes per entry and peak RSS (ru_maxrss). Memory at the build, the peak, is about 27.5 B per
entry: the inputs (numbers 8 B, scope codes 4 B, masks 1 B), the scope ids build derives from
the codes (4 B, and an 8 B index while it does so), and the index it makes (words 8 B,
directory ~0.5-1 B, Bloom 1.25 B). The inputs are freed as soon as the index is built.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

from anning import read_snapshot, write_snapshot
from benchmarks.lib import datagen
from benchmarks.lib.machine import GIB, mem_available, peak_rss, rss

PEAK_BYTES_PER_ENTRY = 27.5


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg} (rss {rss() / GIB:.2f} GiB)", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=20_000_000)
    p.add_argument("--queries", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5, help="runs of check_ids over the queries")
    p.add_argument("--seed", type=int, default=datagen.SEED)
    p.add_argument("--snapshot", type=Path, default=None,
                   help="also time save and load of the binary snapshot at this path")
    p.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    p.add_argument("--force", action="store_true",
                   help="run even when the estimated peak exceeds the available memory")
    args = p.parse_args(argv)
    n, q = args.entries, args.queries

    estimate = PEAK_BYTES_PER_ENTRY * n + 0.5 * GIB
    available = mem_available()
    print(f"entries {n:,}, queries {q:,}; estimated peak {estimate / GIB:.1f} GiB"
          + (f", available {available / GIB:.1f} GiB" if available else ""), flush=True)
    if available and estimate > available and not args.force:
        print("not enough memory for this size (use --force to try anyway)", file=sys.stderr)
        return 2

    figures: dict[str, float | int] = {"entries_generated": n, "queries": q}
    baseline = rss()
    t0 = time.perf_counter()
    universe = datagen.make_universe(seed=args.seed)
    entries = datagen.generate_entries(n, universe, args.seed, progress=True)
    queries = datagen.generate_queries(q, entries, universe, args.seed)
    figures["generate_s"] = time.perf_counter() - t0
    figures["peak_rss_generate_gib"] = peak_rss() / GIB
    log(f"generated in {figures['generate_s']:.1f} s")

    t0 = time.perf_counter()
    index = datagen.build_index(universe, entries)
    figures["build_s"] = time.perf_counter() - t0
    figures["build_ns_per_entry"] = figures["build_s"] / n * 1e9
    figures["peak_rss_build_gib"] = peak_rss() / GIB
    log(f"built {len(index):,} entries in {figures['build_s']:.1f} s "
        f"({figures['build_ns_per_entry']:.0f} ns/entry)")
    del entries  # the inputs: 13 B/entry
    gc.collect()
    log("freed the inputs")

    t0 = time.perf_counter()
    ids = index.sender_ids(queries.sender_strings(universe, args.seed))
    figures["sender_ids_ns"] = (time.perf_counter() - t0) / q * 1e9
    times = []
    out = np.empty(q, dtype=np.uint8)
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        index.check_ids(ids, queries.numbers, out=out)
        times.append(time.perf_counter() - t0)
    figures["check_ids_ns_per_check"] = float(np.median(times)) / q * 1e9
    figures["check_ids_best_ns"] = min(times) / q * 1e9
    # A present query whose entry holds marketing must be suppressed at that scope or a more
    # specific one (random queries may hit too: their answers are not checked here).
    hit = queries.present & ((queries.entry_mask & 1) == 1)
    bad = np.flatnonzero((out[hit] == 0) | (out[hit] > queries.entry_kind[hit]))
    if bad.size:
        i = int(np.flatnonzero(hit)[bad[0]])
        print(f"WRONG ANSWER: query {i}: got {out[i]}, entry kind {queries.entry_kind[i]}",
              file=sys.stderr)
        return 1
    figures["suppressed_share"] = float((out > 0).mean())
    log(f"check_ids: {figures['check_ids_ns_per_check']:.1f} ns/check (median of {args.repeat})")

    figures["entries"] = len(index)
    figures["bytes_per_entry"] = index.nbytes / len(index)
    figures["array_bytes_per_entry"] = datagen.array_bytes(index) / len(index)
    figures["index_gib"] = index.nbytes / GIB

    if args.snapshot is not None:
        t0 = time.perf_counter()
        write_snapshot(index, args.snapshot)
        figures["save_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = read_snapshot(args.snapshot)
        figures["load_s"] = time.perf_counter() - t0
        if not np.array_equal(loaded.check_ids(ids, queries.numbers), out):
            print("WRONG ANSWER: the loaded snapshot answers differently", file=sys.stderr)
            return 1
        del loaded
        log(f"save {figures['save_s']:.1f} s, load {figures['load_s']:.1f} s")

    figures["peak_rss_gib"] = peak_rss() / GIB
    figures["peak_rss_above_start_bytes_per_entry"] = (peak_rss() - baseline) / n
    width = max(map(len, figures))
    for key, value in figures.items():
        text = f"{value:,}" if isinstance(value, int) else f"{value:,.3f}"
        print(f"{key.ljust(width)}  {text}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The nightly load at scale: a generated CSV of --rows rows (default 10M; the target is 100M)
loaded by `anning load` in its own process, then mapped and answering checks.

Prints: CSV size and generation time; the load's wall time, rows/s and peak RSS (from the
child's rusage); the time from the start of the load to the first answered check; the final
index's size and peak RSS / index size (target: <= 2.5); ns per check on the loaded index.

    python benchmarks/load_scale.py                  # 10M rows
    python benchmarks/load_scale.py --rows 100000000 --dir /var/tmp/anning-scale
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PREFIXES = np.array([130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156, 157,
                     158, 159, 166, 170, 176, 177, 178, 180, 181, 182, 183, 185, 186, 187, 188,
                     189, 191, 198, 199], dtype=np.int64)
SENDERS = 50_000
SENDER_TEXT = "【商户{:05d}】"  # fixed width in UTF-8: 17 bytes
ROW = 11 + 1 + 17 + 1


def generate(path: Path, rows: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-width rows `number,【商户NNNNN】`, written chunk by chunk from numpy byte matrices.
    Returns a sample of (numbers, sender codes) present in the file."""
    rng = np.random.default_rng(seed)
    table = np.frombuffer(
        b"".join(SENDER_TEXT.format(i).encode() for i in range(SENDERS)), np.uint8
    ).reshape(SENDERS, 17)
    powers = 10 ** np.arange(10, -1, -1, dtype=np.int64)
    sample_numbers, sample_codes = [], []
    with open(path, "wb") as f:
        f.write(b"number,sender\n")
        for start in range(0, rows, 2_000_000):
            n = min(2_000_000, rows - start)
            numbers = PREFIXES[rng.integers(0, len(PREFIXES), n)] * 10**8 + rng.integers(
                0, 10**8, n)
            codes = np.minimum(rng.zipf(1.2, n) - 1, SENDERS - 1)
            out = np.empty((n, ROW), np.uint8)
            out[:, :11] = (numbers[:, None] // powers % 10 + 48).astype(np.uint8)
            out[:, 11] = ord(",")
            out[:, 12:29] = table[codes]
            out[:, 29] = ord("\n")
            f.write(out.tobytes())
            sample_numbers.append(numbers[:1000])
            sample_codes.append(codes[:1000])
    return np.concatenate(sample_numbers), np.concatenate(sample_codes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the CSV and data directory")
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="anning-load-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path, data = work / "snapshot.csv", work / "data"
    shutil.rmtree(data, ignore_errors=True)
    figures: dict[str, float | int | str] = {"rows": args.rows}
    try:
        t0 = time.perf_counter()
        # In a child process: a fork of a large parent would count in the load's peak RSS
        # (Linux keeps ru_maxrss across exec), so the parent stays small.
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            sample_numbers, sample_codes = pool.apply(generate, (csv_path, args.rows))
        figures["generate_s"] = round(time.perf_counter() - t0, 2)
        figures["csv_bytes"] = csv_path.stat().st_size

        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "anning.cli", "load", str(csv_path), "--data", str(data),
             "--json", "--quiet", "--as-of", "2026-11-23T00:00:00+08:00"],
            stdout=subprocess.PIPE,
        )
        _, status, usage = os.wait4(child.pid, 0)
        load_s = time.perf_counter() - started
        report = json.loads(child.stdout.read() or b"{}")
        child.stdout.close()
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"load failed: {report.get('refused')}", file=sys.stderr)
            return 1
        figures["load_s"] = round(load_s, 2)
        figures["load_rows_per_s"] = round(args.rows / load_s)
        figures["load_peak_rss_bytes"] = usage.ru_maxrss * 1024

        from anning import SuppressionIndex

        index = SuppressionIndex.load(data / "index.anx")
        first = index.check(SENDER_TEXT.format(int(sample_codes[0])), str(int(sample_numbers[0])))
        figures["load_to_first_answer_s"] = round(time.perf_counter() - started, 2)
        assert first, "a row of the file is not suppressed"
        figures["entries"] = len(index)
        figures["duplicates"] = report["duplicates"]
        figures["index_bytes"] = index.nbytes
        figures["peak_rss_over_index"] = round(usage.ru_maxrss * 1024 / index.nbytes, 2)

        ids = index.sender_ids([SENDER_TEXT.format(int(c)) for c in sample_codes])
        numbers = (sample_numbers + 86 * 10**11).astype(np.uint64)
        assert (index.check_ids(ids, numbers) > 0).all(), "a sampled row is not suppressed"
        rng = np.random.default_rng(1)
        queries = (86 * 10**11 + PREFIXES[rng.integers(0, len(PREFIXES), 1_000_000)] * 10**8
                   + rng.integers(0, 10**8, 1_000_000)).astype(np.uint64)
        qids = rng.choice(ids, 1_000_000)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            index.check_ids(qids, queries)
            times.append(time.perf_counter() - t)
        figures["check_ns"] = round(float(np.median(times)) / 1e6 * 1e9, 1)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:,}" if isinstance(value, int) else
              f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

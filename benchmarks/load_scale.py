"""The nightly load at scale: a generated CSV of --rows rows (default 10M; the target is 100M)
loaded by `anning load` in its own process, then mapped and answering checks.

Prints: CSV size and generation time; the load's wall time, rows/s and peak RSS (from the
child's rusage); the time from the start of the load to the first answered check; the final
index's size and peak RSS / index size (target: <= 2.5); ns per check on the loaded index.

Every answer is checked: 1,000 rows of each 2M-row chunk of the file must be suppressed, and
each of the 1,000,000 timed checks (random numbers, senders drawn as the file's are) must
answer exactly as the file says (SENDER when that (number, sender) is a row, NONE when not;
found by the generator as it writes the rows). A wrong answer exits 1.

    python -m benchmarks.load_scale                  # 10M rows
    python -m benchmarks.load_scale --rows 100000000 --dir /var/tmp/anning-scale
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

from benchmarks.lib.csvgen import SENDER_TEXT, FixedWidthChecks, write_fixed_width_csv


def generate(path: Path, rows: int) -> None:
    """The file and its checks (saved beside it): in a child process, so that this one stays
    small (a fork of a large parent would count in the load's peak RSS: Linux keeps ru_maxrss
    across exec)."""
    write_fixed_width_csv(path, rows).save(path.parent)


def verify(out: np.ndarray, listed: np.ndarray) -> str | None:
    """What is wrong with the answers to the timed checks, or None."""
    expected = listed.astype(np.uint8)  # SENDER (1) for a row, NONE (0) otherwise
    wrong = np.flatnonzero(out != expected)
    if not wrong.size:
        return None
    i = int(wrong[0])
    return (f"{wrong.size:,} of {len(out):,} checks answered wrongly, e.g. check {i}: "
            f"{out[i]}, expected {expected[i]}")


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
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pool.apply(generate, (csv_path, args.rows))
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
        assert child.stdout is not None
        report = json.loads(child.stdout.read() or b"{}")
        child.stdout.close()
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"load failed: {report.get('refused')}", file=sys.stderr)
            return 1
        figures["load_s"] = round(load_s, 2)
        figures["load_rows_per_s"] = round(args.rows / load_s)
        figures["load_peak_rss_bytes"] = usage.ru_maxrss * 1024

        from anning import read_snapshot
        from anning.storage.layout import DataDir

        checks = FixedWidthChecks.load(work)
        index = read_snapshot(DataDir(data).snapshot)
        first = index.check(SENDER_TEXT.format(int(checks.sample_codes[0])),
                            int(checks.sample_numbers[0]))
        figures["load_to_first_answer_s"] = round(time.perf_counter() - started, 2)
        if not first:
            print("WRONG ANSWER: a row of the file is not suppressed", file=sys.stderr)
            return 1
        figures["entries"] = len(index)
        figures["duplicates"] = report["duplicates"]
        figures["index_bytes"] = index.nbytes
        figures["peak_rss_over_index"] = round(usage.ru_maxrss * 1024 / index.nbytes, 2)

        ids = index.sender_ids([SENDER_TEXT.format(c) for c in checks.sample_codes.tolist()])
        if not (index.check_ids(ids, checks.sample_numbers) > 0).all():
            print("WRONG ANSWER: a sampled row is not suppressed", file=sys.stderr)
            return 1
        table = index.sender_ids([SENDER_TEXT.format(c) for c in range(int(checks.codes.max())
                                                                        + 1)])
        qids = table[checks.codes]
        times = []
        for _ in range(5):
            t = time.perf_counter()
            out = index.check_ids(qids, checks.numbers)
            times.append(time.perf_counter() - t)
        figures["check_ns"] = round(float(np.median(times)) / len(out) * 1e9, 1)
        if wrong := verify(out, checks.listed):
            print(f"WRONG ANSWER: {wrong}", file=sys.stderr)
            return 1
        figures["checks_verified"] = len(out)
        figures["checks_listed"] = int(checks.listed.sum())
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

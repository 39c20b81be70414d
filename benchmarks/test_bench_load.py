"""Benchmarks of the snapshot load (SPEC §5) against Python's csv module, in the same run.

The file: a clean CSV of `--entries` rows (default 1,000,000; at most 5,000,000) of Chinese
mobile numbers and skewed senders (benchmarks.lib.csvgen), made once per session. anning's
parse normalises every number and resolves every sender; csv.reader only splits the lines,
which is the floor a Python loader starts from.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from anning.load import LoadOptions, parse_snapshot_files, read_snapshot_files
from benchmarks.lib.csvgen import write_clean_csv


@pytest.fixture(scope="session")
def load_rows(request: pytest.FixtureRequest) -> int:
    return min(request.config.getoption("--entries"), 5_000_000)


@pytest.fixture(scope="session")
def clean_csv(tmp_path_factory: pytest.TempPathFactory, load_rows: int) -> Path:
    path = tmp_path_factory.mktemp("load") / "snapshot.csv"
    write_clean_csv(path, load_rows)
    return path


@pytest.mark.parametrize("impl", ["anning", "csv-reader"])
def test_parse(impl, measure, clean_csv, load_rows):
    """rows/s: anning's parse and normalisation (every number, sender, category) against
    csv.reader merely splitting the same file."""
    if impl == "anning":
        parsed = measure("parse and normalise", impl,
                         lambda: parse_snapshot_files([clean_csv], LoadOptions()),
                         per=load_rows, unit="ns/row", rounds=5)
        assert parsed.report.rows == load_rows and parsed.report.rejected == 0
        assert len(parsed.rows.numbers) == load_rows
        assert np.all(parsed.rows.numbers // 10**11 == 86)
    else:
        def split() -> int:
            count = 0
            with open(clean_csv, encoding="utf-8", newline="") as f:
                for _row in csv.reader(f):
                    count += 1
            return count
        count = measure("parse and normalise", impl, split, per=load_rows, unit="ns/row",
                        rounds=5, note="splits only")
        assert count == load_rows + 1


def test_load_to_index(measure, clean_csv, load_rows):
    """rows/s for the whole load: parse, build (sort, fold, Bloom filter)."""
    index, report = measure("load to index", "anning",
                            lambda: read_snapshot_files([clean_csv], LoadOptions()),
                            per=load_rows, unit="ns/row", rounds=3)
    assert report.loaded == load_rows and len(index) == load_rows - report.duplicates
    with open(clean_csv, encoding="utf-8", newline="") as f:
        rows = list(zip(range(1000), csv.reader(f), strict=False))[1:]
    for _, (number, sender, category) in rows:
        assert index.check(sender, number, "notification" if category == "all" else category)


def test_parse_gzip(measure, clean_csv, load_rows, tmp_path):
    """rows/s from a gzip file (decompression included): what a nightly .gz costs."""
    gz = tmp_path / "snapshot.csv.gz"
    with open(clean_csv, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
        dst.write(src.read())
    parsed = measure("parse and normalise, .gz", "anning",
                     lambda: parse_snapshot_files([gz], LoadOptions()),
                     per=load_rows, unit="ns/row", rounds=3)
    assert parsed.report.rows == load_rows

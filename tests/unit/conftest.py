"""Helpers of the load tests, as fixtures: a load with test defaults, files, the rejects file."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from anning.load import LoadOptions, read_snapshot_files

AS_OF = "2026-11-01T00:00:00+08:00"


def _read_rejects(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "line", "column", "reason", "raw"]
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def _load(paths, tmp_path: Path, **options):
    options.setdefault("as_of", AS_OF)
    options.setdefault("max_reject_ratio", 1.0)
    options.setdefault("rejects", tmp_path / "rejects.csv")
    return read_snapshot_files([str(p) for p in paths], LoadOptions(**options))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def read_rejects():
    """The rows of a rejects file, as dicts, its header checked."""
    return _read_rejects


@pytest.fixture
def load():
    """read_snapshot_files with as_of AS_OF, no reject limit, rejects beside the test."""
    return _load


@pytest.fixture
def write():
    """Write bytes to a path; return the path."""
    return _write

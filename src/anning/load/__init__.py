"""The nightly snapshot load (SPEC §5): files in (sources), rows parsed and checked (parse),
the guards that refuse a load (guards), what it reports (report)."""

from anning.load.guards import SnapshotRefused, check_shrink
from anning.load.parse import (
    FoldIn,
    LoadOptions,
    ParsedSnapshot,
    parse_snapshot_files,
    parse_time,
    read_snapshot_files,
)
from anning.load.report import LoadReport, ProgressFn, iso, progress_printer

__all__ = [
    "FoldIn",
    "LoadOptions",
    "LoadReport",
    "ParsedSnapshot",
    "ProgressFn",
    "SnapshotRefused",
    "check_shrink",
    "iso",
    "parse_snapshot_files",
    "parse_time",
    "progress_printer",
    "read_snapshot_files",
]

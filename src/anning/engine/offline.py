"""The data directory's tools that serve nothing: a snapshot load from cron, a checkpoint.

They open only what they need: a load reads the text files and the old snapshot's header (for
the shrink guard), and writes the new binary snapshot, which the servers of the directory take
up themselves; it never replays the write log or maps the snapshot it has written. A checkpoint
reads the snapshot's header for its as_of and folds the log, never the list itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

from anning.engine.engine import Engine
from anning.load import (
    LoadOptions,
    LoadReport,
    ProgressFn,
    SnapshotRefused,
    check_shrink,
    read_snapshot_files,
)
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir
from anning.storage.snapshot import snapshot_summary, write_snapshot
from anning.storage.source import CheckpointReport

__all__ = ["checkpoint_data_dir", "load_into_data_dir"]


def load_into_data_dir(data_dir: str | PathLike[str], paths: Sequence[str | PathLike[str]],
                       options: LoadOptions, progress: ProgressFn | None = None,
                       io: FileIO = OS_IO) -> LoadReport:
    """Parse, check the guards against the snapshot on disk, write the new binary snapshot
    atomically. Raises SnapshotRefused (the old file untouched)."""
    data = DataDir(data_dir)
    data.path.mkdir(parents=True, exist_ok=True)
    index, report = read_snapshot_files(paths, options, progress)
    before = snapshot_summary(data.snapshot).entries if data.snapshot.exists() else None
    check_shrink(report, before, options)
    with data.lock("load") as mine:
        if not mine:
            report.refused = "another snapshot load into this data directory is running"
            raise SnapshotRefused(report)
        write_snapshot(index, data.snapshot, io)
    return report


def checkpoint_data_dir(data_dir: str | PathLike[str]) -> CheckpointReport | None:
    """Fold the write log of `data_dir` into its checkpoint (safe beside running servers)."""
    return Engine(data_dir=data_dir, recover=False).checkpoint()

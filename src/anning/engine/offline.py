"""The data directory's tools that serve nothing: a snapshot load from cron, a checkpoint.

They open only what they need: a load reads the text files and the old snapshot's header (for
the shrink guard), and writes the new binary snapshot, which the servers of the directory take
up themselves; it never replays the write log or maps the snapshot it has written. A checkpoint
reads the snapshot's header for its as_of and folds the log, never the list itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from os import PathLike

from anning.engine.engine import Engine
from anning.load import (
    FoldIn,
    LoadOptions,
    LoadReport,
    ProgressFn,
    SnapshotRefused,
    check_shrink,
    read_snapshot_files,
)
from anning.model.scopes import keep_categories
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir
from anning.storage.loadrecord import write_load_record
from anning.storage.local import read_events_through
from anning.storage.snapshot import snapshot_summary, write_snapshot
from anning.storage.source import CheckpointReport

__all__ = ["checkpoint_data_dir", "load_into_data_dir"]


def load_into_data_dir(data_dir: str | PathLike[str], paths: Sequence[str | PathLike[str]],
                       options: LoadOptions, progress: ProgressFn | None = None,
                       io: FileIO = OS_IO) -> LoadReport:
    """Parse, check the guards against the snapshot on disk, write the new binary snapshot
    atomically. Raises SnapshotRefused (the old file untouched). Either way the outcome is
    recorded in the directory (anning.storage.loadrecord), for its servers to report."""
    data = DataDir(data_dir)
    data.path.mkdir(parents=True, exist_ok=True)
    try:
        report = _load(data, paths, options, progress, io)
    except SnapshotRefused as refused:
        write_load_record(data, refused.report.refused or "refused", None, io)
        raise
    write_load_record(data, "", report.entries_after, io)
    return report


def _load(data: DataDir, paths: Sequence[str | PathLike[str]], options: LoadOptions,
          progress: ProgressFn | None, io: FileIO) -> LoadReport:
    previous = snapshot_summary(data.snapshot) if data.snapshot.exists() else None
    options = replace(options, categories=keep_categories(
        tuple(previous.meta.get("categories", ())) if previous else (), options.categories))
    # the events are read, and made the fold's statements, while the rows are parsed (the
    # parse runs without the GIL): at ten million rows and a million events, most of what
    # folding them costs
    with ThreadPoolExecutor(1, thread_name_prefix="anning-load-events") as reader:
        fold_in = reader.submit(_fold_in, data, io, options.events_through,
                                previous.events_through if previous else 0)
        index, report = read_snapshot_files(paths, options, progress, fold_in.result)
    check_shrink(report, previous.entries if previous else None, options)
    with data.lock("load") as mine:
        if not mine:
            report.refused = "another snapshot load into this data directory is running"
            raise SnapshotRefused(report)
        write_snapshot(index, data.snapshot, io)
    return report


def _fold_in(data: DataDir, io: FileIO, declared: int | None, previous: int) -> FoldIn:
    """The events to fold in: past the watermark (declared, else the previous list's), every
    event on disk up to the last (the log is read as it stands: servers may write on)."""
    watermark = previous if declared is None else declared
    # the events and the last sequence of one read: a second look (at the checkpoint) could
    # see events written since, and the new list would claim to hold them
    events, last = read_events_through(data, min(watermark, previous), io)
    last = max(last, previous)
    report = LoadReport(files=[])
    if watermark > last:
        report.refused = f"events_through {watermark} is past the last event there is ({last})"
        raise SnapshotRefused(report)
    if watermark < previous:
        report.refused = (f"events_through {watermark} goes back past the snapshot's "
                          f"{previous}: the events between were left to upstream already")
        raise SnapshotRefused(report)
    return FoldIn(events.after(watermark), watermark, last)  # (its statements made here)


def checkpoint_data_dir(data_dir: str | PathLike[str]) -> CheckpointReport | None:
    """Fold the write log of `data_dir` into its checkpoint (safe beside running servers)."""
    return Engine(data_dir=data_dir, recover=False).checkpoint()

"""The write log: segments of framed records, a writer with group commit, a reader that tails."""

from anning.storage.wal.log import EventLog, LogPosition

__all__ = ["EventLog", "LogPosition"]

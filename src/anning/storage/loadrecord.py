"""How the last snapshot load into a data directory ended, whoever ran it: `last-load.json`.

A load from cron (`anning load`) runs in a process of its own and exits; the servers of the
directory take up what it wrote, but a refusal writes nothing they would see. Every load (cron's
and `Admin.LoadSnapshot`'s) therefore leaves this small record, replaced whole, so that a server
can say in `Status.last_refusal` and in its metrics (`anning_last_load_refused`) that the last
nightly list was refused, and an alert can fire.

Format (version 1): a JSON object `{"version": 1, "at": UNIX_SECONDS, "refused": REASON or "",
"entries": N or null}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass

from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir, temporary_name

__all__ = ["LoadRecord", "LoadRecordReader", "read_load_record", "write_load_record"]

VERSION = 1
log = logging.getLogger("anning.storage")


@dataclass(frozen=True)
class LoadRecord:
    at: float  # when the load ended (Unix seconds)
    refused: str  # why it was refused; "" when the list was loaded
    entries: int | None  # entries of the list it wrote


def write_load_record(data: DataDir, refused: str, entries: int | None,
                      io: FileIO = OS_IO) -> None:
    """Replace the record (a temporary file renamed over it: a reader sees one whole record);
    a failure to write it is logged, never the load's own outcome. No fsync: the record only
    informs, a crash that loses it loses nothing else, and a load must not wait for it (the
    checks of a busy server would wait behind the GIL's hand-backs meanwhile)."""
    body = json.dumps({"version": VERSION, "at": time.time(), "refused": refused,
                       "entries": entries}, ensure_ascii=False).encode()
    path = data.last_load
    tmp = temporary_name(path)
    try:
        fd = io.create(tmp)
        try:
            io.write(fd, body)
        finally:
            io.close(fd)
        io.rename(tmp, path)
    except OSError as exc:
        log.warning("cannot record the load's outcome in %s: %s", path, exc)
        with contextlib.suppress(OSError):
            io.unlink(tmp)


class LoadRecordReader:
    """The record of a data directory, read again only when the file changed."""

    def __init__(self, data: DataDir) -> None:
        self.data = data
        self._seen: tuple[int, int] | None = None
        self._record: LoadRecord | None = None

    def read(self) -> LoadRecord | None:
        try:
            st = os.stat(self.data.last_load)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._seen:
            self._record = read_load_record(self.data)
            self._seen = stamp
        return self._record


def read_load_record(data: DataDir) -> LoadRecord | None:
    """The record, or None when there is none or it is unreadable (it only informs)."""
    try:
        raw = json.loads(data.last_load.read_bytes())
        if raw.get("version") != VERSION:
            return None
        entries = raw.get("entries")
        return LoadRecord(float(raw["at"]), str(raw["refused"]),
                          None if entries is None else int(entries))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None

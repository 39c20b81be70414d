"""Taking up what other processes wrote: a new binary snapshot, new events.

Every worker process serves the same data directory. A snapshot another process loaded is
looked for twice a second (a server does it in a housekeeping thread, off the path of its
checks: every byte of a snapshot is checked before it serves); the events others appended are
taken before every check, so a write acknowledged by any process is seen by every check that
starts after it. When a checkpoint retired segments this process had not read yet, it catches
up from the checkpoint before it answers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from anning.storage.local import FileIdentity, file_identity
from anning.storage.snapshot import read_snapshot

if TYPE_CHECKING:
    from anning.engine.engine import Engine

__all__ = ["Follower"]

POLL_SECONDS = 0.5  # how often a process looks for a new snapshot file


class Follower:
    """One engine's watch on its data directory and its event source."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.snapshot_id: FileIdentity | None = None
        self.polled = 0.0
        self.catching_up = threading.Lock()
        # checks poll for new files themselves unless a thread of the caller's does (poll())
        self.in_background = False

    def refresh(self) -> None:
        """Before a check: take the source's new events; look for a new snapshot too, unless
        a background thread does that."""
        if self.engine.data is not None and not self.in_background and \
                time.monotonic() - self.polled > POLL_SECONDS:
            self.poll()
            return
        self.take_events()

    def poll(self) -> None:
        """Look for a new snapshot file and serve it, then take the events."""
        engine = self.engine
        if engine.data is not None:
            self.polled = time.monotonic()
            identity = file_identity(engine.data.snapshot)
            if identity is not None and identity != self.snapshot_id and \
                    not engine.loading.locked():
                with engine.loading:
                    engine.swap(read_snapshot(engine.data.snapshot))
                    self.snapshot_id = identity
        self.take_events()

    def snapshot_served(self, path: Path) -> None:
        self.snapshot_id = file_identity(path)

    def take_events(self) -> None:
        source = self.engine.source
        if source is None:
            return
        if source.behind():
            self.catch_up()
        update = source.poll()
        if update.events:
            self.engine.take(update.events)
        if update.behind:
            self.catch_up()

    def catch_up(self) -> None:
        """What the reader missed, from the checkpoint (one thread at a time; another that
        waited finds nothing left to do)."""
        source = self.engine.source
        assert source is not None
        with self.catching_up:
            if source.behind():
                self.engine.take_columns(source.catch_up())

"""Taking up what other processes wrote: a new binary snapshot, new events, a new checkpoint.

Every worker process serves the same data directory. A snapshot another process loaded, or a
checkpoint it folded, is looked for twice a second (a server does it in a housekeeping thread,
off the path of its checks: every byte of a snapshot is checked before it serves); the events
it appended are taken before every check, so a write acknowledged by any process is seen by
every check that starts after it.
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

POLL_SECONDS = 0.5  # how often a process looks for a new snapshot or checkpoint file


class Follower:
    """One engine's watch on its data directory and its event source."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.snapshot_id: FileIdentity | None = None
        self.polled = 0.0
        self.reloading = threading.Lock()
        # checks poll for new files themselves unless a thread of the caller's does (poll())
        self.in_background = False

    def refresh(self) -> None:
        """Before a check: take the source's new events; look for new files too, unless a
        background thread does that."""
        if self.engine.data is not None and not self.in_background and \
                time.monotonic() - self.polled > POLL_SECONDS:
            self.poll()
            return
        self.take_events()

    def poll(self) -> None:
        """Look for a new snapshot file and serve it, take up a checkpoint, take the events."""
        engine = self.engine
        if engine.data is not None:
            self.polled = time.monotonic()
            identity = file_identity(engine.data.snapshot)
            if identity is not None and identity != self.snapshot_id and \
                    not engine.loading.locked():
                with engine.loading:
                    engine.swap(read_snapshot(engine.data.snapshot))
                    self.snapshot_id = identity
        source = engine.source
        # Another thread of ours taking it up already: a check that need not wait answers from
        # what it has (every event it took is still there) instead of waiting, or of taking
        # it up once more.
        if source is not None and source.reload_due() and \
                not (self.reloading.locked() and not source.poll_blocked()):
            self.reload()
        self.take_events()

    def snapshot_served(self, path: Path) -> None:
        self.snapshot_id = file_identity(path)

    def take_events(self) -> None:
        source = self.engine.source
        if source is None:
            return
        if source.poll_blocked():
            self.reload()
        update = source.poll()
        if update.events:
            self.engine.take(update.events)
        if update.reload:
            self.reload()

    def reload(self) -> None:
        """Serve everything the source holds again (a new checkpoint, or what the reader missed)
        in place of what this process had taken: the same events, held compactly."""
        source = self.engine.source
        assert source is not None
        with self.reloading:
            if not source.reload_due():
                return  # taken up by another thread while this one waited
            self.engine.rebuild_events(source.reload)

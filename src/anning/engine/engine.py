"""The engine: the serving list, real-time events on top of it, and the atomic snapshot swap.

State is one immutable pair (index, overlay) read once by each check (anning.engine.serving).
A snapshot swap keeps the events later than the new snapshot's `as_of` (SPEC §5). With a data
directory, every event is first made durable in the event source (the write log, shared by
every worker process: anning.storage.local), and what other processes wrote is taken up before
each check (anning.engine.follower).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from os import PathLike

import numpy as np
import numpy.typing as npt

from anning.engine import serving
from anning.engine.follower import Follower
from anning.engine.serving import Explanation, ServingState
from anning.engine.writes import ReplyOutcome, make_event, read_reply
from anning.errors import InvalidInput, NotReady
from anning.index import SuppressionIndex
from anning.load import (
    LoadOptions,
    LoadReport,
    ProgressFn,
    SnapshotRefused,
    check_shrink,
    read_snapshot_files,
)
from anning.model.events import (
    OPT_IN,
    OPT_OUT,
    REASSIGN,
    Event,
    EventTable,
    Overlay,
    validate_event,
)
from anning.model.scopes import DEFAULT_CATEGORY, Scope
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir
from anning.storage.local import LocalEventLog
from anning.storage.snapshot import read_snapshot, snapshot_summary, write_snapshot
from anning.storage.source import CheckpointReport, EventSource

__all__ = ["CheckpointReport", "Engine", "EngineStatus", "Event", "Explanation", "NotReady",
           "ReplyOutcome"]


@dataclass(frozen=True)
class EngineStatus:
    ready: bool
    entries: int
    senders: int
    bytes: int
    as_of: str | None
    age_seconds: float
    events: int
    writes_ok: bool
    writes_error: str
    last_refusal: str


class Engine:
    """Checks against the serving list plus real-time events; writes; snapshot loads."""

    def __init__(
        self, index: SuppressionIndex | None = None, data_dir: str | PathLike[str] | None = None,
        *, write_log: bool = True, io: FileIO = OS_IO, recover: bool = True,
        source: EventSource | None = None,
    ) -> None:
        """`source`: where events are made durable (default: the write log of `data_dir`).
        `recover=False` skips taking in the events on disk: for a tool that only folds the log
        into a checkpoint (which reads them from disk itself), never for serving."""
        self.data = DataDir(data_dir) if data_dir is not None else None
        self.io = io
        self._write_lock = threading.Lock()  # the serving pair changes under it
        self.loading = threading.Lock()  # one snapshot load or swap from a file at a time
        self._backlog: list[Event] | None = None  # events taken while the overlay is rebuilt
        self._state: ServingState | None = None
        self._pending = Overlay()  # events taken before any list was loaded
        self.last_refusal: str | None = None
        self.follower = Follower(self)
        if source is None and self.data is not None and write_log:
            source = LocalEventLog(self.data, io)
        self.source = source
        self._serves_events = recover  # False: a tool that only folds the log
        if source is not None and recover:
            self._pending = Overlay(source.recover(0))
        if index is not None:
            self.swap(index)

    @property
    def data_dir(self) -> str | None:
        return str(self.data.path) if self.data is not None else None

    def after_fork(self) -> None:
        """In a forked worker: descriptors of its own (an O_APPEND file position shared with
        other processes would garble the sequence each write reports)."""
        if self.source is not None:
            self.source = self.source.reopen()

    def log_lag(self) -> int:
        return self.source.lag() if self.source is not None else 0

    @property
    def poll_in_background(self) -> bool:
        return self.follower.in_background

    @poll_in_background.setter
    def poll_in_background(self, value: bool) -> None:
        self.follower.in_background = value

    def open_snapshot(self) -> bool:
        """Serve the binary snapshot of the data directory, if there is one."""
        if self.data is None or not self.data.snapshot.exists():
            return False
        path = self.data.snapshot
        self.follower.snapshot_served(path)
        self.swap(read_snapshot(path))
        return True

    def refresh(self) -> None:
        """Take in what other processes wrote (see anning.engine.follower)."""
        self.follower.refresh()

    def poll(self) -> None:
        """Look for new snapshot and checkpoint files, then take in the events: a server calls
        this from a thread, off the path of its checks (`poll_in_background`)."""
        self.follower.poll()

    # -- state -------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def index(self) -> SuppressionIndex:
        state = self._state
        if state is None:
            raise NotReady("no suppression list is loaded yet")
        return state.index

    def as_of_ms(self) -> int:
        """The serving snapshot's as_of (0 before any list is loaded)."""
        state = self._state
        return state.as_of_ms if state is not None else 0

    @property
    def writes_failure(self) -> str | None:
        return self.source.failure if self.source is not None else None

    def status(self) -> EngineStatus:
        state = self._state
        failure = self.writes_failure
        refusal = self.last_refusal or ""
        if state is None:
            return EngineStatus(False, 0, 0, 0, None, 0.0, len(self._pending), failure is None,
                                failure or "", refusal)
        idx = state.index
        as_of_ms = idx.meta.get("as_of_ms")
        return EngineStatus(
            True, len(idx), len(idx.senders), idx.nbytes, idx.meta.get("as_of"),
            time.time() - as_of_ms / 1000 if as_of_ms else 0.0, len(state.overlay),
            failure is None, failure or "", refusal)

    def swap(self, index: SuppressionIndex) -> None:
        """Serve `index` from now on, with the events later than its as_of on top."""
        as_of = int(index.meta.get("as_of_ms", 0))
        with self._write_lock:  # no event slips between the copy and the swap
            current = self._state.overlay if self._state else self._pending
            self._state = ServingState(index, current.after(as_of))

    def take(self, events: list[Event]) -> None:
        """Put events on top of the serving list: the one way in, for this process's writes
        and for those the source brings from others alike. An event not later than the serving
        snapshot's as_of is superseded by that snapshot (SPEC §5)."""
        with self._write_lock:
            state = self._state
            overlay = state.overlay if state else self._pending
            as_of = state.as_of_ms if state else 0
            overlay.apply_many([e for e in events if e.at_ms > as_of])
            if self._backlog is not None:
                self._backlog.extend(events)

    def rebuild_events(self, read: Callable[[int], EventTable]) -> None:
        """Serve the events `read(after_ms)` gives in place of those taken so far. The table
        is read outside the write lock (checks and writes go on); what was taken meanwhile is
        put on it before it serves."""
        with self._write_lock:
            self._backlog = []
        try:
            table = read(self.as_of_ms())
        except BaseException:
            with self._write_lock:
                self._backlog = None
            raise
        with self._write_lock:
            backlog, self._backlog = self._backlog, None
            state = self._state
            as_of = state.as_of_ms if state else 0
            overlay = Overlay(table)
            if state is not None:
                overlay = overlay.after(as_of)  # a swap meanwhile may have moved as_of
            overlay.apply_many([e for e in backlog if e.at_ms > as_of])
            if state is None:
                self._pending = overlay
            else:
                self._state = ServingState(state.index, overlay)

    # -- checks ------------------------------------------------------------------------------
    def serving(self) -> ServingState:
        """Take in what other processes wrote, then the (index, overlay) pair to answer from.
        A batch takes its sender ids from this index and checks against this same pair, so a
        swap in between cannot give one list's sender ids to another list."""
        if self.source is not None or self.data is not None:
            self.refresh()
        state = self._state
        if state is None:
            raise NotReady("no suppression list is loaded yet")
        return state

    def check(self, sender: str, number: str | int, category: str = DEFAULT_CATEGORY) -> Scope:
        return serving.check(self.serving(), sender, number, category)

    def check_ids(
        self, sender_ids: npt.NDArray[np.uint32], numbers: npt.NDArray[np.uint64],
        category: str = DEFAULT_CATEGORY, sender_of: Callable[[int], str] | None = None,
        state: ServingState | None = None,
    ) -> npt.NDArray[np.uint8]:
        """The batch path (anning.engine.serving.check_ids). `state` (from `serving()`) is the
        list the sender ids were taken from; without it, the list serving now."""
        return serving.check_ids(state or self.serving(), sender_ids, numbers, category,
                                 sender_of)

    def explain(self, sender: str, number: str | int,
                category: str = DEFAULT_CATEGORY) -> Explanation:
        """Why a check answers as it does: the level, the entry or event that decided it."""
        return serving.explain(self.serving(), sender, number, category)

    # -- writes: durable in the event source first, then visible -----------------------------
    def opt_out(self, number: str | int, scope: str, category: str = DEFAULT_CATEGORY,
                at_ms: int | None = None, source: str = "api") -> Event:
        return self._write(self.make_event(number, scope, category, OPT_OUT, at_ms, source))

    def opt_in(self, number: str | int, scope: str, category: str = DEFAULT_CATEGORY,
               at_ms: int | None = None, source: str = "api") -> Event:
        return self._write(self.make_event(number, scope, category, OPT_IN, at_ms, source))

    def reassign(self, number: str | int, at_ms: int | None = None,
                 source: str = "api") -> Event:
        """The number went to a new subscriber at `at_ms`: every entry and event of it older
        than that stops counting (SPEC §4)."""
        return self._write(self.make_event(number, "", "", REASSIGN, at_ms, source))

    def _write(self, event: Event) -> Event:
        self.apply([event])
        return event

    def make_event(self, number: str | int, scope: str, category: str, kind: int,
                   at_ms: int | None, source: str) -> Event:
        """Validate a write into an Event (anning.engine.writes.make_event)."""
        state = self._state
        return make_event(state.index if state else None, number, scope, category, kind,
                          at_ms, source)

    def apply(self, events: list[Event]) -> int:
        """Make events durable (with an event source), then visible; return the sequence of
        the last (0 without a source). All or none: one append, one fsync. Raises DiskFull
        (nothing kept; retry later) or WritesStopped after a disk failure."""
        (outcome,) = self.apply_each([events])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def apply_each(self, writes: Sequence[Sequence[Event]]) -> list[int | Exception]:
        """Several callers' writes in one append and one fsync (the server's group commit):
        each write is all or none, one record, and gets its own sequence, or the InvalidInput
        that refused it alone. A disk error (DiskFull, WritesStopped) is raised: then none of
        them was kept."""
        outcomes: list[int | Exception] = []
        durable: list[Sequence[Event]] = []
        slots: list[int] = []  # the outcome each durable write answers
        taken: list[Event] = []
        for events in writes:
            try:
                for e in events:
                    validate_event(e)
            except InvalidInput as exc:
                outcomes.append(exc)
                continue
            outcomes.append(0)
            taken.extend(events)
            if self.source is not None and events:
                slots.append(len(outcomes) - 1)
                durable.append(events)
        if durable:
            assert self.source is not None
            for slot, sequence in zip(slots, self.source.append(durable), strict=True):
                outcomes[slot] = sequence
        if taken:
            self.take(taken)
        return outcomes

    def reply(self, sender: str, number: str | int, text: str,
              at_ms: int | None = None) -> ReplyOutcome:
        """A user's reply to a sender: an opt-out of the sender's entity (or the sender), a
        global opt-out, an opt-in, or free text that changes nothing."""
        outcome = self.read_reply(sender, number, text, at_ms)
        if outcome.event is None:
            return outcome
        return replace(outcome, sequence=self.apply([outcome.event]))

    def read_reply(self, sender: str, number: str | int, text: str,
                   at_ms: int | None = None) -> ReplyOutcome:
        """What a reply means, and the event it makes (not yet applied; sequence 0)."""
        state = self._state
        return read_reply(state.index if state else None, sender, number, text, at_ms)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, min_log_bytes: int = 0) -> CheckpointReport | None:
        """Fold the event source into its checkpoint (see LocalEventLog.checkpoint), then serve
        from it. None when the log is smaller than `min_log_bytes` or another process is at
        it."""
        if self.source is None:
            return None
        report = self.source.checkpoint(self._checkpoint_as_of(), min_log_bytes)
        if report is not None and self._serves_events:
            self.follower.reload()
        return report

    def _checkpoint_as_of(self) -> int:
        """Events not later than this are superseded: the snapshot's as_of (the served one's,
        or, for a tool that serves none, the header of the one on disk)."""
        state = self._state
        if state is not None:
            return state.as_of_ms
        if self.data is not None and self.data.snapshot.exists():
            return snapshot_summary(self.data.snapshot).as_of_ms
        return 0

    # -- snapshots ---------------------------------------------------------------------------
    def load_snapshot(self, paths: Sequence[str | PathLike[str]],
                      options: LoadOptions | None = None,
                      progress: ProgressFn | None = None) -> LoadReport:
        """Parse, check the guards, write the binary snapshot, swap. Checks go on throughout;
        on a refusal (Refused) the serving list and its file are untouched."""
        options = options or LoadOptions()
        with self.loading:
            try:
                index, report = read_snapshot_files(paths, options, progress)
                state = self._state
                before = len(state.index) if state else _entries_on_disk(self.data)
                check_shrink(report, before, options)
            except SnapshotRefused as refused:
                self.last_refusal = refused.report.refused
                raise
            if self.data is not None:
                path = self.data.snapshot
                self.data.path.mkdir(parents=True, exist_ok=True)
                write_snapshot(index, path, self.io)
                del index  # serve the mapped pages: the built arrays go before they come in
                index = read_snapshot(path)
                self.follower.snapshot_served(path)
            self.swap(index)
            return report


def _entries_on_disk(data: DataDir | None) -> int | None:
    if data is None or not data.snapshot.exists():
        return None
    return snapshot_summary(data.snapshot).entries

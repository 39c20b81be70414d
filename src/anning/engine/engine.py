"""The engine: the serving list, real-time events on top of it, writes, and snapshot loads.

State is one immutable pair (index, overlay) read once by each check (anning.engine.serving).
With a data directory, every event is first made durable in the event source (the write log,
shared by every worker process: anning.storage.local), where it gets its sequence, and what
other processes wrote is taken up before each check (anning.engine.follower).

An acknowledged event stays in force until a later explicit statement about its (number, scope,
category), a reassignment of the number, or a snapshot that declares it has taken the event in
(its watermark, `events_through`): never because a snapshot is silent (SPEC §4, §5). A load
folds the events past the watermark into the new list, so the overlay starts small again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike

import numpy as np
import numpy.typing as npt

from anning.engine import serving
from anning.engine.follower import Follower
from anning.engine.overlay import Overlay
from anning.engine.serving import Explanation, ServingState
from anning.engine.store import EventStore
from anning.engine.writes import ReplyOutcome, make_event, read_reply
from anning.errors import InvalidInput, NotReady, Refused
from anning.index import SuppressionIndex
from anning.load import (
    FoldIn,
    LoadOptions,
    LoadReport,
    ProgressFn,
    SnapshotRefused,
    check_shrink,
    read_snapshot_files,
)
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event, EventColumns, validate_events
from anning.model.scopes import DEFAULT_CATEGORY, Scope, keep_categories
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir
from anning.storage.loadrecord import LoadRecord, LoadRecordReader, write_load_record
from anning.storage.local import LocalEventLog
from anning.storage.snapshot import read_snapshot, snapshot_summary, write_snapshot
from anning.storage.source import CheckpointReport, EventFeed, EventSource, SourceCondition

__all__ = ["CheckpointReport", "Engine", "EngineStatus", "Event", "Explanation", "NotReady",
           "ReplyOutcome"]

BULK_TAKE = 10_000  # events brought at once past this are resolved in bulk (a new overlay)


@dataclass(frozen=True)
class EngineStatus:
    ready: bool
    entries: int
    senders: int
    bytes: int
    as_of: str | None
    age_seconds: float
    events: int  # real-time events on top of the list (past its fold)
    writes_ok: bool
    writes_error: str
    last_refusal: str
    last_sequence: int  # of the last event this process knows
    events_through: int  # the serving list's watermark
    folded_through: int  # the last event the serving list holds the outcome of
    feed_lag: int  # events upstream has not declared it has (last_sequence - events_through)
    oldest_uncovered_age_seconds: float  # of the first of them (0: none)
    source: SourceCondition = field(default_factory=SourceCondition)  # writes now; current


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
        # events taken while an overlay is built outside the lock, to put on it before it serves
        self._backlogs: list[list[Event]] = []
        self._state: ServingState | None = None
        self._pending = EventStore(0)  # events taken before any list was loaded
        self._sequence = 0  # without a source: the sequence of the last event taken
        self.last_refusal: str | None = None  # of a load by this engine
        self._load_record = LoadRecordReader(self.data) if self.data is not None else None
        self.follower = Follower(self)
        if source is None and self.data is not None and write_log:
            source = LocalEventLog(self.data, io)
        self.source = source
        if source is None:
            # nothing durable keeps the events: they are kept here, each once, for every load
            self._journal: EventStore | None = EventStore(0)
        else:
            self._journal = None
        if source is not None and recover:
            self._pending.add_columns(source.recover())
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
        """Look for a new snapshot file, then take in the events: a server calls this from a
        thread, off the path of its checks (`poll_in_background`)."""
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

    @property
    def last_sequence(self) -> int:
        known = self.source.last_sequence if self.source is not None else self._sequence
        state = self._state
        return max(known, state.index.folded_through if state else 0)

    def last_load(self) -> LoadRecord | None:
        """How the data directory's last snapshot load ended, by whichever process ran it."""
        return self._load_record.read() if self._load_record is not None else None

    def status(self) -> EngineStatus:
        state = self._state
        condition = self.source.condition() if self.source is not None else SourceCondition()
        failure = condition.writes_problem or None
        record = self.last_load()  # cron's load too: a later success clears a refusal
        refusal = record.refused if record is not None else self.last_refusal or ""
        last = self.last_sequence
        if state is None:
            return EngineStatus(False, 0, 0, 0, None, 0.0, len(self._pending), failure is None,
                                failure or "", refusal, last, 0, 0, last, 0.0, condition)
        idx = state.index
        as_of_ms = idx.meta.get("as_of_ms")
        watermark = idx.events_through
        oldest = int(idx.meta.get("oldest_uncovered_at_ms", 0)) or \
            state.overlay.first_at_ms(after=watermark)
        now = time.time()
        return EngineStatus(
            True, len(idx), len(idx.senders), idx.nbytes, idx.meta.get("as_of"),
            now - as_of_ms / 1000 if as_of_ms else 0.0, len(state.overlay),
            failure is None, failure or "", refusal, last, watermark, idx.folded_through,
            max(0, last - watermark), max(0.0, now - oldest / 1000) if oldest else 0.0,
            condition)

    def swap(self, index: SuppressionIndex) -> None:
        """Serve `index` from now on, with the events past its fold on top, resolved against
        it. Refused (Refused) when its categories would renumber the events' category bits."""
        state = self._state
        if state is not None and index.categories[:len(state.index.categories)] != \
                state.index.categories:
            raise Refused(f"categories: the new list's {list(index.categories)} do not keep "
                          f"{list(state.index.categories)} in that order: the events' "
                          "category bits would change meaning")

        def resolved(held: EventColumns) -> ServingState:
            events = held
            if index.folded_through < self._folded_through():
                events = self._events_after(index.folded_through, held)
            return ServingState(index, Overlay.of(index, events.after(index.folded_through)))

        self._rebuild(resolved, swap=True)
        if self.source is not None:
            self.source.served(index.folded_through)

    def _rebuild(self, make: Callable[[EventColumns], ServingState], swap: bool,
                 extra: EventColumns | None = None) -> None:
        """A new serving pair made by `make(every event held)` outside the write lock (checks
        and writes go on); what was taken meanwhile is put on it before it serves. Not
        `swap`: dropped if a swap came meanwhile (that one resolved every event anew)."""
        with self._write_lock:
            before = self._state
            held = self._held_events()
            backlog: list[Event] = []
            self._backlogs.append(backlog)
        try:
            if extra is not None:
                held = EventColumns.concat([held, extra])
                if len(held) > 1:
                    held = held.take(np.argsort(held.sequence, kind="stable"))
            state = make(held)
        except BaseException:
            with self._write_lock:
                self._backlogs.remove(backlog)
            raise
        with self._write_lock:  # one hold: nothing is taken between the backlog and the swap
            self._backlogs.remove(backlog)
            if not swap and self._state is not before:
                if extra is not None and self._state is not None:
                    self._state.overlay.take(extra.events())
                return
            state.overlay.take(backlog)
            self._state = state
            if before is None:
                self._pending = EventStore(0)  # the first list serves them now
    def _held_events(self) -> EventColumns:
        state = self._state
        return (state.overlay.store if state else self._pending).columns()

    def _folded_through(self) -> int:
        state = self._state
        return state.index.folded_through if state else 0

    def _events_after(self, sequence: int, held: EventColumns) -> EventColumns:
        """Every event past `sequence`: from the source (what a list folded in is no longer
        held in memory), else the journal."""
        if self.source is not None:
            return _each_once(EventColumns.concat([self.source.events_after(sequence),
                                                   held.after(sequence)]))
        assert self._journal is not None
        return self._journal.columns().after(sequence)

    def take(self, events: list[Event]) -> None:
        """Put events (with their sequences) on top of the serving list: the one way in, for
        this process's writes and for those the source brings from others alike."""
        with self._write_lock:
            if self._journal is not None:
                self._journal.add(events)
            state = self._state
            if state is None:
                self._pending.add(events)
            else:
                state.overlay.take(events)
            for backlog in self._backlogs:
                backlog.extend(events)

    def take_columns(self, events: EventColumns) -> None:
        """Many events at once (a catch-up from a checkpoint): past BULK_TAKE, resolved in bulk
        into a new overlay; else one by one."""
        if len(events) <= BULK_TAKE or self._state is None:
            self.take(events.events())
            return
        self._rebuild(lambda held: ServingState(self.index, Overlay.of(self.index, held)),
                      swap=False, extra=events)

    def rebuild_events(self) -> None:
        """Resolve every event held again, in bulk, into a new overlay (checks and writes go on
        meanwhile)."""
        state = self._state
        if state is not None:
            self._rebuild(lambda held: ServingState(state.index, Overlay.of(state.index, held)),
                          swap=False)

    # -- checks ------------------------------------------------------------------------------
    def serving(self) -> ServingState:
        """Take in what other processes wrote, then the (index, overlay) pair to answer from.
        A batch takes its sender ids from this pair and checks against this same pair, so a
        swap in between cannot give one list's sender ids to another list."""
        if self.source is not None or self.data is not None:
            self.refresh()
            if self.source is not None and self.source.lost:
                raise NotReady(f"position in the event log lost: {self.source.lost}")
        state = self._state
        if state is None:
            raise NotReady("no suppression list is loaded yet")
        return state

    def check(self, sender: str, number: str | int, category: str = DEFAULT_CATEGORY) -> Scope:
        return serving.check(self.serving(), sender, number, category)

    def sender_ids(self, senders: list[str],
                   state: ServingState | None = None) -> npt.NDArray[np.uint32]:
        """Sender ids for `check_ids`, from `state` (a `serving()`) or the list serving now."""
        return (state or self.serving()).sender_ids(senders)

    def check_ids(
        self, sender_ids: npt.NDArray[np.uint32], numbers: npt.NDArray[np.uint64],
        category: str = DEFAULT_CATEGORY, state: ServingState | None = None,
    ) -> npt.NDArray[np.uint8]:
        """The batch path: compiled, GIL released, events included. `state` (from `serving()`)
        is the list the sender ids were taken from; without it, the list serving now."""
        return serving.check_ids(state or self.serving(), sender_ids, numbers, category)

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
        return replace(event, sequence=self.apply([event]))

    def make_event(self, number: str | int, scope: str, category: str, kind: int,
                   at_ms: int | None, source: str) -> Event:
        """Validate a write into an Event (anning.engine.writes.make_event)."""
        state = self._state
        return make_event(state.index if state else None, number, scope, category, kind,
                          at_ms, source)

    def apply(self, events: list[Event]) -> int:
        """Make events durable (in the event source), then visible; return the sequence of the
        last. All or none: one record, one fsync. Raises DiskFull (nothing kept; retry later)
        or WritesStopped after a disk failure."""
        (outcome,) = self.apply_each([events])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def apply_each(self, writes: Sequence[Sequence[Event]]) -> list[int | Exception]:
        """Several callers' writes in one append and one fsync (the server's group commit):
        each write is all or none, one record, and gets the next sequences (its outcome: the
        last one's), or the InvalidInput that refused it alone. A disk error (DiskFull,
        WritesStopped) is raised: then none of them was kept."""
        outcomes: list[int | Exception] = []
        accepted: list[Sequence[Event]] = []
        slots: list[int] = []  # the outcome each accepted write answers
        for events in writes:
            try:
                validate_events(events)
            except InvalidInput as exc:
                outcomes.append(exc)
                continue
            outcomes.append(0)
            if events:
                slots.append(len(outcomes) - 1)
                accepted.append(events)
        if not accepted:
            return outcomes
        lasts: list[int | Exception]
        if self.source is not None:
            lasts = self.source.append(accepted)
        else:
            lasts = []
            for events in accepted:
                self._sequence += len(events)
                lasts.append(self._sequence)
        taken: list[Event] = []
        for slot, events, last in zip(slots, accepted, lasts, strict=True):
            outcomes[slot] = last
            if isinstance(last, Exception):
                continue  # not acknowledged by a replicated log: not taken either
            first = last - len(events) + 1
            # the constructor, not dataclasses.replace: a third of the cost, per event
            taken += [Event(e.number, e.scope, e.mask, e.kind, e.at_ms, e.source, first + i)
                      for i, e in enumerate(events)]
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

    # -- the change feed ---------------------------------------------------------------------
    def feed(self, after: int) -> EventFeed:
        """Every event past the sequence `after`, in order, each once; then those appended, as
        they come (every process's: read from the event source, not from this one's memory)."""
        if self.source is not None:
            return self.source.feed(after)
        assert self._journal is not None
        return _JournalFeed(self._journal, after)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, min_log_bytes: int = 0) -> CheckpointReport | None:
        """Fold the event source's log into its checkpoint, keeping the events past the
        watermark of the list (upstream has the others). None when the log is smaller than
        `min_log_bytes` or another process is at it."""
        if self.source is None:
            return None
        return self.source.checkpoint(self._watermark(), min_log_bytes)

    def _watermark(self) -> int:
        """The watermark of the serving list, or, for a tool that serves none, of the snapshot
        on disk (its header and meta only)."""
        state = self._state
        if state is not None:
            return state.index.events_through
        if self.data is not None and self.data.snapshot.exists():
            return snapshot_summary(self.data.snapshot).events_through
        return 0

    # -- snapshots ---------------------------------------------------------------------------
    def load_snapshot(self, paths: Sequence[str | PathLike[str]],
                      options: LoadOptions | None = None,
                      progress: ProgressFn | None = None) -> LoadReport:
        """Parse, fold in the events past the watermark, check the guards, write the binary
        snapshot, swap. Checks and writes go on throughout; on a refusal (SnapshotRefused) the
        serving list and its file are untouched."""
        options = options or LoadOptions()
        with self.loading:
            try:
                state = self._state
                previous = state.index if state else None
                on_disk = snapshot_summary(self.data.snapshot) \
                    if previous is None and self.data is not None and \
                    self.data.snapshot.exists() else None
                options = replace(options, categories=keep_categories(
                    previous.categories if previous else
                    tuple(on_disk.meta.get("categories", ())) if on_disk else (),
                    options.categories))
                fold_in = self._fold_in(options.events_through,
                                        previous.events_through if previous else
                                        on_disk.events_through if on_disk else 0)
                index, report = read_snapshot_files(paths, options, progress, fold_in)
                before = len(previous) if previous else on_disk.entries if on_disk else None
                check_shrink(report, before, options)
            except SnapshotRefused as refused:
                self.last_refusal = refused.report.refused
                if self.data is not None:
                    write_load_record(self.data, refused.report.refused or "refused", None,
                                      self.io)
                raise
            if self.data is not None:
                path = self.data.snapshot
                self.data.path.mkdir(parents=True, exist_ok=True)
                write_snapshot(index, path, self.io)
                write_load_record(self.data, "", len(index), self.io)
                del index  # serve the mapped pages: the built arrays go before they come in
                index = read_snapshot(path)
                self.follower.snapshot_served(path)
            self.swap(index)
            return report

    def _fold_in(self, declared: int | None, previous: int) -> FoldIn:
        """The events a load folds in: past the watermark it declares (or, when it declares
        none, the previous list's: upstream took those in before), up to the last there is."""
        # what other processes wrote first: a watermark upstream took from the feed may name
        # an event another worker wrote that this one has not read yet (not "past the last")
        self.follower.take_events()
        last = self.last_sequence
        watermark = previous if declared is None else declared
        if watermark > last:
            raise _refused(f"events_through {watermark} is past the last event there is "
                           f"({last})")
        if watermark < previous:
            raise _refused(f"events_through {watermark} goes back past the serving list's "
                           f"{previous}: the events between were left to upstream already")
        events = self._events_after(watermark, self._held_events().after(watermark))
        if self.source is not None and self.source.applied < last:
            # a replica folds only what it has read without a gap: its own later writes, taken
            # before the events between were read, stay on top of the new list
            through = max(self.source.applied, watermark)
            events = events.take(events.sequence <= through)
            return FoldIn(events, watermark, through)
        last = max(last, int(events.sequence[-1]) if len(events) else 0)
        return FoldIn(events, watermark, last)


class _JournalFeed:
    """The change feed of an engine without an event source: its journal."""

    def __init__(self, journal: EventStore, after: int) -> None:
        self.journal = journal
        self.sent = after

    def read(self, max_events: int) -> EventColumns:
        events = self.journal.columns().after(self.sent)
        if len(events) > max_events:
            events = events.take(np.arange(max_events))
        if len(events):
            self.sent = int(events.sequence[-1])
        return events

    def close(self) -> None:
        pass


def _each_once(events: EventColumns) -> EventColumns:
    """In sequence order, each sequence once (what is on disk and what is held overlap)."""
    if len(events) < 2:
        return events
    _, first = np.unique(events.sequence, return_index=True)
    return events.take(first)


def _refused(why: str) -> SnapshotRefused:
    report = LoadReport(files=[])
    report.refused = why
    return SnapshotRefused(report)

"""The engine: the serving list, real-time events on top of it, and the atomic snapshot swap.

State is one immutable pair (index, overlay) read once by each check, so a check sees the whole
old list or the whole new one, never a mix. Real-time events (SPEC §4) live in the overlay: for
one (number, scope, category) the latest event time wins, an opt-in is a tombstone. A snapshot
swap keeps the events later than the new snapshot's `as_of` (SPEC §5): a nightly load never
undoes a newer real-time opt-out or opt-in.

With a data directory, every event is first made durable in the write log (anning.eventlog),
which all worker processes share: each check first takes in what the log gained since the last
one (one fstat when nothing did), so a write acknowledged by any worker is seen by every check
that starts after the acknowledgement. A snapshot another worker wrote is picked up the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np

from anning._normalize import normalize_number, normalize_sender
from anning.checkpoint import CHECKPOINT_NAME, Checkpoint, read_checkpoint, write_checkpoint
from anning.demo import SNAPSHOT_NAME
from anning.errors import InvalidInput
from anning.eventlog import EventLog, encode
from anning.events import OPT_IN, OPT_OUT, REASSIGN, Event, EventTable, Overlay
from anning.index import UNKNOWN_SENDER, SuppressionIndex
from anning.loader import (
    LoadOptions,
    LoadReport,
    ProgressFn,
    SnapshotRefused,
    check_shrink,
    read_snapshot_files,
)
from anning.logio import OS_IO, FileIO
from anning.replies import OPT_IN as REPLY_OPT_IN
from anning.replies import OPT_OUT_GLOBAL, recognise_reply
from anning.scopes import (
    ALL_CATEGORIES,
    DEFAULT_CATEGORIES,
    GLOBAL,
    SOURCES,
    Scope,
    category_mask,
    parse_scope,
)

__all__ = ["CheckpointReport", "Engine", "Event", "NotReady", "ReplyOutcome"]

_BATCH = 2  # a log record of many events: [2, [[kind, number, scope, mask, at_ms, source]...]]
_POLL_S = 0.5  # how often a process looks for a new snapshot or checkpoint file

_EARLIEST_MS = 946_684_800_000  # 2000-01-01: no event is older
_FUTURE_SLACK_MS = 24 * 3600 * 1000
_LEVELS = ((Scope.SENDER, 0), (Scope.ENTITY, 1), (Scope.GLOBAL, 2))


class NotReady(Exception):
    """No list is loaded yet: the caller must fail closed (UNAVAILABLE), never "not suppressed"."""


@dataclass(frozen=True)
class ReplyOutcome:
    recognised: bool
    action: str
    keyword: str
    scope: str
    event: Event | None
    sequence: int


def _record(event: Event) -> bytes:
    return encode((1, event.kind, event.number, event.scope, event.mask, event.at_ms,
                   event.source))


def _validate(e: Event) -> None:
    """The checks every event passes before it can reach the log (one bad record there would
    stop every later start-up): make_event's and, for an Event made by hand, apply's."""
    if e.kind not in (OPT_OUT, OPT_IN, REASSIGN) or isinstance(e.kind, bool):
        raise InvalidInput(f"kind: {e.kind!r} is not an opt-out, opt-in or reassignment")
    if not isinstance(e.mask, int) or isinstance(e.mask, bool) or \
            not (e.mask == 0 if e.kind == REASSIGN else 0 < e.mask <= 0xFF):
        raise InvalidInput(f"mask: {e.mask!r} is not a category mask for this kind")
    if not isinstance(e.number, int) or isinstance(e.number, bool) or not 0 < e.number < 10**15:
        raise InvalidInput(f"number: {e.number!r} is not an E.164 number")
    if not isinstance(e.scope, str):
        raise InvalidInput(f"scope: {e.scope!r} is not text")
    if not isinstance(e.at_ms, int) or isinstance(e.at_ms, bool) or \
            not _EARLIEST_MS <= e.at_ms <= time.time() * 1000 + _FUTURE_SLACK_MS:
        raise InvalidInput(f"at_ms: {e.at_ms!r} is not a time between 2000 and tomorrow "
                           "(Unix ms)")
    if e.source not in SOURCES or e.source == "snapshot":
        raise InvalidInput(f"source: {e.source!r} is not one of {', '.join(SOURCES[1:])}")


def _event(record: list) -> Event:
    _version, kind, number, scope, mask, at_ms, source = record[:7]
    return Event(number, scope, mask, kind, at_ms, source)


@dataclass(frozen=True)
class CheckpointReport:
    rows: int  # latest events held, one per (number, scope, category) and per reassignment
    covers: int  # the last log segment folded in
    retired_bytes: int  # of log segments deleted
    seconds: float


@dataclass(frozen=True)
class _State:
    index: SuppressionIndex
    overlay: Overlay


class Engine:
    """Checks against the serving list plus real-time events; loads and swaps snapshots."""

    def __init__(
        self, index: SuppressionIndex | None = None, data_dir: str | PathLike[str] | None = None,
        *, write_log: bool = True, io: FileIO = OS_IO, recover: bool = True,
    ) -> None:
        """`recover=False` skips taking in the events on disk: for a tool that only folds the
        log into a checkpoint (which reads them from disk itself), never for serving."""
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.io = io
        self._write_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._adopt_lock = threading.Lock()
        self._backlog: list[Event] | None = None  # events taken while a checkpoint is adopted
        self._state: _State | None = None
        self._pending = Overlay()  # events taken before any list was loaded
        self._snapshot_id: tuple | None = None
        self._checkpoint_id: tuple | None = None
        self._polled = 0.0
        # checks poll for new files themselves unless a thread of the caller's does (poll())
        self.poll_in_background = False
        self.last_refusal: str | None = None
        self.log: EventLog | None = None
        if self.data_dir is not None and write_log:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.log = EventLog(self.data_dir, io)
            if recover:
                self._pending = self._recover(as_of_ms=0)
        if index is not None:
            self.swap(index)

    def _recover(self, as_of_ms: int) -> Overlay:
        """The events on disk: the checkpoint, then the log segments after it, folded into one
        table (vectorised: a restart with a million logged events stays quick). Leaves the log's
        reader at the end of what was read."""
        assert self.log is not None and self.data_dir is not None
        path = self.data_dir / CHECKPOINT_NAME
        while True:
            identity = _file_identity(path)
            checkpoint = read_checkpoint(path) if identity is not None else \
                Checkpoint(EventTable.empty(), 0, 0)
            records = self.log.replay(after=checkpoint.covers)
            if _file_identity(path) == identity:
                break
            # another process checkpointed meanwhile and may have retired what we were to read
        if checkpoint.covers and self.log.segments()[0] <= checkpoint.covers:
            self.log.retire(checkpoint.covers)  # a checkpoint that crashed before retiring
        self._checkpoint_id = identity
        table = checkpoint.table.fold_records(records, as_of_ms) if records else \
            checkpoint.table.after(as_of_ms)
        return Overlay(table)

    def after_fork(self) -> None:
        """In a forked worker: log descriptors of its own (an O_APPEND file position shared
        with other processes would garble the sequence each write reports)."""
        if self.log is not None:
            self.log = self.log.reopen()

    def log_lag(self) -> int:
        return self.log.lag() if self.log is not None else 0

    def open_snapshot(self) -> bool:
        """Serve the binary snapshot of the data directory, if there is one."""
        if self.data_dir is None or not (self.data_dir / SNAPSHOT_NAME).exists():
            return False
        path = self.data_dir / SNAPSHOT_NAME
        identity = _file_identity(path)
        self.swap(SuppressionIndex.load(path))
        self._snapshot_id = identity
        return True

    def refresh(self) -> None:
        """Take in what other processes wrote: a new snapshot or checkpoint file, log records.
        With `poll_in_background` set, only the log's records (and a checkpoint when the log
        has been retired under this reader): the caller runs `poll()` in a thread of its own."""
        if self.data_dir is not None and not self.poll_in_background and \
                time.monotonic() - self._polled > _POLL_S:
            self.poll()
            return
        self._tail()

    def poll(self) -> None:
        """Look for a new snapshot or checkpoint file (another process's) and serve it, then
        take in the log. Loading a file is long (every byte of a snapshot is checked): a
        server calls this from a thread, off the path of its checks (`poll_in_background`)."""
        if self.data_dir is not None:
            self._polled = time.monotonic()
            self._poll_files()
        self._tail()

    def _tail(self) -> None:
        if self.log is None:
            return
        if self.log.behind and self.data_dir is not None:
            self._adopt_checkpoint()
        records = self.log.tail()
        if records:
            self._take([_event(record) for record in records])
        if self.log.behind and self.data_dir is not None:
            # segments retired under the reader: what they held is in the checkpoint, which
            # must be served before any answer
            self._adopt_checkpoint()

    def _poll_files(self) -> None:
        assert self.data_dir is not None
        path = self.data_dir / SNAPSHOT_NAME
        identity = _file_identity(path)
        if identity is not None and identity != self._snapshot_id and \
                not self._load_lock.locked():
            with self._load_lock:
                self.swap(SuppressionIndex.load(path))
                self._snapshot_id = identity
        if self.log is not None and self._checkpoint_to_adopt():
            # Another thread of ours adopting it already: a check that is not behind answers
            # from what it has (every event it took is still there) instead of waiting, or
            # of adopting it once more.
            if self._adopt_lock.locked() and not self.log.behind:
                return
            self._adopt_checkpoint()

    def _checkpoint_to_adopt(self) -> bool:
        """The log was retired under this reader, or a checkpoint file it has not served."""
        assert self.log is not None and self.data_dir is not None
        return self.log.behind or \
            _file_identity(self.data_dir / CHECKPOINT_NAME) != self._checkpoint_id

    def _adopt_checkpoint(self) -> None:
        """Serve the events of a new checkpoint (another process's or ours) and of the log
        after it, in place of what this process had taken: the same events, held compactly.
        The new overlay is built outside the write lock (checks and writes go on); what the
        old one took meanwhile is put on the new one before it serves."""
        with self._adopt_lock:
            if not self._checkpoint_to_adopt():
                return  # adopted by another thread while this one waited
            with self._write_lock:
                self._backlog = []
            try:
                state = self._state
                overlay = self._recover(int(state.index.meta.get("as_of_ms", 0)) if state else 0)
            except BaseException:
                with self._write_lock:
                    self._backlog = None
                raise
            with self._write_lock:
                backlog, self._backlog = self._backlog, None
                state = self._state
                as_of = int(state.index.meta.get("as_of_ms", 0)) if state else 0
                if state is not None:
                    overlay = overlay.after(as_of)  # a swap meanwhile may have moved as_of
                overlay.apply_many([e for e in backlog if e.at_ms > as_of])
                if state is None:
                    self._pending = overlay
                else:
                    self._state = _State(state.index, overlay)

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

    def status(self) -> dict:
        state = self._state
        failure = self.log.failure if self.log is not None else None
        writes = {"writes_ok": failure is None, "writes_error": failure or "",
                  "last_refusal": self.last_refusal or ""}
        if state is None:
            return {"ready": False, "events": len(self._pending), **writes}
        idx = state.index
        as_of_ms = idx.meta.get("as_of_ms")
        return {
            "ready": True,
            "entries": len(idx),
            "senders": len(idx.senders),
            "bytes": idx.nbytes,
            "as_of": idx.meta.get("as_of"),
            "age_seconds": time.time() - as_of_ms / 1000 if as_of_ms else 0.0,
            "events": len(state.overlay),
            **writes,
        }

    def swap(self, index: SuppressionIndex) -> None:
        """Serve `index` from now on, with the events later than its as_of on top."""
        as_of = int(index.meta.get("as_of_ms", 0))
        with self._write_lock:  # no event slips between the copy and the swap
            current = self._state.overlay if self._state else self._pending
            self._state = _State(index, current.after(as_of))

    # -- checks ------------------------------------------------------------------------------
    def serving(self) -> _State:
        """Take in what other processes wrote, then the (index, overlay) pair to answer from.
        A batch takes its sender ids from this index and checks against this same pair, so a
        swap in between cannot give one list's sender ids to another list."""
        if self.log is not None or self.data_dir is not None:
            self.refresh()
        state = self._state
        if state is None:
            raise NotReady("no suppression list is loaded yet")
        return state

    def check(self, sender: str, number: str | int, category: str = "marketing") -> Scope:
        state = self.serving()
        scope = state.index.check(sender, number, category)
        if state.overlay.empty:
            return scope
        num = normalize_number(number, state.index.default_country)
        if not state.overlay.has(num):
            return scope
        bit = state.index.category_bit(category)
        return _with_events(state, normalize_sender(sender), num, bit)

    def check_ids(
        self, sender_ids: np.ndarray, numbers: np.ndarray, category: str = "marketing",
        sender_of: Callable[[int], str] | None = None, state: _State | None = None,
    ) -> np.ndarray:
        """The batch path: the index's kernel, then the few numbers with events redone.

        `sender_of(i)` gives the sender of check i as the caller wrote it: a sender the index
        does not know (UNKNOWN_SENDER) may still have real-time events of its own, which only
        its name can find. `state` (from `serving()`) is the list the sender ids were taken
        from; without it, the list serving now."""
        if state is None:
            state = self.serving()
        idx = state.index
        codes = idx.check_ids(sender_ids, numbers, category)
        if not state.overlay.empty:
            numbers = np.asarray(numbers, np.uint64)
            bit = idx.category_bit(category)
            for i in np.flatnonzero(state.overlay.contains(numbers)):
                sid = int(sender_ids[i])
                name = idx.senders[sid] if sid != UNKNOWN_SENDER else _name_of(sender_of, i)
                codes[i] = _with_events(state, name, int(numbers[i]), bit)
        return codes

    # -- writes: durable in the write log first, then visible --------------------------------
    def opt_out(self, number: str | int, scope: str, category: str = "marketing",
                at_ms: int | None = None, source: str = "api") -> Event:
        return self._write(self.make_event(number, scope, category, OPT_OUT, at_ms, source))

    def opt_in(self, number: str | int, scope: str, category: str = "marketing",
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
        """Validate a write into an Event; InvalidInput names the bad field. A reassignment
        has no scope or category."""
        state = self._state
        country = state.index.default_country if state else 86
        num = normalize_number(number, country)
        if kind == REASSIGN:
            key, mask = "", 0
        elif kind in (OPT_OUT, OPT_IN):
            key = parse_scope(scope, "scope")
            if isinstance(category, str) and category.strip().lower() == ALL_CATEGORIES:
                mask = 0xFF
            else:
                categories = state.index.categories if state else DEFAULT_CATEGORIES
                mask = category_mask(categories, category)
        else:
            raise InvalidInput(f"kind: {kind!r} is not an opt-out, opt-in or reassignment")
        event = Event(num, key, mask, kind, int(time.time() * 1000) if at_ms is None else at_ms,
                      source)
        _validate(event)
        return event

    def apply(self, events: list[Event]) -> int:
        """Make events durable (with a data directory), then visible; return the sequence of
        the last in the write log (0 without one). All or none: one append, one fsync. Raises
        DiskFull (nothing kept; retry later) or WritesStopped after a disk failure."""
        (outcome,) = self.apply_each([events])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def apply_each(self, writes: list[list[Event]]) -> list[int | Exception]:
        """Several callers' writes in one append and one fsync (the server's group commit):
        each write is all or none, one log record, and gets its own sequence, or the
        InvalidInput that refused it alone. A disk error (DiskFull, WritesStopped) is raised:
        then none of them was kept."""
        outcomes: list[int | Exception] = []
        records: list[bytes] = []
        slots: list[int] = []  # the outcome each record answers
        taken: list[Event] = []
        for events in writes:
            try:
                for e in events:
                    _validate(e)
            except InvalidInput as exc:
                outcomes.append(exc)
                continue
            outcomes.append(0)
            taken.extend(events)
            if self.log is None or not events:
                continue
            slots.append(len(outcomes) - 1)
            if len(events) == 1:
                records.append(_record(events[0]))
            else:  # one record: after a crash, all of the write is there or none of it
                records.append(encode((_BATCH, [
                    [e.kind, e.number, e.scope, e.mask, e.at_ms, e.source] for e in events])))
        if records:
            assert self.log is not None
            end = self.log.append(records)
            # one write(): the records lie back to back in one segment, so each one's
            # sequence (segment, end offset) is the next one's less that one's bytes
            for slot, record in zip(reversed(slots), reversed(records), strict=True):
                outcomes[slot] = end
                end -= len(record)
        if taken:
            self._take(taken)
        return outcomes

    def _take(self, events: list[Event]) -> None:
        """Put events on top of the serving list: the one way in, for this process's writes
        and for those the log brings from others alike. An event not later than the serving
        snapshot's as_of is superseded by that snapshot (SPEC §5)."""
        with self._write_lock:
            state = self._state
            overlay = state.overlay if state else self._pending
            as_of = int(state.index.meta.get("as_of_ms", 0)) if state else 0
            overlay.apply_many([e for e in events if e.at_ms > as_of])
            if self._backlog is not None:
                self._backlog.extend(events)

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
        reply = recognise_reply(text)
        name = normalize_sender(sender)
        if not reply.recognised:
            normalize_number(number, self._country())  # bad input is still named
            return ReplyOutcome(False, reply.action, "", "", None, 0)
        if reply.action == OPT_OUT_GLOBAL:
            scope = GLOBAL
        else:
            state = self._state
            scope = (state.index.entity_of(name) if state else None) or name
        kind = OPT_IN if reply.action == REPLY_OPT_IN else OPT_OUT
        event = self.make_event(number, scope, "marketing", kind, at_ms, "reply")
        return ReplyOutcome(True, reply.action, reply.keyword, scope, event, 0)

    def explain(self, sender: str, number: str | int, category: str = "marketing") -> dict:
        """Why a check answers as it does: the level, the entry or event that decided it."""
        state = self.serving()
        idx = state.index
        name = normalize_sender(sender)
        num = normalize_number(number, idx.default_country)
        bit = idx.category_bit(category)
        answer = {"suppressed": False, "scope": Scope.NONE, "matched": "", "categories": [],
                  "origin": "", "source": "", "at_ms": 0, "snapshot_as_of": idx.meta.get("as_of")}
        level, key, event, mask = _decide(state, name, num, bit)
        if event is not None:  # an opt-out decided, or a reassignment cleared the number
            # the categories this scope is opted out of by events (one per stored row, so the
            # answer is the same before and after a checkpoint folds the event)
            opted = sum(1 << b for b in range(len(idx.categories))
                        if level and (e := state.overlay.latest(num, key, b)) and e.opt_out)
            answer.update(suppressed=level != Scope.NONE, scope=level, matched=key,
                          categories=_category_names(idx, opted), origin="event",
                          source=event.source, at_ms=event.at_ms)
        elif level != Scope.NONE:
            answer.update(suppressed=True, scope=level, matched=key,
                          categories=_category_names(idx, mask), origin="snapshot",
                          source="snapshot")
        return answer

    def _country(self) -> int:
        state = self._state
        return state.index.default_country if state else 86

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint(self, min_log_bytes: int = 0) -> CheckpointReport | None:
        """Fold the write log into the events checkpoint and retire the folded segments.

        Runs beside checks (they keep answering from the state they have) and takes only what
        the sealed segments and the old checkpoint hold, in chunks. One process at a time
        (a lock file); returns None when another is at it or the log is smaller than
        `min_log_bytes`."""
        if self.log is None or self.data_dir is None:
            return None
        with self._checkpoint_lock, _exclusive(self.data_dir / "checkpoint.lock") as mine:
            if not mine or self.log.size() < max(min_log_bytes, 1):
                return None
            started = time.monotonic()
            path = self.data_dir / CHECKPOINT_NAME
            sealed = self.log.rotate()
            old = read_checkpoint(path) if path.exists() else Checkpoint(EventTable.empty(), 0, 0)
            state = self._state
            as_of = int(state.index.meta.get("as_of_ms", 0)) if state else 0
            records = self.log.records(old.covers + 1, sealed)
            table = old.table.fold_records(records, as_of)
            write_checkpoint(path, Checkpoint(table, sealed, as_of), self.io)
            retired = self.log.retire(sealed)
        self._adopt_checkpoint()
        return CheckpointReport(rows=len(table), covers=sealed, retired_bytes=retired,
                                seconds=time.monotonic() - started)

    # -- snapshots ---------------------------------------------------------------------------
    def load_snapshot(self, paths: Sequence[str | PathLike[str]],
                      options: LoadOptions | None = None,
                      progress: ProgressFn | None = None) -> LoadReport:
        """Parse, check the guards, write the binary snapshot, swap. Checks go on throughout;
        on a refusal (SnapshotRefused) the serving list and its file are untouched."""
        options = options or LoadOptions()
        with self._load_lock:
            try:
                index, report = read_snapshot_files(paths, options, progress)
                state = self._state
                before = len(state.index) if state else _entries_on_disk(self.data_dir)
                check_shrink(report, before, options)
            except SnapshotRefused as refused:
                self.last_refusal = refused.report.refused
                raise
            if self.data_dir is not None:
                path = self.data_dir / SNAPSHOT_NAME
                self.data_dir.mkdir(parents=True, exist_ok=True)
                index.save(path)
                del index  # serve the mapped pages: the built arrays go before they come in
                index = SuppressionIndex.load(path)
            self.swap(index)
            if self.data_dir is not None:
                self._snapshot_id = _file_identity(self.data_dir / SNAPSHOT_NAME)
            return report


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """A lock file across processes, without waiting: yields whether we hold it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _category_names(idx: SuppressionIndex, mask: int) -> list[str]:
    return [name for bit, name in enumerate(idx.categories) if mask >> bit & 1]


def _file_identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _entries_on_disk(data_dir: Path | None) -> int | None:
    if data_dir is None or not (data_dir / SNAPSHOT_NAME).exists():
        return None
    from anning.snapshot import snapshot_entries

    return snapshot_entries(data_dir / SNAPSHOT_NAME)


def _name_of(sender_of: Callable[[int], str] | None, i: int) -> str | None:
    """The normalised name of an unknown sender, when the caller can tell it."""
    if sender_of is None:
        return None
    try:
        return normalize_sender(sender_of(i))
    except InvalidInput:  # a bad item of a batch: it is answered with its error anyway
        return None


def _with_events(state: _State, sender: str | None, number: int, bit: int) -> Scope:
    """A check of a number that has real-time events."""
    return _decide(state, sender, number, bit)[0]


def _decide(state: _State, sender: str | None, number: int,
            bit: int) -> tuple[Scope, str, Event | None, int]:
    """Level by level, an event decides where there is one, the snapshot where there is not;
    after a reassignment of the number, the snapshot's entries (all older) no longer count.
    Returns (scope, matched key, the deciding opt-out event or the reassignment when nothing
    matched, the snapshot entry's category mask)."""
    idx, overlay = state.index, state.overlay
    reassigned = overlay.reassignment(number)
    keys = (sender, idx.entity_of(sender) if sender else None, GLOBAL)
    for level, i in _LEVELS:
        key = keys[i]
        if key is None:
            continue
        event = overlay.latest(number, key, bit)
        if event is not None:
            if event.opt_out:
                return level, key, event, 0
            continue
        if reassigned is None:
            mask = idx.mask(number, key)
            if mask >> bit & 1:
                return level, key, None, mask
    return Scope.NONE, "", reassigned, 0

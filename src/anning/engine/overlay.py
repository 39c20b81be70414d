"""The real-time events on top of one serving list, resolved against it (SPEC §4, §5).

The list (a binary snapshot) holds the outcome of every event up to its `folded_through`; the
overlay holds the events after it. Each event is resolved when it is taken: for its (number,
scope, category) the latest statement wins - the event, an earlier event, or what the list says
there and when (anning.index.statements) - an opt-out over an opt-in at the same time, and
nothing older than the number's latest reassignment counts. The outcome goes into a compiled
table that the batch kernel consults in its GIL-free pass (anning._index.DecisionTable): per
(number, scope) which category bits the events decide, and which of those are opted out. So a
check is exact and compiled whether or not its number has events.

Three parts, one writer (the engine, under its lock):
- `store`: every event taken, as columns (anning.engine.store), to be resolved again against
  the next list;
- `latest`: the latest event per (number, scope id, bit) and each number's latest
  reassignment, compiled (anning._index.LatestTable); a write's events are offered to it in
  one call and the keys they changed are decided again in one vectorised pass, whether the
  write is one event or a restart's million;
- `decisions`: the compiled outcome, with the scope ids of names the list does not know and
  the sender ids of senders only events know (`extra_scope`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anning import _index
from anning._normalize import normalize_sender
from anning.engine.store import EventStore
from anning.index import UNKNOWN_SENDER, SuppressionIndex, hugepages
from anning.index.statements import NONE
from anning.index.statements import OPT_OUT as ROW_OUT
from anning.model.events import (
    OPT_OUT,
    REASSIGN,
    REASSIGN_SCOPE,
    Event,
    EventColumns,
)
from anning.model.scopes import ENTITY_PREFIX, GLOBAL, SOURCE_IDS, SOURCES

__all__ = ["Overlay", "Statement"]


@dataclass(frozen=True)
class Statement:
    """What decides one (number, scope, category bit): an event, the list's entry or
    tombstone, or a reassignment that took the list's entry out of play."""

    opted_out: bool
    at_ms: int
    origin: str  # "event", "snapshot", "reassignment"
    source: str
    event: Event | None = None


class Overlay:
    """The events past one list's fold, resolved against it."""

    def __init__(self, index: SuppressionIndex) -> None:
        self.index = index
        self.folded_through = index.folded_through
        self.newest_ms = index.statements.newest_ms  # an event later than this wins outright
        self.store = EventStore(self.folded_through)
        self.latest = _index.LatestTable()  # by (number, overlay scope id, bit)
        self.live_count = 0  # events taken one write at a time since the overlay was built
        self.decisions = _index.DecisionTable(hugepages.zeros)
        self._extension: dict[str, int] = {}  # scope names the list does not know -> ids
        self._ids: dict[str, int] = {}  # every scope name asked of scope_id that has an id
        self._extension_names: list[str] = []
        self.extra_senders: dict[str, int] = {}  # sender names only events know -> sender ids
        self.extra_scope: npt.NDArray[np.uint32] = np.empty(0, np.uint32)

    @classmethod
    def of(cls, index: SuppressionIndex, events: EventColumns) -> Overlay:
        """An overlay of `events` (those past the list's fold are kept) over `index`, resolved
        in bulk (a restart with a million events stays quick)."""
        overlay = cls(index)
        fresh = overlay.store.add_columns(events)
        if len(fresh):
            overlay._resolve_new(fresh)
        return overlay

    # -- what the kernel needs -----------------------------------------------------------------
    @property
    def empty(self) -> bool:
        return self.decisions.numbers == 0

    def has(self, number: int) -> bool:
        found = self.decisions.contains(np.array([number], np.uint64))
        return bool(found[0])

    def sender_id(self, name: str) -> int:
        """The sender id of a normalised sender name: the list's, or one only events know."""
        sid = self.index._table.sender_ids.get(name)
        if sid is not None:
            return sid
        return self.extra_senders.get(name, UNKNOWN_SENDER)

    def sender_ids(self, texts: list[str]) -> npt.NDArray[np.uint32]:
        """Sender ids of senders as callers wrote them (InvalidInput names a bad one)."""
        ids = self.index.sender_ids(texts)
        if self.extra_senders:
            for i in np.flatnonzero(ids == UNKNOWN_SENDER).tolist():
                ids[i] = self.extra_senders.get(normalize_sender(texts[i]), UNKNOWN_SENDER)
        return ids

    def check_ids(self, sender_ids: npt.NDArray[np.uint32], numbers: npt.NDArray[np.uint64],
                  category: str, out: npt.NDArray[np.uint8] | None = None,
                  ) -> npt.NDArray[np.uint8]:
        return self.index.check_ids(sender_ids, numbers, category, out,
                                    self.decisions if not self.empty else None,
                                    self.extra_scope)

    def __len__(self) -> int:
        return len(self.store)

    # -- scope ids ---------------------------------------------------------------------------
    def scope_id(self, name: str, add: bool = False) -> int | None:
        """The id of a scope key: the list's, or one of the overlay's own (`add`: made).
        Remembered once known (ids never change for an overlay): a write asks it of every event,
        and the two lookups behind it cost a microsecond."""
        sid = self._ids.get(name)
        if sid is not None:
            return sid
        sid = self.index.scope_id(name)
        if sid is not None:
            self._ids[name] = sid
            return sid
        sid = self._extension.get(name)
        if sid is None and add:
            sid = self._extension[name] = len(self.index.scopes) + len(self._extension)
            self._extension_names.append(name)
            if name != GLOBAL and not name.startswith(ENTITY_PREFIX):
                # a sender only events know: checks of it need a sender id of their own
                self.extra_senders[name] = len(self.index.senders) + len(self.extra_senders)
                self.extra_scope = np.append(self.extra_scope, np.uint32(sid))
        if sid is not None:
            self._ids[name] = sid
        return sid

    def scope_name(self, sid: int) -> str:
        listed = len(self.index.scopes)
        return self.index.scopes[sid] if sid < listed else self._extension_names[sid - listed]

    # -- taking events -------------------------------------------------------------------------
    def take(self, events: list[Event]) -> None:
        """Events taken one write at a time (the caller holds the engine's write lock)."""
        fresh = self.store.add(events)
        if not fresh:
            return
        self.live_count += len(fresh)
        # one compiled pass offers them and decides the keys an event decides outright (the
        # usual write: later than anything the list says); numpy's fixed cost a call, ~29 us
        # for a one-event write in the vectorised pass, is paid only for the rest
        scope_id = self.scope_id
        scopes = np.array([REASSIGN_SCOPE if e.kind == REASSIGN else scope_id(e.scope, add=True)
                           for e in fresh], np.uint32)
        moved, moved_at = self.index.statements.reassigned_columns()
        number, scope, bit, moves = _index.take_events(
            self.latest, self.decisions, fresh, scopes, SOURCE_IDS, self.newest_ms,
            len(self.index.scopes), moved, moved_at)
        self._decide_with_moves(number, scope, bit, moves)

    def _resolve_new(self, events: EventColumns) -> None:
        """Offer new events (a restart's, a catch-up's) to the latest-event table, not yet
        shared, and decide again, in bulk, every key where one of them became the latest."""
        c = events.columns
        moves = c["kind"] == REASSIGN
        ids = np.array([self.scope_id(name, add=True) for name in events.scopes] or [0],
                       np.uint32)
        mask = np.where(moves, np.uint8(1), c["mask"])  # a reassignment: one row, bit 0
        row, column = np.nonzero(np.unpackbits(mask[:, None], axis=1, bitorder="little"))
        is_move = moves[row]
        number = c["number"][row]
        scope = np.where(is_move, np.uint32(REASSIGN_SCOPE),
                         ids[np.where(moves, 0, c["scope"])[row]])
        bit = column.astype(np.uint8)
        won = self.latest.offer_many(number, scope, bit, c["at"][row], c["kind"][row],
                                     c["source"][row], c["sequence"][row], False).view(bool)
        keyed = won & ~is_move
        self._decide_with_moves(number[keyed], scope[keyed], bit[keyed],
                                number[won & is_move])

    def _decide_with_moves(self, number: npt.NDArray[np.uint64],
                           scope: npt.NDArray[np.uint32], bit: npt.NDArray[np.uint8],
                           moved: npt.NDArray[np.uint64]) -> None:
        """`_decide` these key-bits and, for each number a reassignment event newly moved,
        every key the list or the events have of it (the reassignment decides them all)."""
        if not len(moved):
            self._decide(number, scope, bit)
            return
        numbers, scopes, bits = [number], [scope], [bit]
        for moved_number in np.unique(moved).tolist():
            key_scopes = self._scopes_of(moved_number)
            numbers.append(np.full(8 * len(key_scopes), moved_number, np.uint64))
            scopes.append(np.repeat(key_scopes, 8))
            bits.append(np.tile(np.arange(8, dtype=np.uint8), len(key_scopes)))
        self._decide(np.concatenate(numbers), np.concatenate(scopes), np.concatenate(bits))

    def _scopes_of(self, number: int) -> npt.NDArray[np.uint32]:
        """Every scope id the list or the events name for a number."""
        event_scopes, _bits = self.latest.keys_of(number)
        list_scopes, _masks = self.index.entries_of(number)
        return np.unique(np.concatenate([event_scopes, list_scopes.astype(np.uint32)]))

    def _decide(self, number: npt.NDArray[np.uint64], scope: npt.NDArray[np.uint32],
                bit: npt.NDArray[np.uint8]) -> None:
        """Resolve these key-bits (`resolve` with events_only, vectorised) and store the
        outcome for the kernel; the other bits of their keys keep theirs."""
        if not len(number):
            return
        found, at, kind, _source, _sequence = self.latest.get_many(number, scope, bit)
        moved, moved_at = self.latest.reassigned_many(number)
        moved = moved.view(bool)
        cut = moved_at
        if len(self.index.statements.reassigned):
            cut = np.maximum(moved_at, self.index.statements.reassigned_many(number))
        valid = found.view(bool) & (at >= cut)
        opt_out = kind == OPT_OUT
        # the list's statement counts where no event decides outright (an event later than
        # anything the list says - the usual write - needs no look)
        ask = (valid & (at <= self.newest_ms)) | (~valid & moved)
        out = valid & opt_out
        if ask.any():
            ask &= scope < len(self.index.scopes)
            row_kind = np.zeros(len(number), np.uint8)
            row_at = np.zeros(len(number), np.int64)
            where = np.flatnonzero(ask)
            if len(where):
                row_kind[where], row_at[where] = self.index.statements_of(
                    number[where], scope[where], bit[where])
            row_kind[moved & (row_at < moved_at)] = NONE  # older than the reassignment
            has_row = row_kind != NONE
            row_out = row_kind == ROW_OUT
            event_wins = valid & (~has_row | (at > row_at) |
                                  ((at == row_at) & (opt_out | ~row_out)))
            out = np.where(event_wins, opt_out, has_row & row_out)
        decided = valid | moved
        self.decisions.set_bits(number, scope, bit, decided.view(np.uint8),
                                (decided & out).view(np.uint8))

    # -- resolving ---------------------------------------------------------------------------
    def _latest(self, number: int, sid: int, bit: int) -> Event | None:
        """The latest event of one key-bit (REASSIGN_SCOPE, 0: the number's reassignment)."""
        found, at, kind, source, sequence = self.latest.get_many(
            np.array([number], np.uint64), np.array([sid], np.uint32), np.array([bit], np.uint8))
        if not found[0]:
            return None
        if sid == REASSIGN_SCOPE:
            return Event(number, "", 0, REASSIGN, int(at[0]), SOURCES[int(source[0])],
                         int(sequence[0]))
        return Event(number, self.scope_name(sid), 1 << bit, int(kind[0]), int(at[0]),
                     SOURCES[int(source[0])], int(sequence[0]))

    def latest_event(self, number: int, scope: str, bit: int) -> Event | None:
        """The latest event of the key past the list's fold, unless a reassignment (an event's
        or the list's) came after it."""
        sid = self.scope_id(scope)
        event = None if sid is None else self._latest(number, sid, bit)
        if event is None:
            return None
        moved = self.reassignment(number)
        cut = max(moved.at_ms if moved else 0, self.index.statements.reassigned_at(number))
        return event if event.at_ms >= cut else None

    def resolve(self, number: int, scope: str, bit: int,
                events_only: bool = False) -> Statement | None:
        """What decides (number, scope, bit) once events are counted. With `events_only`, None
        where no event (and no reassignment event) has a say: the list's entry answers as it
        is; else the list's statement too, or None where nothing is said."""
        moved = self.reassignment(number)
        event = self.latest_event(number, scope, bit)
        if event is None and moved is None and events_only:
            return None
        kind, at = NONE, 0
        if event is None or event.at_ms <= self.newest_ms:  # the list may say later
            sid = self.index.scope_id(scope)
            if sid is not None:
                kind, at = self.index.statement(number, sid, bit)
        if moved is not None and kind != NONE and at < moved.at_ms:
            kind = NONE  # the list's statement is older than the reassignment: out of play
        row = None if kind == NONE else (at, kind == ROW_OUT)
        if event is not None and (row is None or (event.at_ms, event.opt_out) >= row):
            return Statement(event.opt_out, event.at_ms, "event", event.source, event)
        if row is not None:
            return Statement(row[1], row[0], "snapshot", "snapshot")
        if moved is not None:  # nothing said since the reassignment
            return Statement(False, moved.at_ms, "reassignment", moved.source, moved)
        return None

    def reassignment(self, number: int) -> Event | None:
        """The latest reassignment event of the number past the list's fold."""
        return self._latest(number, REASSIGN_SCOPE, 0)

    def opted_out_bits(self, number: int, scope: str) -> int:
        """The category bits of (number, scope) that events opt out of, by their own say."""
        return sum(1 << bit for bit in range(8)
                   if (e := self.latest_event(number, scope, bit)) is not None and e.opt_out)

    def first_at_ms(self, after: int) -> int:
        """The time of the first event (by sequence) past `after` held here (0: none)."""
        return self.store.first_at_ms(after)

    # -- carrying on to a new list -----------------------------------------------------------
    def events(self) -> EventColumns:
        """Every event held, in sequence order."""
        return self.store.columns()

    def compacted(self) -> Overlay:
        """The same events resolved again, in bulk, into a new overlay."""
        return Overlay.of(self.index, self.store.columns())

    @property
    def nbytes(self) -> int:
        return self.store.nbytes + self.latest.nbytes + self.decisions.nbytes

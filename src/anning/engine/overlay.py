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
- the latest event per key: a compact table (built in bulk) plus a dict of those taken since;
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
from anning.index import UNKNOWN_SENDER, SuppressionIndex
from anning.index.statements import NONE
from anning.index.statements import OPT_OUT as ROW_OUT
from anning.model.events import (
    OPT_OUT,
    REASSIGN,
    REASSIGN_SCOPE,
    Event,
    EventColumns,
    EventTable,
)
from anning.model.scopes import ENTITY_PREFIX, GLOBAL

__all__ = ["Overlay", "Statement"]

_ALL_BITS = 0xFF


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
        self.table = EventTable.empty()
        self.live: dict[tuple[int, str], dict[int, Event]] = {}
        # the scopes of `live` by number: a reassignment decides every key of its number, and
        # a scan of every live key for them cost each reassignment milliseconds
        self.live_scopes: dict[int, list[str]] = {}
        self.live_reassigned: dict[int, Event] = {}
        self.live_count = 0
        self.decisions = _index.DecisionTable()
        self._extension: dict[str, int] = {}  # scope names the list does not know -> ids
        self.extra_senders: dict[str, int] = {}  # sender names only events know -> sender ids
        self.extra_scope: npt.NDArray[np.uint32] = np.empty(0, np.uint32)

    @classmethod
    def of(cls, index: SuppressionIndex, events: EventColumns) -> Overlay:
        """An overlay of `events` (those past the list's fold are kept) over `index`, resolved
        in bulk (vectorised: a restart with a million events stays quick)."""
        overlay = cls(index)
        overlay._take_bulk(events)
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
        """The id of a scope key: the list's, or one of the overlay's own (`add`: made)."""
        sid = self.index.scope_id(name)
        if sid is not None:
            return sid
        sid = self._extension.get(name)
        if sid is None and add:
            sid = self._extension[name] = len(self.index.scopes) + len(self._extension)
            if name != GLOBAL and not name.startswith(ENTITY_PREFIX):
                # a sender only events know: checks of it need a sender id of their own
                self.extra_senders[name] = len(self.index.senders) + len(self.extra_senders)
                self.extra_scope = np.append(self.extra_scope, np.uint32(sid))
        return sid

    # -- taking events -------------------------------------------------------------------------
    def take(self, events: list[Event]) -> None:
        """Events taken one write at a time (the caller holds the engine's write lock)."""
        fresh = self.store.add(events)
        if not fresh:
            return
        affected: dict[tuple[int, str], int] = {}
        moved: list[int] = []
        for e in fresh:
            if e.kind == REASSIGN:
                if e.wins_over(self._reassigned_event(e.number)):
                    self.live_reassigned[e.number] = e
                    moved.append(e.number)
                continue
            self.scope_id(e.scope, add=True)
            per_bit = self.live.get((e.number, e.scope))
            if per_bit is None:
                per_bit = self.live[e.number, e.scope] = {}
                self.live_scopes.setdefault(e.number, []).append(e.scope)
            for bit in range(8):
                if e.mask >> bit & 1 and e.wins_over(per_bit.get(bit) or self._stored(
                        e.number, e.scope, bit)):
                    per_bit[bit] = e
                    key = (e.number, e.scope)
                    affected[key] = affected.get(key, 0) | 1 << bit
        self.live_count += len(fresh)
        for number in moved:
            for key in self._keys_of(number):
                affected[key] = _ALL_BITS
        if affected:
            self._decide(affected)

    def _take_bulk(self, events: EventColumns) -> None:
        events = self.store.add_columns(events)
        if not len(events):
            return
        self.table = EventTable.of(events)
        self._decide_bulk()

    def _decide_bulk(self) -> None:
        """`_decide` of every key the table touches, at once, in numpy: each key-bit with an
        event resolved against the list; and, for a number reassigned by an event, every
        entry the list has of it (the reassignment decides them all)."""
        c = self.table.columns
        moves = c["scope"] == REASSIGN_SCOPE
        moved_numbers, moved_times = c["number"][moves], c["at"][moves]
        keyed = ~moves
        number, scope, bit = c["number"][keyed], c["scope"][keyed], c["bit"][keyed]
        at, opt_out = c["at"][keyed], c["kind"][keyed] == OPT_OUT
        moved_at = _lookup(moved_numbers, moved_times, number)
        listed_at = self.index.statements.reassigned_many(number)
        valid = at >= np.maximum(moved_at, listed_at)
        names = self.table.scopes
        overlay_ids = np.array([self.scope_id(name, add=True) for name in names] or [0],
                               np.uint32)
        index_ids = np.array([-1 if (i := self.index.scope_id(name)) is None else i
                              for name in names] or [0], np.int64)
        sid = index_ids[scope]
        ask = (sid >= 0) & (~valid | (at <= self.newest_ms))
        row_kind = np.zeros(len(number), np.uint8)
        row_at = np.zeros(len(number), np.int64)
        where = np.flatnonzero(ask)
        if len(where):
            row_kind[where], row_at[where] = self.index.statements_of(
                number[where], sid[where].astype(np.uint32), bit[where])
        row_kind[(moved_at > 0) & (row_at < moved_at)] = NONE
        has_row = row_kind != NONE
        row_out = row_kind == ROW_OUT
        event_wins = valid & (~has_row | (at > row_at) | ((at == row_at) & (opt_out | ~row_out)))
        out = np.where(event_wins, opt_out, has_row & row_out)
        decide = valid | (moved_at > 0)
        parts = [(number[decide], overlay_ids[scope[decide]],
                  (1 << bit[decide].astype(np.uint16)).astype(np.uint8), out[decide])]
        parts.append(self._moved_entries(moved_numbers, moved_times))
        numbers = np.concatenate([p[0] for p in parts])
        keys = np.concatenate([p[1] for p in parts])
        bits = np.concatenate([p[2] for p in parts])
        outs = np.concatenate([p[3] for p in parts])
        by_event = np.concatenate([np.ones(len(parts[0][0]), bool),
                                   np.zeros(len(parts[1][0]), bool)])
        if not len(numbers):
            return
        order = np.lexsort((keys, numbers))
        numbers, keys, bits = numbers[order], keys[order], bits[order]
        outs, by_event = outs[order], by_event[order]
        first = np.ones(len(numbers), bool)
        first[1:] = (numbers[1:] != numbers[:-1]) | (keys[1:] != keys[:-1])
        group = np.cumsum(first) - 1
        n = int(group[-1]) + 1
        event_bits, event_out = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
        moved_bits, moved_out = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
        np.bitwise_or.at(event_bits, group[by_event], bits[by_event])
        np.bitwise_or.at(event_out, group[by_event], np.where(outs, bits, 0)[by_event]
                         .astype(np.uint8))
        np.bitwise_or.at(moved_bits, group[~by_event], bits[~by_event])
        np.bitwise_or.at(moved_out, group[~by_event], np.where(outs, bits, 0)[~by_event]
                         .astype(np.uint8))
        # an event's say over a bit stands; the reassignment decides the others
        decided = event_bits | moved_bits
        optout = (event_out & event_bits) | (moved_out & ~event_bits)
        self.decisions.set_many(numbers[first], keys[first], decided, optout.astype(np.uint8))

    def _moved_entries(self, numbers: np.ndarray,
                       times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]:
        """(number, scope id, bit, opted out) of every category bit of every entry the list
        has of these reassigned numbers: decided now, opted out only where the list's statement
        is not older than the reassignment."""
        rows_n, rows_s, rows_m = [], [], []
        listed = self.index.statements.reassigned_many(numbers) if len(numbers) else numbers
        moved_at = {}
        for number, at, before in zip(numbers.tolist(), times.tolist(),
                                      listed.tolist() if len(numbers) else [], strict=True):
            if at < before:
                continue  # the list's own reassignment is later: its entries are all newer
            scopes, masks = self.index.entries_of(number)
            rows_n += [number] * len(scopes)
            rows_s += scopes.tolist()
            rows_m += masks.tolist()
            moved_at[number] = at
        if not rows_n:
            empty = np.empty(0, np.uint64)
            return empty, np.empty(0, np.uint32), np.empty(0, np.uint8), np.empty(0, bool)
        number = np.array(rows_n, np.uint64)
        scope = np.array(rows_s, np.uint32)
        mask = np.array(rows_m, np.uint8)
        expanded = np.unpackbits(mask[:, None], axis=1, bitorder="little")
        row, bit = np.nonzero(expanded)
        number, scope, bit = number[row], scope[row], bit.astype(np.uint8)
        _kinds, times_of = self.index.statements_of(number, scope, bit)
        cut = np.array([moved_at[n] for n in number.tolist()], np.int64)
        # every bit of those entries decided (undecided bits: none of the list's entries)
        all_bits = np.full(len(number), 0, np.uint8)
        all_bits[:] = (1 << bit.astype(np.uint16)).astype(np.uint8)
        return number, scope, all_bits, times_of >= cut

    def _keys_of(self, number: int) -> list[tuple[int, str]]:
        """Every scope the list or the events name for a number (a reassignment decides all)."""
        keys = {(number, s) for s, _bit in self.table.keys_of(number)} if len(self.table) \
            else set()
        keys.update((number, scope) for scope in self.live_scopes.get(number, ()))
        scope_ids, _masks = self.index.entries_of(number)
        keys.update((number, self.index.scopes[s]) for s in scope_ids.tolist())
        return sorted(keys)

    def _decide(self, affected: dict[tuple[int, str], int]) -> None:
        """Resolve the affected bits of each key and store the outcome for the kernel."""
        n = len(affected)
        numbers = np.empty(n, np.uint64)
        scope_ids = np.empty(n, np.uint32)
        decided = np.empty(n, np.uint8)
        optout = np.empty(n, np.uint8)
        for i, ((number, scope), bits) in enumerate(affected.items()):
            sid = self.scope_id(scope, add=True)
            assert sid is not None
            was_decided, was_out = self.decisions.get(number, sid)
            d, o = was_decided & ~bits, was_out & ~bits
            for bit in range(8):
                if bits >> bit & 1:
                    statement = self.resolve(number, scope, bit, events_only=True)
                    if statement is not None:
                        d |= 1 << bit
                        o |= statement.opted_out << bit
            numbers[i], scope_ids[i], decided[i], optout[i] = number, sid, d, o
        self.decisions.set_many(numbers, scope_ids, decided, optout)

    # -- resolving ---------------------------------------------------------------------------
    def _stored(self, number: int, scope: str, bit: int) -> Event | None:
        return self.table.latest(number, scope, bit) if len(self.table) else None

    def _reassigned_event(self, number: int) -> Event | None:
        live = self.live_reassigned.get(number)
        stored = self.table.reassignment(number) if len(self.table) else None
        return live if live is not None and live.wins_over(stored) else stored

    def latest_event(self, number: int, scope: str, bit: int) -> Event | None:
        """The latest event of the key past the list's fold, unless a reassignment (an event's
        or the list's) came after it."""
        per_bit = self.live.get((number, scope))
        live = per_bit.get(bit) if per_bit else None
        stored = self._stored(number, scope, bit)
        event = live if live is not None and live.wins_over(stored) else stored
        if event is None:
            return None
        moved = self._reassigned_event(number)
        cut = max(moved.at_ms if moved else 0, self.index.statements.reassigned_at(number))
        return event if event.at_ms >= cut else None

    def resolve(self, number: int, scope: str, bit: int,
                events_only: bool = False) -> Statement | None:
        """What decides (number, scope, bit) once events are counted. With `events_only`, None
        where no event (and no reassignment event) has a say: the list's entry answers as it
        is; else the list's statement too, or None where nothing is said."""
        moved = self._reassigned_event(number)
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
        return self._reassigned_event(number)

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
        """The same events resolved in bulk: the dict of those taken one by one folded into the
        compact table."""
        return Overlay.of(self.index, self.store.columns())

    @property
    def nbytes(self) -> int:
        return self.store.nbytes + self.table.nbytes + self.decisions.nbytes


def _lookup(keys: np.ndarray, values: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """values[keys == number] for each number (keys sorted, unique), 0 where absent."""
    out = np.zeros(len(numbers), np.int64)
    if len(keys):
        at = np.minimum(np.searchsorted(keys, numbers), len(keys) - 1)
        found = keys[at] == numbers
        out[found] = values[at[found]]
    return out

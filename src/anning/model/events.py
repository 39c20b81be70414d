"""Real-time events on top of a snapshot (SPEC §4): what they are and how they are held.

For one (number, scope, category) the latest event time wins, whatever order events arrive in;
an opt-in is a tombstone; at a tie the opt-out wins (the side that keeps a promise). A number
reassignment at T drops every entry and event of that number older than T.

Events live in two parts. `EventTable` is compact and immutable: numpy columns, one row per
(number, scope, category bit) holding the latest event, plus one row per reassigned number; a
checkpoint writes it to disk and a restart maps it back. `Overlay` is that table plus the events
taken since (a dict), and an exact set of every number with an event, which a batch of checks
asks in one call without the GIL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anning._events import NumberSet
from anning.errors import InvalidInput
from anning.model.scopes import SOURCES

__all__ = ["COLUMNS", "OPT_IN", "OPT_OUT", "REASSIGN", "Event", "EventTable", "Overlay",
           "validate_event"]

OPT_OUT, OPT_IN, REASSIGN = 1, 2, 3
REASSIGN_SCOPE = 0xFFFFFFFF  # the scope column of a reassignment row
_CHUNK = 1 << 16
EARLIEST_MS = 946_684_800_000  # 2000-01-01: no event is older
FUTURE_SLACK_MS = 24 * 3600 * 1000  # a clock a day fast is tolerated, no more
COLUMNS = (("number", np.uint64), ("at", np.int64), ("scope", np.uint32), ("bit", np.uint8),
            ("kind", np.uint8), ("source", np.uint8))


@dataclass(frozen=True)
class Event:
    """An opt-out or opt-in of (number, scope) for the categories of `mask`, or a reassignment
    of `number` (scope "", mask 0), at `at_ms`."""

    number: int
    scope: str
    mask: int
    kind: int
    at_ms: int
    source: str

    @property
    def opt_out(self) -> bool:
        return self.kind == OPT_OUT

    def wins_over(self, other: Event | None) -> bool:
        """Latest event time wins; at a tie, the opt-out."""
        return other is None or (self.at_ms, self.kind == OPT_OUT) >= \
            (other.at_ms, other.kind == OPT_OUT)


def validate_event(e: Event) -> None:
    """The checks every event passes before it can reach the write log (one bad record there
    would stop every later start-up); InvalidInput names the field and the value."""
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
            not EARLIEST_MS <= e.at_ms <= time.time() * 1000 + FUTURE_SLACK_MS:
        raise InvalidInput(f"at_ms: {e.at_ms!r} is not a time between 2000 and tomorrow "
                           "(Unix ms)")
    if e.source not in SOURCES or e.source == "snapshot":
        raise InvalidInput(f"source: {e.source!r} is not one of {', '.join(SOURCES[1:])}")


class EventTable:
    """The latest event per (number, scope, bit), sorted by those three: immutable columns."""

    def __init__(self, columns: dict[str, np.ndarray], scopes: list[str]) -> None:
        self.columns = columns
        self.number: np.ndarray = columns["number"]
        self.scopes = scopes
        self.scope_ids = {name: i for i, name in enumerate(scopes)}

    @classmethod
    def empty(cls) -> EventTable:
        return cls({name: np.empty(0, dtype) for name, dtype in COLUMNS}, [])

    def __len__(self) -> int:
        return len(self.number)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns.values())

    def unique_numbers(self) -> np.ndarray:
        n = self.number
        if len(n) == 0:
            return n
        keep = np.ones(len(n), bool)
        keep[1:] = n[1:] != n[:-1]
        return n[keep]

    def fold(self, events: Iterable[Event], after_ms: int = 0) -> EventTable:
        """This table with `events` on top (latest wins per key), keeping rows later than
        `after_ms` only."""
        return self.fold_records(((e.kind, e.number, e.scope, e.mask, e.at_ms, e.source)
                                  for e in events), after_ms)

    def fold_records(self, records: Iterable[Sequence[Any]], after_ms: int = 0) -> EventTable:
        """`fold` for events as the write log holds them: (kind, number, scope, mask, at_ms,
        source) (anning.storage.records.EventFields). Rows are made a chunk at a time, so memory
        goes with the rows, not with Python objects for every event of the log."""
        scopes = list(self.scopes)
        ids = dict(self.scope_ids)
        parts = [self.columns]
        chunk: list[tuple[int, int, int, int, int, int]] = []
        add = chunk.append
        source_ids = {name: i for i, name in enumerate(SOURCES)}
        for record in records:
            kind, number, scope_name, mask, at_ms, source_name = record
            if at_ms <= after_ms:
                continue
            source = source_ids[source_name]
            if kind == REASSIGN:
                add((number, at_ms, REASSIGN_SCOPE, 0, REASSIGN, source))
            else:
                scope = ids.get(scope_name)
                if scope is None:
                    scope = ids[scope_name] = len(scopes)
                    scopes.append(scope_name)
                if mask == 1:  # the common case: marketing only
                    add((number, at_ms, scope, 0, kind, source))
                else:
                    chunk.extend((number, at_ms, scope, bit, kind, source)
                                 for bit in range(8) if mask >> bit & 1)
            if len(chunk) >= _CHUNK:
                parts.append(_rows(chunk))
                chunk.clear()
        if chunk:
            parts.append(_rows(chunk))
        cols = {name: np.concatenate([p[name] for p in parts]) for name, _ in COLUMNS}
        if after_ms:
            later = cols["at"] > after_ms
            cols = {name: c[later] for name, c in cols.items()}
        return _latest(cols, scopes)

    def after(self, as_of_ms: int) -> EventTable:
        """The rows later than `as_of_ms`: what a new snapshot cut then does not know yet."""
        if len(self) == 0 or int(self.columns["at"].min()) > as_of_ms:
            return self
        later = self.columns["at"] > as_of_ms
        return _compact({name: c[later] for name, c in self.columns.items()}, self.scopes)

    def _rows(self, number: int) -> range:
        # The key as the column's own type: searchsorted with a Python int converts the whole
        # uint64 column first (770 us at a million rows, against 2.6 us), on every check of a
        # number that has events.
        key = np.uint64(number)
        lo = int(np.searchsorted(self.number, key, "left"))
        if lo == len(self.number) or int(self.number[lo]) != number:
            return range(0)
        return range(lo, int(np.searchsorted(self.number, key, "right")))

    def _event(self, row: int, scope: str) -> Event:
        c = self.columns
        return Event(int(c["number"][row]), scope, 1 << int(c["bit"][row]), int(c["kind"][row]),
                     int(c["at"][row]), SOURCES[int(c["source"][row])])

    def latest(self, number: int, scope: str, bit: int) -> Event | None:
        sid = self.scope_ids.get(scope)
        if sid is None:
            return None
        c = self.columns
        for row in self._rows(number):
            if int(c["scope"][row]) == sid and int(c["bit"][row]) == bit:
                return self._event(row, scope)
        return None

    def reassignment(self, number: int) -> Event | None:
        c = self.columns
        for row in self._rows(number):
            if int(c["scope"][row]) == REASSIGN_SCOPE:
                return self._event(row, "")
        return None

    def events(self) -> list[Event]:
        """Every row as an event (one category bit each): for tests and explain tools."""
        c = self.columns
        return [self._event(r, "" if int(c["scope"][r]) == REASSIGN_SCOPE
                            else self.scopes[int(c["scope"][r])]) for r in range(len(self))]


def _rows(rows: list[tuple[int, int, int, int, int, int]]) -> dict[str, np.ndarray]:
    # an E.164 number has at most 15 digits: every field fits an int64
    block = np.array(rows, np.int64).reshape(-1, len(COLUMNS))
    return {name: block[:, i].astype(dtype) for i, (name, dtype) in enumerate(COLUMNS)}


def _latest(cols: dict[str, np.ndarray], scopes: list[str]) -> EventTable:
    """Sort by (number, scope, bit) and keep the winner of each key: the latest time, at a tie
    the opt-out (kind 1 sorts after 2 once negated)."""
    if len(cols["number"]):
        order = np.lexsort((-cols["kind"].astype(np.int16), cols["at"], cols["bit"],
                            cols["scope"], cols["number"]))
        cols = {name: c[order] for name, c in cols.items()}
        n, s, b = cols["number"], cols["scope"], cols["bit"]
        last = np.ones(len(n), bool)
        last[:-1] = (n[1:] != n[:-1]) | (s[1:] != s[:-1]) | (b[1:] != b[:-1])
        cols = {name: c[last] for name, c in cols.items()}
    return _compact(cols, scopes)


def _compact(cols: dict[str, np.ndarray], scopes: list[str]) -> EventTable:
    """Keep only the scope names rows still use (the table must not grow without bound)."""
    scope = cols["scope"]
    used = np.unique(scope[scope != REASSIGN_SCOPE])
    if len(used) == len(scopes):
        return EventTable(cols, scopes)
    remap = np.full(len(scopes), REASSIGN_SCOPE, np.uint32)
    remap[used] = np.arange(len(used), dtype=np.uint32)
    is_event = scope != REASSIGN_SCOPE
    new_scope = scope.copy()
    new_scope[is_event] = remap[scope[is_event]]
    # ids keep their order, so (number, scope, bit) stays sorted
    return EventTable({**cols, "scope": new_scope}, [scopes[i] for i in used.tolist()])


class Overlay:
    """The events on top of one serving snapshot: a compact table plus those taken since."""

    def __init__(self, table: EventTable | None = None) -> None:
        self.table = table if table is not None else EventTable.empty()
        self.live: dict[tuple[int, str], dict[int, Event]] = {}
        self.live_reassigned: dict[int, Event] = {}
        self.numbers = NumberSet(self.table.unique_numbers())
        self.live_count = 0

    @property
    def empty(self) -> bool:
        return len(self.numbers) == 0

    def apply_many(self, events: list[Event]) -> None:
        """Take events (the caller holds the engine's write lock). Their numbers enter the set
        last: a check that finds a number there finds its events too."""
        for event in events:
            if event.kind == REASSIGN:
                if event.wins_over(self.live_reassigned.get(event.number)):
                    self.live_reassigned[event.number] = event
            else:
                per_bit = self.live.setdefault((event.number, event.scope), {})
                for bit in range(8):
                    if event.mask >> bit & 1 and event.wins_over(per_bit.get(bit)):
                        per_bit[bit] = event
        self.live_count += len(events)
        if events:
            self.numbers.add_many([e.number for e in events])

    def has(self, number: int) -> bool:
        return number in self.numbers

    def contains(self, numbers: np.ndarray) -> np.ndarray:
        return self.numbers.contains(numbers)

    def latest(self, number: int, scope: str, bit: int) -> Event | None:
        """The event that decides (number, scope, bit), or None; one older than a reassignment
        of the number does not count."""
        per_bit = self.live.get((number, scope))
        live = per_bit.get(bit) if per_bit else None
        stored = self.table.latest(number, scope, bit) if len(self.table) else None
        event = live if live is not None and live.wins_over(stored) else stored
        if event is not None:
            reassigned = self.reassignment(number)
            if reassigned is not None and event.at_ms < reassigned.at_ms:
                return None
        return event

    def reassignment(self, number: int) -> Event | None:
        """The latest reassignment of the number since the snapshot, if any."""
        live = self.live_reassigned.get(number)
        stored = self.table.reassignment(number) if len(self.table) else None
        return live if live is not None and live.wins_over(stored) else stored

    def live_events(self) -> list[Event]:
        out = list(self.live_reassigned.values())
        for per_bit in list(self.live.values()):
            out.extend(per_bit.values())
        return out

    def after(self, as_of_ms: int) -> Overlay:
        """The events later than as_of, folded into one table (for a new snapshot)."""
        live = self.live_events()
        if not live:
            table = self.table.after(as_of_ms)
            return self if table is self.table else Overlay(table)
        return Overlay(self.table.fold(live, as_of_ms))

    def __len__(self) -> int:
        return len(self.table) + self.live_count

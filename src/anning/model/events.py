"""Real-time events (SPEC §4): what they are, and how many of them are held compactly.

For one (number, scope, category) the latest event time wins, whatever order events arrive in;
an opt-in is a tombstone; at a tie the opt-out wins (the side that keeps a promise). A number
reassignment at T drops every entry and event of that number older than T. Every event has a
sequence: its place among all the events of the data directory (dense, from 1).

`EventColumns` holds events as they were taken, as numpy columns (the write log's checkpoint,
a night's events folded into a load, the change feed). What decides among them is kept by the
overlay (anning.engine.overlay) and the fold (anning.load.fold).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from anning.errors import InvalidInput
from anning.model.scopes import SOURCE_IDS, SOURCES

__all__ = ["OPT_IN", "OPT_OUT", "REASSIGN", "REASSIGN_SCOPE", "Event", "EventColumns",
           "validate_event", "validate_events"]

OPT_OUT, OPT_IN, REASSIGN = 1, 2, 3
REASSIGN_SCOPE = 0xFFFFFFFF  # the scope column of a reassignment row
EARLIEST_MS = 946_684_800_000  # 2000-01-01: no event is older
FUTURE_SLACK_MS = 24 * 3600 * 1000  # a clock a day fast is tolerated, no more


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
    sequence: int = 0  # its place among every event of the data directory (0: not yet made)

    @property
    def opt_out(self) -> bool:
        return self.kind == OPT_OUT

    def wins_over(self, other: Event | None) -> bool:
        """Latest event time wins; at a tie, the opt-out; at a full tie, the later sequence."""
        return other is None or (self.at_ms, self.kind == OPT_OUT, self.sequence) >= \
            (other.at_ms, other.kind == OPT_OUT, other.sequence)


def validate_event(e: Event, latest_ms: float | None = None) -> None:
    """The checks every event passes before it can reach the write log (one bad record there
    would stop every later start-up); InvalidInput names the field and the value. `latest_ms`:
    the latest time accepted (now and a day of slack, when not given)."""
    if latest_ms is None:
        latest_ms = time.time() * 1000 + FUTURE_SLACK_MS
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
            not EARLIEST_MS <= e.at_ms <= latest_ms:
        raise InvalidInput(f"at_ms: {e.at_ms!r} is not a time between 2000 and tomorrow "
                           "(Unix ms)")
    if e.source not in SOURCES or e.source == "snapshot":
        raise InvalidInput(f"source: {e.source!r} is not one of {', '.join(SOURCES[1:])}")


_WRITABLE_SOURCES = SOURCES[1:]  # "snapshot" is the list's own: no event comes from it


def validate_events(events: Iterable[Event]) -> None:
    """`validate_event` of each, the clock read once: a write of thousands of events paid a
    microsecond an event for the checks. An event all of whose fields are of the plain types
    and in range passes at once; any other is checked field by field, which names the bad one
    (and accepts what it accepts: a subclass of int or str)."""
    latest_ms = time.time() * 1000 + FUTURE_SLACK_MS
    for e in events:
        kind, mask, number, at_ms = e.kind, e.mask, e.number, e.at_ms
        if (type(kind) is int and type(mask) is int and type(number) is int
                and type(at_ms) is int and type(e.scope) is str
                and (mask == 0 if kind == REASSIGN else
                     kind in (OPT_OUT, OPT_IN) and 0 < mask <= 0xFF)
                and 0 < number < 10**15 and EARLIEST_MS <= at_ms <= latest_ms
                and e.source in _WRITABLE_SOURCES):
            continue
        validate_event(e, latest_ms)



class EventColumns:
    """Events as numpy columns, one row per event, in sequence order. `scope` indexes `scopes`
    (REASSIGN_SCOPE for a reassignment); `source` indexes SOURCES."""

    FIELDS = (("sequence", np.uint64), ("number", np.uint64), ("at", np.int64),
              ("scope", np.uint32), ("mask", np.uint8), ("kind", np.uint8),
              ("source", np.uint8))

    def __init__(self, columns: dict[str, np.ndarray], scopes: list[str]) -> None:
        self.columns = columns
        self.sequence: np.ndarray = columns["sequence"]
        self.scopes = scopes

    @classmethod
    def empty(cls) -> EventColumns:
        return cls({name: np.empty(0, dtype) for name, dtype in cls.FIELDS}, [])

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> EventColumns:
        """The events (with their sequences), as they come."""
        ids: dict[str, int] = {}
        scope_of = [REASSIGN_SCOPE if e.kind == REASSIGN else ids.setdefault(e.scope, len(ids))
                    for e in events]
        n = len(events)
        columns: dict[str, np.ndarray] = {
            "sequence": np.fromiter((e.sequence for e in events), np.uint64, n),
            "number": np.fromiter((e.number for e in events), np.uint64, n),
            "at": np.fromiter((e.at_ms for e in events), np.int64, n),
            "scope": np.array(scope_of, np.uint32),
            "mask": np.fromiter((e.mask for e in events), np.uint8, n),
            "kind": np.fromiter((e.kind for e in events), np.uint8, n),
            "source": np.fromiter((SOURCE_IDS[e.source] for e in events), np.uint8, n),
        }
        return cls(columns, list(ids))

    @classmethod
    def concat(cls, parts: Sequence[EventColumns]) -> EventColumns:
        """The rows of every part, their scope names made one table (no sorting)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        names: dict[str, int] = {}
        remapped = []
        for part in parts:
            table = np.array([names.setdefault(s, len(names)) for s in part.scopes] or [0],
                             np.uint32)
            scope = part.columns["scope"]
            real = scope != REASSIGN_SCOPE
            mapped = np.full(len(scope), REASSIGN_SCOPE, np.uint32)
            mapped[real] = table[scope[real]]
            remapped.append({**part.columns, "scope": mapped})
        columns = {name: np.concatenate([c[name] for c in remapped])
                   for name, _ in cls.FIELDS}
        return cls(columns, list(names))

    def __len__(self) -> int:
        return len(self.sequence)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns.values())

    def take(self, rows: np.ndarray) -> EventColumns:
        """These rows (a boolean mask or indices), same scope names."""
        return EventColumns({name: c[rows] for name, c in self.columns.items()}, self.scopes)

    def after(self, sequence: int) -> EventColumns:
        """The events with a sequence past `sequence` (the columns are in sequence order)."""
        if not len(self) or int(self.sequence[0]) > sequence:
            return self
        start = int(np.searchsorted(self.sequence, np.uint64(sequence), "right"))
        return EventColumns({name: c[start:] for name, c in self.columns.items()}, self.scopes)

    def until(self, sequence: int) -> EventColumns:
        """The events with a sequence up to `sequence`."""
        end = int(np.searchsorted(self.sequence, np.uint64(sequence), "right"))
        if end == len(self):
            return self
        return EventColumns({name: c[:end] for name, c in self.columns.items()}, self.scopes)

    def events(self) -> list[Event]:
        c = self.columns
        scopes = [*self.scopes]
        return [Event(int(n), "" if s == REASSIGN_SCOPE else scopes[s], int(m), int(k), int(a),
                      SOURCES[int(src)], int(q))
                for q, n, a, s, m, k, src in zip(
                    c["sequence"].tolist(), c["number"].tolist(), c["at"].tolist(),
                    c["scope"].tolist(), c["mask"].tolist(), c["kind"].tolist(),
                    c["source"].tolist(), strict=True)]

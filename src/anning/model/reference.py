"""SPEC §2, §4 and §5 in plain Python: the reference the engine is compared against.

It keeps every statement as made and decides each check from scratch, sharing no code with the
engine's overlay, tables or compiled index. The statements are the rows of the last snapshot
loaded (an opt-out, an opt-in or a reassignment, each at its `at`, or the snapshot's `as_of`
when it gave none) and every event past the watermark that snapshot declared (or, when it
declared none, the watermark before it). For one (number, scope, category bit) the latest
statement wins - an opt-out over an opt-in at the same time, then an event over a row, then the
later event - after dropping every statement of the number older than its latest reassignment.
A check asks the sender, the sender's entity and global, in that order. Arrival order, folds,
checkpoints, restarts and processes change no answer of it.

Tests compare against it; nothing on a serving path uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from anning.model.events import OPT_OUT, REASSIGN, Event
from anning.model.scopes import ENTITY_PREFIX, GLOBAL, Scope

__all__ = ["Decision", "ReferenceModel", "Row"]


@dataclass(frozen=True)
class Row:
    """A snapshot row: `key` a scope key (a sender, entity:NAME, *; "" for a reassignment),
    `at` None when the row gave no time."""

    number: int
    key: str
    mask: int
    at: int | None = None
    kind: int = OPT_OUT


@dataclass(frozen=True)
class Decision:
    """What decided a check: the level, the key that matched, the deciding statement's time
    and source (0 and "snapshot" when the snapshot's list holds it: a row, or an event folded
    into it), the category bits that key is opted out of. When nothing matched after a
    reassignment the list does not hold yet, that reassignment's time and source."""

    scope: Scope
    key: str
    at_ms: int
    source: str
    categories: int = 0

    @property
    def origin(self) -> str:
        if self.source == "snapshot":
            return "snapshot"
        return "event" if self.at_ms else ""


class ReferenceModel:
    """Snapshot rows, entity links and events; `decide` answers a check."""

    def __init__(self) -> None:
        self.as_of_ms = 0
        self.rows: dict[int, list[Row]] = {}  # by number
        self.entity_of: dict[str, str] = {}
        self.events: dict[int, list[Event]] = {}  # by number
        self.last_sequence = 0
        self.events_through = 0  # the watermark of the snapshot loaded last
        self.folded_through = 0  # the last event there was when it was loaded

    def load(self, rows: Iterable[Row | tuple[int, str, int]], entities: Mapping[str, str],
             as_of_ms: int, events_through: int | None = None) -> None:
        """A snapshot: its rows replace the previous snapshot's; `events_through` (None: it
        declares none, the previous watermark stands) leaves the events up to it to upstream."""
        self.as_of_ms = as_of_ms
        self.rows = {}
        for r in rows:
            row = r if isinstance(r, Row) else Row(*r)
            self.rows.setdefault(row.number, []).append(row)
        self.entity_of = {s: f"{ENTITY_PREFIX}{e}" for s, e in entities.items()}
        if events_through is not None:
            self.events_through = events_through
        self.folded_through = self.last_sequence

    def add(self, event: Event) -> None:
        """An event, with its sequence (0: numbered after the ones before)."""
        if not event.sequence:
            event = Event(event.number, event.scope, event.mask, event.kind, event.at_ms,
                          event.source, self.last_sequence + 1)
        self.last_sequence = max(self.last_sequence, event.sequence)
        self.events.setdefault(event.number, []).append(event)

    def _statements(self, number: int) -> tuple[list[tuple[Any, ...]], Event | None, int]:
        """(at, opted out, tiebreak, key, bit, event or None) of the number, after its latest
        reassignment; that reassignment, if an event past the fold made it; and its time."""
        said: list[tuple[Any, ...]] = []
        moves: list[tuple[int, Event | None]] = []
        for row in self.rows.get(number, ()):
            at = row.at if row.at is not None else self.as_of_ms
            if row.kind == REASSIGN:
                moves.append((at, None))
                continue
            said += [(at, row.kind == OPT_OUT, -1, row.key, bit, None)
                     for bit in range(8) if row.mask >> bit & 1]
        for e in self.events.get(number, ()):
            if e.sequence <= self.events_through:
                continue
            if e.kind == REASSIGN:
                moves.append((e.at_ms, e))
                continue
            said += [(e.at_ms, e.kind == OPT_OUT, e.sequence, e.scope, bit, e)
                     for bit in range(8) if e.mask >> bit & 1]
        if not moves:
            return said, None, 0
        cut, by = max(moves, key=lambda m: (m[0], m[1].sequence if m[1] else -1))
        moved = by if by is not None and by.sequence > self.folded_through else None
        return [s for s in said if s[0] >= cut], moved, cut

    def _winner(self, said: list[tuple[Any, ...]], key: str,
                bit: int) -> tuple[Any, ...] | None:
        mine = [s for s in said if s[3] == key and s[4] == bit]
        return max(mine, key=lambda s: s[:3]) if mine else None

    def decide(self, sender: str | None, number: int, bit: int) -> Decision:
        """The check of (sender key, number) for category `bit`."""
        said, moved, _cut = self._statements(number)
        levels = ((Scope.SENDER, sender),
                  (Scope.ENTITY, self.entity_of.get(sender) if sender else None),
                  (Scope.GLOBAL, GLOBAL))
        for level, key in levels:
            if key is None:
                continue
            won = self._winner(said, key, bit)
            if won is None or not won[1]:
                continue
            categories = sum(1 << b for b in range(8)
                             if (w := self._winner(said, key, b)) is not None and w[1])
            event = won[5]
            if event is not None and event.sequence > self.folded_through:
                return Decision(level, key, event.at_ms, event.source, categories)
            return Decision(level, key, 0, "snapshot", categories)
        if moved is not None:
            return Decision(Scope.NONE, "", moved.at_ms, moved.source)
        return Decision(Scope.NONE, "", 0, "")

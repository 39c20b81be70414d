"""SPEC §2 and §4 in plain Python: the reference the engine is compared against.

It keeps every statement as made and decides each check from scratch, sharing no code with the
engine's overlay, tables or compiled index: level by level (the sender, the sender's entity,
global) the latest statement about (number, scope, category) wins - a snapshot entry counts as
an opt-out said at the snapshot's `as_of`, an event only when later than `as_of`, an opt-out
beats an opt-in at the same time - after dropping whatever is older than the number's latest
reassignment. Arrival order, checkpoints, restarts and processes change no answer of it.
Tests compare against it; nothing on a serving path uses it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from anning.model.events import OPT_OUT, REASSIGN, Event
from anning.model.scopes import ENTITY_PREFIX, GLOBAL, Scope

__all__ = ["Decision", "ReferenceModel"]


@dataclass(frozen=True)
class Decision:
    """What decided a check: the level, the key that matched, and the statement - an event
    (its time and source) or the snapshot (at_ms 0, source "snapshot"). When nothing matched
    after a reassignment, the reassignment's time and source."""

    scope: Scope
    key: str
    at_ms: int
    source: str

    @property
    def origin(self) -> str:
        if self.source == "snapshot":
            return "snapshot"
        return "event" if self.at_ms else ""


class ReferenceModel:
    """Snapshot entries, entity links and events; `decide` answers a check."""

    def __init__(self) -> None:
        self.as_of_ms = 0
        self.snapshot: dict[tuple[int, str], int] = {}
        self.entity_of: dict[str, str] = {}
        self.events: dict[int, list[Event]] = defaultdict(list)

    def load(self, entries: Iterable[tuple[int, str, int]], entities: Mapping[str, str],
             as_of_ms: int) -> None:
        """A snapshot: (number, scope key, category mask) entries, sender -> entity name. It
        supersedes every event up to its as_of (kept, no longer counted)."""
        self.as_of_ms = as_of_ms
        self.snapshot = defaultdict(int)
        for number, key, mask in entries:
            self.snapshot[number, key] |= mask
        self.entity_of = {s: f"{ENTITY_PREFIX}{e}" for s, e in entities.items()}

    def add(self, event: Event) -> None:
        self.events[event.number].append(event)

    def decide(self, sender: str | None, number: int, bit: int) -> Decision:
        """The check of (sender key, number) for category `bit`."""
        live = [e for e in self.events.get(number, ()) if e.at_ms > self.as_of_ms]
        moves = [e for e in live if e.kind == REASSIGN]
        moved = max(moves, key=lambda e: e.at_ms) if moves else None
        cut = moved.at_ms if moved else 0
        levels = ((Scope.SENDER, sender),
                  (Scope.ENTITY, self.entity_of.get(sender) if sender else None),
                  (Scope.GLOBAL, GLOBAL))
        for level, key in levels:
            if key is None:
                continue
            said = [(e.at_ms, e.kind == OPT_OUT, e.source) for e in live
                    if e.kind != REASSIGN and e.scope == key and e.mask >> bit & 1]
            if self.snapshot.get((number, key), 0) >> bit & 1:
                said.append((self.as_of_ms, True, "snapshot"))
            said = [s for s in said if s[0] >= cut]
            if said:
                at, opted_out, source = max(said)
                if opted_out:
                    return Decision(level, key, 0 if source == "snapshot" else at, source)
        if moved is not None:
            return Decision(Scope.NONE, "", moved.at_ms, moved.source)
        return Decision(Scope.NONE, "", 0, "")

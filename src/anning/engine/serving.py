"""What is served: one immutable pair (index, overlay) and the checks and explanations over it.

A check reads the pair once, so it sees the whole old list or the whole new one, never a mix.
Real-time events (SPEC §4) live in the overlay: level by level (sender, entity of the sender,
global) an event decides where there is one, the snapshot where there is not; a reassignment
of the number takes the snapshot's entries (all older) out of play.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anning._normalize import normalize_number, normalize_sender
from anning.errors import InvalidInput
from anning.index import UNKNOWN_SENDER, SuppressionIndex
from anning.model.events import Event, Overlay
from anning.model.scopes import DEFAULT_CATEGORY, GLOBAL, Scope

__all__ = ["Explanation", "ServingState", "check", "check_ids", "explain"]

_LEVELS = ((Scope.SENDER, 0), (Scope.ENTITY, 1), (Scope.GLOBAL, 2))


@dataclass(frozen=True)
class ServingState:
    """The list a check answers from: a snapshot's index and the events on top of it."""

    index: SuppressionIndex
    overlay: Overlay

    @property
    def as_of_ms(self) -> int:
        return int(self.index.meta.get("as_of_ms", 0))


@dataclass(frozen=True)
class Explanation:
    """Why a check answers as it does: the level, the key that matched, and what decided."""

    suppressed: bool
    scope: Scope
    matched: str  # the scope key: a sender, entity:NAME, or *
    categories: list[str]  # of that entry (snapshot) or opted out by events (event)
    origin: str  # "snapshot", "event", or "" when nothing matched
    source: str  # of the deciding event; "snapshot" for a snapshot entry
    at_ms: int  # of the deciding event (events only)
    snapshot_as_of: str | None


def check(state: ServingState, sender: str, number: str | int,
          category: str = DEFAULT_CATEGORY) -> Scope:
    scope = state.index.check(sender, number, category)
    if state.overlay.empty:
        return scope
    num = normalize_number(number, state.index.default_country)
    if not state.overlay.has(num):
        return scope
    bit = state.index.category_bit(category)
    return decide(state, normalize_sender(sender), num, bit)[0]


def check_ids(state: ServingState, sender_ids: npt.NDArray[np.uint32],
              numbers: npt.NDArray[np.uint64], category: str = DEFAULT_CATEGORY,
              sender_of: Callable[[int], str] | None = None) -> npt.NDArray[np.uint8]:
    """The batch path: the index's kernel, then the few numbers with events redone.

    `sender_of(i)` gives the sender of check i as the caller wrote it: a sender the index does
    not know (UNKNOWN_SENDER) may still have real-time events of its own, which only its name
    can find."""
    idx = state.index
    codes = idx.check_ids(sender_ids, numbers, category)
    if not state.overlay.empty:
        numbers = np.asarray(numbers, np.uint64)
        bit = idx.category_bit(category)
        for i in np.flatnonzero(state.overlay.contains(numbers)):
            sid = int(sender_ids[i])
            name = idx.senders[sid] if sid != UNKNOWN_SENDER else _name_of(sender_of, int(i))
            codes[i] = decide(state, name, int(numbers[i]), bit)[0]
    return codes


def explain(state: ServingState, sender: str, number: str | int,
            category: str = DEFAULT_CATEGORY) -> Explanation:
    idx = state.index
    name = normalize_sender(sender)
    num = normalize_number(number, idx.default_country)
    bit = idx.category_bit(category)
    as_of = idx.meta.get("as_of")
    level, key, event, mask = decide(state, name, num, bit)
    if event is not None:  # an opt-out decided, or a reassignment cleared the number
        # the categories this scope is opted out of by events (one per stored row, so the
        # answer is the same before and after a checkpoint folds the event)
        opted = sum(1 << b for b in range(len(idx.categories))
                    if level and (e := state.overlay.latest(num, key, b)) and e.opt_out)
        return Explanation(level != Scope.NONE, level, key, _category_names(idx, opted),
                           "event", event.source, event.at_ms, as_of)
    if level != Scope.NONE:
        return Explanation(True, level, key, _category_names(idx, mask), "snapshot",
                           "snapshot", 0, as_of)
    return Explanation(False, Scope.NONE, "", [], "", "", 0, as_of)


def decide(state: ServingState, sender: str | None, number: int,
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


def _category_names(idx: SuppressionIndex, mask: int) -> list[str]:
    return [name for bit, name in enumerate(idx.categories) if mask >> bit & 1]


def _name_of(sender_of: Callable[[int], str] | None, i: int) -> str | None:
    """The normalised name of an unknown sender, when the caller can tell it."""
    if sender_of is None:
        return None
    try:
        return normalize_sender(sender_of(i))
    except InvalidInput:  # a bad item of a batch: it is answered with its error anyway
        return None

"""What is served: one immutable pair (index, overlay) and the checks and explanations over it.

A check reads the pair once, so it sees the whole old list or the whole new one, never a mix.
The overlay holds the real-time events past the list's fold, resolved against it and kept in a
compiled table the batch kernel consults in its GIL-free pass (anning.engine.overlay): a check
is the same compiled code whether or not its number has events, and a scalar check is the batch
path with one item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anning._normalize import normalize_number, normalize_sender
from anning.engine.overlay import Overlay
from anning.index import UNKNOWN_SENDER, SuppressionIndex
from anning.model.scopes import DEFAULT_CATEGORY, GLOBAL, Scope

__all__ = ["Explanation", "ServingState", "check", "check_ids", "explain"]

_SCOPES = tuple(Scope)


@dataclass(frozen=True)
class ServingState:
    """The list a check answers from: a snapshot's index and the events on top of it."""

    index: SuppressionIndex
    overlay: Overlay

    @property
    def as_of_ms(self) -> int:
        return int(self.index.meta.get("as_of_ms", 0))

    def sender_ids(self, texts: list[str]) -> npt.NDArray[np.uint32]:
        """Sender ids for `check_ids` (the list's, or those only events know)."""
        return self.overlay.sender_ids(texts)

    def sender_id(self, text: str) -> int:
        sid = self.index._sender_id(text)
        if sid == UNKNOWN_SENDER and self.overlay.extra_senders:
            sid = self.overlay.extra_senders.get(normalize_sender(text), UNKNOWN_SENDER)
        return sid


@dataclass(frozen=True)
class Explanation:
    """Why a check answers as it does: the level, the key that matched, and what decided."""

    suppressed: bool
    scope: Scope
    matched: str  # the scope key: a sender, entity:NAME, or *
    categories: list[str]  # the categories that key is opted out of
    origin: str  # "snapshot", "event", or "" when nothing matched
    source: str  # of the deciding event; "snapshot" for a snapshot entry
    at_ms: int  # of the deciding event (events only)
    snapshot_as_of: str | None


def check(state: ServingState, sender: str, number: str | int,
          category: str = DEFAULT_CATEGORY) -> Scope:
    """One check: the batch kernel with one item."""
    num = normalize_number(number, state.index.default_country)
    codes = state.overlay.check_ids(np.array([state.sender_id(sender)], np.uint32),
                                    np.array([num], np.uint64), category)
    return _SCOPES[int(codes[0])]


def check_ids(state: ServingState, sender_ids: npt.NDArray[np.uint32],
              numbers: npt.NDArray[np.uint64],
              category: str = DEFAULT_CATEGORY) -> npt.NDArray[np.uint8]:
    """The batch path: scope codes for sender ids (from `state.sender_ids`) and numbers."""
    return state.overlay.check_ids(sender_ids, numbers, category)


def explain(state: ServingState, sender: str, number: str | int,
            category: str = DEFAULT_CATEGORY) -> Explanation:
    idx, overlay = state.index, state.overlay
    name = normalize_sender(sender)
    num = normalize_number(number, idx.default_country)
    bit = idx.category_bit(category)
    as_of = idx.meta.get("as_of")
    levels = ((Scope.SENDER, name), (Scope.ENTITY, idx.entity_of(name)),
              (Scope.GLOBAL, GLOBAL))
    for level, key in levels:
        if key is None:
            continue
        statement = overlay.resolve(num, key, bit)
        if statement is None or not statement.opted_out:
            continue
        categories = [c for b, c in enumerate(idx.categories)
                      if (s := overlay.resolve(num, key, b)) is not None and s.opted_out]
        if statement.origin == "event":
            return Explanation(True, level, key, categories, "event", statement.source,
                               statement.at_ms, as_of)
        return Explanation(True, level, key, categories, "snapshot", "snapshot", 0, as_of)
    moved = overlay.reassignment(num)
    if moved is not None and moved.at_ms >= idx.statements.reassigned_at(num):
        # the number went to someone new: what came before does not count
        return Explanation(False, Scope.NONE, "", [], "event", moved.source, moved.at_ms,
                           as_of)
    return Explanation(False, Scope.NONE, "", [], "", "", 0, as_of)

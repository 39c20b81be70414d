"""The answers a benchmark's results are checked against, computed without anning's index.

- `ListModel`: the generated list as sorted numpy keys; a check is three binary searches
  (sender, entity of the sender, global). Exact, so anning's batch answers must equal its own;
  it is also a peer in the core's benchmarks (`numpy-exact-3-probes`).
- `event_checks`: checks about logged events, with the answers SPEC §2 and §4 give after the
  snapshot and every event of those numbers, from `anning.model.reference.ReferenceModel` (plain
  Python that shares no code with the engine's overlay, tables or compiled index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anning.model.events import REASSIGN, Event
from anning.model.reference import ReferenceModel
from anning.model.scopes import SOURCES
from benchmarks.lib.datagen import SEED, UNKNOWN, Entries, Events, Universe, zipf_senders

__all__ = ["EventChecks", "ListModel", "event_checks"]


class ListModel:
    """Sorted unique (number << 20 | code) keys and their OR-ed masks: an exact model in numpy.

    Works while numbers are below 2^44 (Chinese numbers are) and codes below 2^20."""

    def __init__(self, universe: Universe, entries: Entries) -> None:
        if universe.global_code >= 1 << 20:
            raise ValueError("too many scopes for the oracle's 20-bit codes")
        self.universe = universe
        keys = (entries.numbers << np.uint64(20)) | entries.codes.astype(np.uint64)
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        masks = entries.masks[order]
        if keys.size:
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            keys, masks = keys[starts], np.bitwise_or.reduceat(masks, starts)
        self.keys, self.masks = keys, masks

    def __len__(self) -> int:
        return len(self.keys)

    def check(self, senders: np.ndarray, numbers: np.ndarray, bit: int | None = 0) -> np.ndarray:
        """Exact scope codes (0 none, 1 sender, 2 entity, 3 global) of (sender code, number)
        checks (UNKNOWN: a sender the list does not know); bit None: whether an entry exists
        for the scope whatever its categories."""
        u, keys, masks = self.universe, self.keys, self.masks
        known = senders != UNKNOWN
        own = np.where(known, senders, u.global_code + 1).astype(np.uint64)
        ent = u.entity_code()[np.where(known, senders, 0)]
        ent = np.where(known & (ent != UNKNOWN), ent, u.global_code + 1).astype(np.uint64)
        base = numbers << np.uint64(20)

        def has(code: np.ndarray | int) -> np.ndarray:
            if not len(keys):
                return np.zeros(len(base), dtype=bool)
            probe = base | np.asarray(code, dtype=np.uint64)
            i = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
            found = keys[i] == probe
            return found if bit is None else found & (((masks[i] >> bit) & 1) == 1)

        out = np.zeros(len(numbers), dtype=np.uint8)
        out[has(u.global_code)] = 3
        out[has(ent)] = 2
        out[has(own)] = 1
        return out


@dataclass
class EventChecks:
    """Checks about logged events (one each) and the answers they must get."""

    events: np.ndarray  # int64: the position in the log of the event each check is about
    senders: np.ndarray  # uint32 sender codes (< n_senders) asking
    numbers: np.ndarray  # uint64
    bits: np.ndarray  # uint8 category asked: 0 marketing, 1 notification
    expected: np.ndarray  # uint8 scope codes

    def __len__(self) -> int:
        return len(self.events)


def event_checks(universe: Universe, entries: Entries, events: Events, pick: np.ndarray,
                 as_of_ms: int, seed: int = SEED,
                 events_through: int | None = None) -> EventChecks:
    """For each picked event, a check of its number by a sender its scope covers (its own
    sender; a sender of its entity; a Zipf sender for a global scope or a reassignment), in a
    category its mask holds (marketing where it does), and the answer after the snapshot cut at
    `as_of_ms` and every logged event of that number, whichever came later: an event picked
    may since have been undone by an opt-in or a reassignment, and the answer says so.

    The events are those of a data directory logged in order from the first: event i has the
    sequence i + 1. `events_through`: the snapshot declared a watermark (the events up to it
    are upstream's: `entries` has what it kept of them)."""
    u = universe
    pick = np.asarray(pick, dtype=np.int64)
    rng = np.random.default_rng([seed, 17])
    codes = events.codes[pick].astype(np.int64)
    senders = zipf_senders(rng, u, len(pick)).astype(np.int64)
    own = (codes < u.n_senders) & (events.kinds[pick] != REASSIGN)
    senders[own] = codes[own]
    entity = (codes >= u.n_senders) & (codes < u.global_code) & (events.kinds[pick] != REASSIGN)
    e = codes[entity] - u.n_senders
    lo, hi = u.entity_offsets[e], u.entity_offsets[e + 1]
    senders[entity] = u.entity_members[lo + (rng.random(e.size) * (hi - lo)).astype(np.int64)]
    bits = np.where(events.masks[pick] & 1, 0, 1).astype(np.uint8)

    numbers = events.numbers[pick]
    wanted = np.unique(numbers)
    model = ReferenceModel()
    table = u.sender_table
    inside = np.isin(entries.numbers, wanted)
    model.load(zip(entries.numbers[inside].tolist(),
                   [table[c] for c in entries.codes[inside].tolist()],
                   entries.masks[inside].tolist(), strict=True), u.entities, as_of_ms,
               events_through)
    for i in np.flatnonzero(np.isin(events.numbers, wanted)).tolist():
        kind = int(events.kinds[i])
        moved = kind == REASSIGN
        model.add(Event(int(events.numbers[i]), "" if moved else table[int(events.codes[i])],
                        0 if moved else int(events.masks[i]), kind, int(events.at_ms[i]),
                        SOURCES[int(events.sources[i])], i + 1))
    names = u.senders
    expected = np.array([model.decide(names[s], n, b).scope
                         for s, n, b in zip(senders.tolist(), numbers.tolist(), bits.tolist(),
                                            strict=True)], dtype=np.uint8)
    return EventChecks(pick, senders.astype(np.uint32), numbers, bits, expected)

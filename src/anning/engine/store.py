"""Every event a process has taken past its list's fold, compactly, each once.

Events come from this process's own writes (taken before their records are read by anyone) and
from the log's tail and a checkpoint's catch-up (which may bring some again): a bit per sequence
says which were taken, so each is held once. They are kept as numpy columns (a few bytes each,
not a Python object), to be resolved again against the next list a load brings.
"""

from __future__ import annotations

import numpy as np

from anning.model.events import Event, EventColumns

__all__ = ["EventStore"]

_COMPACT_AT = 4096  # events held as objects before they become columns
_FEW = 32  # a write of up to this many events is marked one by one (numpy's fixed cost)


class EventStore:
    """Events with a sequence past `after`, each once."""

    def __init__(self, after: int) -> None:
        self.after = after
        self._seen = np.zeros(1 << 12, np.uint8)  # bit per sequence past `after`
        self._chunks: list[EventColumns] = []
        # each chunk's (first sequence, its time, last sequence): chunks never change
        self._bounds: list[tuple[int, int, int]] = []
        self._pending: list[Event] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return self._seen.nbytes + sum(c.nbytes for c in self._chunks)

    def _mark(self, sequences: np.ndarray) -> np.ndarray:
        """Which of these sequences are new (marking them seen); unsequenced (0) are new."""
        new = np.ones(len(sequences), bool)
        sequenced = sequences > 0
        if not sequenced.any():
            return new
        offset = sequences[sequenced].astype(np.int64) - self.after - 1
        new[sequenced] = offset >= 0
        offset = offset[offset >= 0]
        if len(offset):
            top = int(offset.max()) >> 3
            if top >= len(self._seen):
                grown = np.zeros(max(top + 1, 2 * len(self._seen)), np.uint8)
                grown[:len(self._seen)] = self._seen
                self._seen = grown
        where = np.flatnonzero(new & sequenced)
        offsets = sequences[where].astype(np.int64) - self.after - 1
        byte, bit = offsets >> 3, (offsets & 7).astype(np.uint8)
        seen = (self._seen[byte] >> bit) & 1
        # a sequence twice within this very batch counts once (a write's own sequences rise:
        # nothing to look for then)
        if len(offsets) < 2 or bool(np.all(offsets[1:] > offsets[:-1])):
            first = np.ones(len(offsets), bool)
        else:
            first = np.zeros(len(offsets), bool)
            _, firsts = np.unique(offsets, return_index=True)
            first[firsts] = True
        fresh = (seen == 0) & first
        new[where] = fresh
        np.bitwise_or.at(self._seen, byte[fresh], (1 << bit[fresh]).astype(np.uint8))
        return new

    def add(self, events: list[Event]) -> list[Event]:
        """Take events; returns those not taken before."""
        if not events:
            return events
        if len(events) <= _FEW:
            fresh = [e for e in events if self._mark_one(e.sequence)]
        else:
            new = self._mark(np.fromiter((e.sequence for e in events), np.uint64, len(events)))
            fresh = [e for e, keep in zip(events, new.tolist(), strict=True) if keep]
        self._pending += fresh
        self._count += len(fresh)
        if len(self._pending) >= _COMPACT_AT:
            self._add_chunk(EventColumns.from_events(self._pending))
            self._pending = []
        return fresh

    def _mark_one(self, sequence: int) -> bool:
        """`_mark` of one sequence without numpy (a write of a few events: most writes)."""
        if not sequence:
            return True
        offset = sequence - self.after - 1
        if offset < 0:
            return False
        if offset >> 3 >= len(self._seen):
            return bool(self._mark(np.array([sequence], np.uint64))[0])
        if self._seen[offset >> 3] >> (offset & 7) & 1:
            return False
        self._seen[offset >> 3] |= 1 << (offset & 7)
        return True

    def add_columns(self, events: EventColumns) -> EventColumns:
        """Take events as columns; returns those not taken before."""
        new = self._mark(events.sequence)
        if not new.all():
            events = events.take(new)
        if len(events):
            self._add_chunk(events)
            self._count += len(events)
        return events

    def _add_chunk(self, chunk: EventColumns) -> None:
        first = int(np.argmin(chunk.sequence))
        self._chunks.append(chunk)
        self._bounds.append((int(chunk.sequence[first]), int(chunk.columns["at"][first]),
                             int(chunk.sequence.max())))

    def first_at_ms(self, after: int) -> int:
        """The time of the first event (by sequence) past `after` (0: none). Chunk by chunk,
        without making the columns: metrics ask for it every quarter second on the event loop,
        where concatenating and sorting every event held stalled the checks (5 ms at 150,000
        events, growing with them)."""
        best_sequence, best_at = 0, 0
        for chunk, (low, low_at, high) in zip(self._chunks, self._bounds, strict=True):
            if high <= after or (best_sequence and low >= best_sequence):
                continue
            if low > after:  # the whole chunk is past it: its first event is the candidate
                best_sequence, best_at = low, low_at
                continue
            later = chunk.sequence > np.uint64(after)  # the one chunk that straddles it
            i = int(np.argmin(np.where(later, chunk.sequence, np.uint64(2**64 - 1))))
            if not best_sequence or int(chunk.sequence[i]) < best_sequence:
                best_sequence, best_at = int(chunk.sequence[i]), int(chunk.columns["at"][i])
        for e in self._pending:
            if e.sequence > after and (not best_sequence or e.sequence < best_sequence):
                best_sequence, best_at = e.sequence, e.at_ms
        return best_at

    def columns(self) -> EventColumns:
        """Every event held, in sequence order (unsequenced ones in the order taken)."""
        parts = [*self._chunks]
        if self._pending:
            parts.append(EventColumns.from_events(self._pending))
        events = EventColumns.concat(parts)
        if len(events) > 1 and bool(np.any(events.sequence[1:] < events.sequence[:-1])):
            events = events.take(np.argsort(events.sequence, kind="stable"))
        return events

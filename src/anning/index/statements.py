"""When a list's statements were made: what a real-time event is compared with (SPEC §4, §5).

A check needs only the index; an event taken after a list was loaded needs to know, for its own
(number, scope, category), what the list says there and when: the latest statement wins, an
opt-out and an opt-in alike. An entry's time is its row's `at` (the list's `as_of` when the row
gave none); an upstream opt-in row or an opt-in event folded in at the load is kept as a
tombstone with its time; a reassignment, as the time of the number's reassignment. Nothing here
is read by the batch kernel: these arrays are mapped from the snapshot and touched only by the
events that need them.

    times       int64 per entry, in index order: the latest time of its category bits
                (absent: every entry as of `as_of`, but for its bits in bit_times)
    bit_times   (number, scope, bit, at): the bits whose time is not their entry's (a load of
                rows without times that folds events keeps only the events' times here: a
                time per entry would cost every row 8 bytes and the build a third more)
    tombstones  (number, scope, bit, at): opt-ins that won, sorted
    reassigned  (number, at): the latest reassignment per number, sorted
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from anning import _index

__all__ = ["KEY_DTYPE", "MOVE_DTYPE", "RowStatements"]

# packed, as the snapshot stores them (little-endian); sorted by number, scope, bit
KEY_DTYPE = np.dtype([("number", "<u8"), ("scope", "<u4"), ("bit", "u1"), ("at", "<i8")])
MOVE_DTYPE = np.dtype([("number", "<u8"), ("at", "<i8")])
NONE, OPT_OUT, OPT_IN = 0, 1, 2


def _empty(dtype: np.dtype) -> np.ndarray:
    return np.empty(0, dtype)


@dataclass
class RowStatements:
    as_of_ms: int = 0
    times: npt.NDArray[np.int64] | None = None
    bit_times: np.ndarray = field(default_factory=lambda: _empty(KEY_DTYPE))
    tombstones: np.ndarray = field(default_factory=lambda: _empty(KEY_DTYPE))
    reassigned: np.ndarray = field(default_factory=lambda: _empty(MOVE_DTYPE))

    # tables' columns, contiguous: a search in a field of packed records copies the whole
    # column first (1.3 ms at a million records, against 1.6 us)
    _number_columns: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False)

    def _numbers(self, name: str) -> np.ndarray:
        return self._column(name, "number")

    def _column(self, name: str, field: str) -> np.ndarray:
        table = getattr(self, name)
        held = self._number_columns.get(f"{name}.{field}")
        if held is None or held[0] is not table:  # the table was set anew
            held = (table, np.ascontiguousarray(table[field]))
            self._number_columns[f"{name}.{field}"] = held
        return held[1]

    def reassigned_columns(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
        """The list's reassignments as two contiguous columns: numbers (sorted) and times."""
        return self._column("reassigned", "number"), self._column("reassigned", "at")

    @property
    def newest_ms(self) -> int:
        """The latest time of any statement: an event later than this wins outright."""
        candidates = [self.as_of_ms]
        if self.times is not None and len(self.times):
            candidates.append(int(self.times.max()))
        for table in (self.tombstones, self.reassigned, self.bit_times):
            if len(table):
                candidates.append(int(table["at"].max()))
        return max(candidates)

    @property
    def nbytes(self) -> int:
        arrays = [self.bit_times, self.tombstones, self.reassigned]
        return sum(a.nbytes for a in arrays) + (self.times.nbytes if self.times is not None
                                                else 0)

    def check_against(self, entries: int) -> None:
        """ValueError when the arrays do not fit an index of `entries` entries."""
        if self.times is not None and len(self.times) != entries:
            raise ValueError(f"times: {len(self.times)} for {entries} entries")
        for name in ("bit_times", "tombstones", "reassigned"):
            table = getattr(self, name)
            keys = table["number"]
            if len(keys) > 1 and bool(np.any(keys[1:] < keys[:-1])):
                raise ValueError(f"{name} are not sorted by number")

    # -- lookups -----------------------------------------------------------------------------
    def reassigned_at(self, number: int) -> int:
        """When the list last saw the number reassigned (0: never)."""
        rows = _rows(self._numbers("reassigned"), number)
        return int(self.reassigned["at"][rows.stop - 1]) if rows else 0

    def statement(self, core: _index.IndexCore, number: int, scope: int,
                  bit: int) -> tuple[int, int]:
        """(kind, at) of what the list says of (number, scope id, bit): OPT_OUT with its time,
        OPT_IN (a tombstone) with its time, or (NONE, 0)."""
        where, masks = core.positions(np.array([number], np.uint64),
                                      np.array([scope], np.uint32))
        if masks[0] >> bit & 1:
            return OPT_OUT, self._entry_time(int(where[0]), number, scope, bit)
        for row in _rows(self._numbers("tombstones"), number):
            t = self.tombstones[row]
            if int(t["scope"]) == scope and int(t["bit"]) == bit:
                return OPT_IN, int(t["at"])
        return NONE, 0

    def _entry_time(self, position: int, number: int, scope: int, bit: int) -> int:
        for row in _rows(self._numbers("bit_times"), number):
            t = self.bit_times[row]
            if int(t["scope"]) == scope and int(t["bit"]) == bit:
                return int(t["at"])
        return self.as_of_ms if self.times is None else int(self.times[position])

    def statements(self, core: _index.IndexCore, numbers: npt.NDArray[np.uint64],
                   scopes: npt.NDArray[np.uint32],
                   bits: npt.NDArray[np.uint8]) -> tuple[np.ndarray, np.ndarray]:
        """`statement` for many keys at once: (kinds uint8, times int64)."""
        n = len(numbers)
        kinds = np.zeros(n, np.uint8)
        times = np.zeros(n, np.int64)
        if n == 0:
            return kinds, times
        where, masks = core.positions(numbers, scopes)
        out = ((masks >> bits) & 1).astype(bool)
        kinds[out] = OPT_OUT
        times[out] = self.as_of_ms if self.times is None else self.times[where[out]]
        if len(self.bit_times):
            for i in _hits(self._numbers("bit_times"), numbers, np.flatnonzero(out)):
                times[i] = self._entry_time(int(where[i]), int(numbers[i]), int(scopes[i]),
                                            int(bits[i]))
        if len(self.tombstones):
            for i in _hits(self._numbers("tombstones"), numbers, np.flatnonzero(~out)):
                kind, at = self.statement(core, int(numbers[i]), int(scopes[i]), int(bits[i]))
                kinds[i], times[i] = kind, at
        return kinds, times

    def reassigned_many(self, numbers: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """`reassigned_at` of many numbers (0: never)."""
        out = np.zeros(len(numbers), np.int64)
        table = self.reassigned
        if len(table) and len(numbers):
            keys = self._numbers("reassigned")
            at = np.searchsorted(keys, numbers, "right") - 1
            found = (at >= 0) & (keys[np.maximum(at, 0)] == numbers)
            out[found] = table["at"][at[found]]
        return out


def _rows(keys: np.ndarray, number: int) -> range:
    if not len(keys):
        return range(0)
    key = np.uint64(number)
    lo = int(np.searchsorted(keys, key, "left"))
    return range(lo, int(np.searchsorted(keys, key, "right")))


def _hits(keys: np.ndarray, numbers: np.ndarray, candidates: np.ndarray) -> list[int]:
    """Which of the candidate queries have their number among `keys` (sorted)."""
    if not len(candidates):
        return []
    q = numbers[candidates]
    at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    hits: list[int] = candidates[keys[at] == q].tolist()
    return hits

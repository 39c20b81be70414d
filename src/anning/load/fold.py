"""A night's rows and anning's own events folded into one list (SPEC §4, §5).

The new binary snapshot is upstream's rows plus the anning events that stay in force: for one
(number, scope, category) the latest statement wins - a row at its `at` (the load's `as_of`
when it gives none), an event at its time, an opt-out over an opt-in at the same time - after
dropping every statement of a number older than its latest reassignment (a row with action
`reassign`, or a reassignment event). The events folded are those past the watermark the
snapshot declares (`events_through`): the ones before it are upstream's to keep or drop. What
wins as an opt-out becomes an entry of the index, with its time; what wins as an opt-in a
tombstone with its time; a reassignment stays as the number's time of reassignment: what a
later event is compared with (anning.index.statements).

Rows of numbers that no opt-in, reassignment or event touches - nearly all of them - go to the
index builder as they are (the compiled build folds their duplicates and keeps their times);
only the few others are resolved with the events, in one compiled merge of two streams ordered
by number (anning._index.fold_statements). The events' stream (`FoldEvents`) depends on the
events alone: a load makes it while its rows are parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from anning._events import NumberSet
from anning._index import fold_statements
from anning.index import RowStatements, ScopeTable, SuppressionIndex
from anning.index.statements import KEY_DTYPE, MOVE_DTYPE
from anning.model.events import OPT_OUT, REASSIGN, EventColumns

__all__ = ["FoldEvents", "Rows", "fold"]


@dataclass
class Rows:
    """A snapshot's rows as parsed: scope ids are `table`'s, times 0 where a row gave none,
    actions 1 opt-out, 2 opt-in, 3 reassignment (None: every row an opt-out)."""

    numbers: npt.NDArray[np.uint64]
    scopes: npt.NDArray[np.uint32]
    masks: npt.NDArray[np.uint8]
    ats: npt.NDArray[np.int64] | None
    actions: npt.NDArray[np.uint8] | None


@dataclass
class _Statements:
    """(number, scope, bit, at, kind) of rows and events, one row a category bit."""

    number: np.ndarray
    scope: np.ndarray
    bit: np.ndarray
    at: np.ndarray
    kind: np.ndarray

    @classmethod
    def of(cls, number: np.ndarray, scope: np.ndarray, mask: np.ndarray, at: np.ndarray,
           kind: np.ndarray) -> _Statements:
        bits = np.unpackbits(mask[:, None], axis=1, bitorder="little")
        row, bit = np.nonzero(bits)
        return cls(number[row], scope[row], bit.astype(np.uint8), at[row], kind[row])

    def take(self, rows: np.ndarray) -> _Statements:
        return _Statements(self.number[rows], self.scope[rows], self.bit[rows], self.at[rows],
                           self.kind[rows])


class FoldEvents:
    """Events to fold, as statements (a bit a row) ordered by number, their scope the index
    of its name in `events.scopes`, and the set of their numbers: all that the rows need not
    be there for."""

    def __init__(self, events: EventColumns) -> None:
        self.events = events
        c = events.columns
        self.numbers = NumberSet(c["number"])
        order = np.argsort(c["number"])
        kind = c["kind"][order]
        mask = np.where(kind == REASSIGN, 1, c["mask"][order]).astype(np.uint8)
        self.said = _Statements.of(c["number"][order], c["scope"][order], mask,
                                   c["at"][order], kind)

    def __len__(self) -> int:
        return len(self.events)

    def in_scopes_of(self, table: ScopeTable) -> _Statements:
        """The statements with `table`'s scope ids (the names the rows did not have, added)."""
        known = table.scope_ids  # (asked first: table.scope's call cost 0.14 s at 85,000)
        ids = np.array([known[name] if name in known else table.scope(name)
                        for name in self.events.scopes] or [0], np.uint32)
        said = self.said
        scope = ids[np.minimum(said.scope, len(ids) - 1)]  # (a reassignment's: unread)
        return _Statements(said.number, scope, said.bit, said.at, said.kind)


def fold(rows: Rows, events: EventColumns | FoldEvents, table: ScopeTable,
         categories: tuple[str, ...], as_of_ms: int,
         meta: Mapping[str, object]) -> SuppressionIndex:
    """The index of `rows` with `events` (already only those past the watermark) folded in;
    `table` gets the scopes of the events that the rows do not name."""
    n = len(rows.numbers)
    times = None
    if rows.ats is not None and rows.ats.any():  # an `at` column left empty: no times
        times = np.where(rows.ats == 0, as_of_ms, rows.ats).astype(np.int64)
    opt_outs = rows.actions is None or bool(np.all(rows.actions == OPT_OUT))
    statements = RowStatements(as_of_ms)
    if opt_outs and not len(events):
        index = SuppressionIndex.from_scope_ids(rows.numbers, rows.scopes, rows.masks, table,
                                                categories, meta, times=times,
                                                statements=statements)
        _bit_times_of_duplicates(index, rows, times)
        return index

    if not isinstance(events, FoldEvents):
        events = FoldEvents(events)
    # the rows of numbers something besides plain opt-out rows speaks of: resolved here. Half
    # of them are looked up in another thread (the lookups release the GIL; ten million of
    # them are a tenth of a second) while this one maps the events' scopes
    with ThreadPoolExecutor(1, thread_name_prefix="anning-fold") as helper:
        first_half = helper.submit(events.numbers.contains, rows.numbers[:n // 2])
        said = events.in_scopes_of(table)
        touched = np.concatenate([first_half.result(),
                                  events.numbers.contains(rows.numbers[n // 2:])]).view(bool)
    if not opt_outs:
        assert rows.actions is not None
        others = NumberSet(rows.numbers[rows.actions != OPT_OUT])
        touched |= others.contains(rows.numbers).view(bool)
    plain = ~touched
    touched_rows = np.flatnonzero(touched)
    del touched
    # the rows resolved, gathered in number order (the merge reads them in turn)
    touched_rows = touched_rows[np.argsort(rows.numbers[touched_rows])]
    gathered = (rows.numbers[touched_rows], rows.scopes[touched_rows],
                rows.masks[touched_rows], None if times is None else times[touched_rows],
                None if rows.actions is None else rows.actions[touched_rows])
    entries, bit_times, statements.tombstones, statements.reassigned = fold_statements(
        gathered, as_of_ms, (said.number, said.scope, said.bit, said.at, said.kind),
        times is not None, KEY_DTYPE, MOVE_DTYPE)
    if times is None:
        statements.bit_times = bit_times
    # the rows of untouched numbers as they are, and the entries resolved, in one build
    more = entries[:3]
    if times is None:
        # rows without times: every entry stands as of `as_of` but for the bits the events
        # (or later rows) gave another time, which go to bit_times; no time per entry
        return SuppressionIndex.from_scope_ids(rows.numbers, rows.scopes, rows.masks, table,
                                               categories, meta, statements=statements,
                                               keep=plain, more=more)
    index = SuppressionIndex.from_scope_ids(rows.numbers, rows.scopes, rows.masks, table,
                                            categories, meta, times=times,
                                            statements=statements, keep=plain, more=entries)
    plain_rows = Rows(rows.numbers[plain], rows.scopes[plain], rows.masks[plain],
                      times[plain], None)
    _bit_times_of_duplicates(index, plain_rows, times[plain], bit_times)
    return index


def _key_table(said: _Statements) -> np.ndarray:
    """(number, scope, bit, at) records of statements already sorted by those keys."""
    table = np.empty(len(said.number), KEY_DTYPE)
    for name in ("number", "scope", "bit", "at"):
        table[name] = getattr(said, name)
    return table


def _bit_times_of_duplicates(index: SuppressionIndex, rows: Rows, times: np.ndarray | None,
                             known: np.ndarray | None = None) -> None:
    """The build keeps an entry's latest time; where its rows' times differ, the time of each
    bit is worked out here from those rows (the latest row of each bit)."""
    statements = index.statements
    parts = [known] if known is not None and len(known) else []
    mixed = index.mixed_entries()
    if times is not None and len(mixed):
        numbers, scopes, _ = index.entries_at(mixed)
        wanted = NumberSet(numbers)
        rows_of = np.flatnonzero(wanted.contains(rows.numbers))
        key_numbers, key_scopes = numbers, scopes
        said = _Statements.of(rows.numbers[rows_of], rows.scopes[rows_of],
                              rows.masks[rows_of], times[rows_of],
                              np.full(len(rows_of), OPT_OUT, np.uint8))
        order = np.lexsort((said.at, said.bit, said.scope, said.number))
        said = said.take(order)
        last = np.ones(len(said.number), bool)
        last[:-1] = (said.number[1:] != said.number[:-1]) | \
            (said.scope[1:] != said.scope[:-1]) | (said.bit[1:] != said.bit[:-1])
        said = said.take(last)
        # only the keys of mixed entries (a number may have other, unmixed scopes)
        pairs = set(zip(key_numbers.tolist(), key_scopes.tolist(), strict=True))
        keep = np.array([(n, s) in pairs for n, s in
                         zip(said.number.tolist(), said.scope.tolist(), strict=True)], bool)
        said = said.take(keep) if len(keep) else said
        parts.append(_key_table(said))
    if parts:
        table = np.concatenate(parts)
        order = np.lexsort((table["bit"], table["scope"], table["number"]))
        statements.bit_times = table[order]

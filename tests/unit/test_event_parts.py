"""The compact parts of the events against plain models: NumberSet (the exact set of numbers
with events), EventStore (each event once), LatestTable (the overlay's latest event per key),
DecisionTable.set_bits and take_events."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anning._events import NumberSet
from anning._index import DecisionTable, LatestTable
from anning.engine.store import EventStore
from anning.model.events import (
    OPT_IN,
    OPT_OUT,
    REASSIGN_SCOPE,
    Event,
    EventColumns,
)
from anning.model.scopes import SOURCE_IDS, SOURCES

NUMBERS = [8613800000001, 8613800000002, 8613900000003]
ABSENT = 8613700000009

C = 0x9E3779B97F4A7C15  # NumberSet's multiplier: numbers made from its inverse share a slot
SAME_SLOT = [((63 << 58) + j) * pow(C, -1, 1 << 64) % (1 << 64) for j in range(1, 40)]
uint64s = st.one_of(st.integers(1, (1 << 64) - 1), st.integers(1, 50),
                    st.sampled_from([1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, *SAME_SLOT]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(uint64s, max_size=40), max_size=6), st.lists(uint64s, max_size=40),
       st.booleans())
def test_number_set_is_a_set(batches, queries, as_arrays):
    numbers, model = NumberSet(), set()
    for batch in batches:
        numbers.add_many(np.array(batch, np.uint64) if as_arrays else batch)
        model.update(batch)
        assert len(numbers) == len(model)
    asked = [*queries, *model]
    assert numbers.contains(np.array(asked, np.uint64)).tolist() == [q in model for q in asked]
    assert all((q in numbers) == (q in model) for q in queries)
    assert numbers.to_array().tolist() == sorted(model)
    assert numbers.nbytes >= 4 * 8 * len(model)  # at most a quarter full


def test_number_set_grows_one_by_one_and_in_bulk():
    rng = np.random.default_rng(7)
    numbers, model = NumberSet(), []
    for x in rng.integers(1, 1 << 63, 3000, dtype=np.uint64).tolist():
        numbers.add(x)
        model.append(x)
    numbers.add_many(np.array([*SAME_SLOT, *model[:500]], np.uint64))  # duplicates change nothing
    model = set(model) | set(SAME_SLOT)
    assert len(numbers) == len(model)
    assert numbers.contains(np.array(sorted(model), np.uint64)).all()
    absent = rng.integers(1 << 63, (1 << 64) - 1, 3000, dtype=np.uint64)
    assert not numbers.contains(absent).any()
    assert NumberSet(np.array(sorted(model), np.uint64)).to_array().tolist() == sorted(model)


def test_number_set_refuses_zero():
    numbers = NumberSet([5, 7])
    for bad in ([0], [9, 0, 11], np.zeros(3, np.uint64)):
        with pytest.raises(ValueError):
            numbers.add_many(bad)
        assert numbers.to_array().tolist() == [5, 7]  # nothing of a refused batch is kept
    with pytest.raises(ValueError):
        numbers.add(0)
    with pytest.raises(ValueError):
        NumberSet([3, 0])
    assert 0 not in numbers
    assert NumberSet().contains(np.array([0, 1], np.uint64)).tolist() == [0, 0]  # empty



@settings(max_examples=200, deadline=None)
@given(st.integers(0, 50), st.lists(st.lists(st.integers(1, 120), max_size=30), max_size=6),
       st.booleans())
def test_event_store_holds_each_event_once(after, batches, as_columns):
    store, model = EventStore(after), set()
    for batch in batches:
        events = [Event(8613800000000 + q, "s", 1, OPT_OUT, 1_700_000_000_000, "api", q)
                  for q in batch]
        if as_columns:
            got = store.add_columns(EventColumns.from_events(events)).sequence.tolist()
        else:
            got = [e.sequence for e in store.add(events)]
        fresh = []
        for q in batch:
            if q > after and q not in model and q not in fresh:
                fresh.append(q)
        assert got == fresh
        model.update(fresh)
        assert len(store) == len(model)
    assert store.columns().sequence.tolist() == sorted(model)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 50), st.lists(st.tuples(st.lists(st.integers(1, 9000), max_size=5000),
                                              st.booleans()), max_size=6),
       st.integers(0, 9000))
def test_event_store_first_time_past_a_sequence_is_the_columns(after, batches, asked):
    """first_at_ms (metrics ask it 4 times a second) finds without making the columns what the
    columns say: the time of the first event by sequence past the one asked, chunks and the
    events not yet in a chunk both out of order."""
    store = EventStore(after)
    for batch, as_columns in batches:
        events = [Event(8613800000000 + q, "s", 1, OPT_OUT, 1_700_000_000_000 + 7 * q, "api", q)
                  for q in batch]
        if as_columns:
            store.add_columns(EventColumns.from_events(events))
        else:
            store.add(events)
    later = store.columns().after(asked)
    assert store.first_at_ms(asked) == (int(later.columns["at"][0]) if len(later) else 0)


# -- LatestTable (the overlay's latest event per key) and DecisionTable.set_bits ----------------

# keys that share a home slot in both tables' hashes (numbers made from the inverse multiplier)
LT_NUMBERS = [*SAME_SLOT[:6], 8613800000001, 8613800000002]
lt_rows = st.tuples(st.sampled_from(LT_NUMBERS), st.sampled_from([0, 1, 7, REASSIGN_SCOPE]),
                    st.integers(0, 7), st.integers(0, 4), st.sampled_from([OPT_OUT, OPT_IN]),
                    st.integers(0, len(SOURCES) - 1))


def _as_event(row):
    return Event(row["number"], "", 1 << row["bit"], row["kind"], row["at"],
                 SOURCES[row["source"]], row["sequence"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(lt_rows, max_size=30), max_size=6), st.booleans())
def test_latest_table_keeps_each_key_s_latest_event(batches, shared):
    table, model, sequence = LatestTable(), {}, 0
    for batch in batches:
        rows = []
        for number, scope, bit, at, kind, source in batch:
            sequence += 1
            rows.append({"number": number, "scope": scope, "bit": bit, "at": at,
                         "kind": kind, "source": source, "sequence": sequence})
        won_expected = []
        for row in rows:
            key = (row["number"], row["scope"], row["bit"])
            held = model.get(key)  # the rule of the model: Event.wins_over
            wins = _as_event(row).wins_over(None if held is None else _as_event(held))
            if wins:
                model[key] = row
            won_expected.append(int(wins))
        column = {f: np.array([r[f] for r in rows], t) for f, t in (
            ("number", np.uint64), ("scope", np.uint32), ("bit", np.uint8), ("at", np.int64),
            ("kind", np.uint8), ("source", np.uint8), ("sequence", np.uint64))}
        won = table.offer_many(column["number"], column["scope"], column["bit"], column["at"],
                               column["kind"], column["source"], column["sequence"], shared)
        assert won.tolist() == won_expected
        assert len(table) == len(model)
    keys = [(n, s, b) for n in LT_NUMBERS for s in (0, 1, 7, REASSIGN_SCOPE) for b in range(8)]
    found, at, kind, source, seq = table.get_many(
        np.array([k[0] for k in keys], np.uint64), np.array([k[1] for k in keys], np.uint32),
        np.array([k[2] for k in keys], np.uint8))
    for i, key in enumerate(keys):
        held = model.get(key)
        assert bool(found[i]) == (held is not None)
        if held is not None:
            assert (int(at[i]), int(kind[i]), int(source[i]), int(seq[i])) == \
                (held["at"], held["kind"], held["source"], held["sequence"])
    moved, moved_at = table.reassigned_many(np.array(LT_NUMBERS, np.uint64))
    for i, number in enumerate(LT_NUMBERS):
        held = model.get((number, REASSIGN_SCOPE, 0))
        assert bool(moved[i]) == (held is not None)
        assert int(moved_at[i]) == (held["at"] if held else 0)
    for number in LT_NUMBERS:
        scopes, bits = table.keys_of(number)
        assert sorted(zip(scopes.tolist(), bits.tolist(), strict=True)) == sorted(
            (s, b) for n, s, b in model if n == number and s != REASSIGN_SCOPE)


def test_latest_table_refuses_bad_rows_naming_them():
    table = LatestTable()
    one = [np.array([x], t) for x, t in ((1, np.uint32), (0, np.uint8), (5, np.int64),
                                         (OPT_OUT, np.uint8), (0, np.uint8), (1, np.uint64))]
    with pytest.raises(ValueError, match=r"numbers\[0\]: 0"):
        table.offer_many(np.array([0], np.uint64), *one)
    with pytest.raises(ValueError, match=r"bits\[0\]: 9"):
        table.offer_many(np.array([5], np.uint64), one[0], np.array([9], np.uint8), *one[2:])
    with pytest.raises(ValueError, match="differ in length"):
        table.offer_many(np.array([5, 6], np.uint64), *one)
    assert len(table) == 0


# E.164 numbers whose keys share a home slot in a 64-slot DecisionTable (its own multiplier)
_KEY_MULTIPLIER = 0xD6E8FEB86659FD93
DT_NUMBERS = [n for n in range(8613800000000, 8613800004000)
              if (n * _KEY_MULTIPLIER % (1 << 64)) >> 58 == 17][:8]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(DT_NUMBERS), st.sampled_from([0, 1, 7]),
                          st.integers(0, 7), st.booleans(), st.booleans()), max_size=60),
       st.integers(1, 20))
def test_decision_table_sets_one_bit_a_row(rows, chunk):
    table, model = DecisionTable(), {}
    for lo in range(0, len(rows), chunk):
        part = rows[lo:lo + chunk]
        for number, scope, bit, decided, out in part:
            d, o = model.get((number, scope), (0, 0))
            if (number, scope) not in model and not decided:
                continue  # no key is made for a bit that decides nothing
            one = 1 << bit
            d, o = d & ~one, o & ~one
            if decided:
                d |= one
                o |= one if out else 0
            model[number, scope] = (d, o)
        table.set_bits(*(np.array([r[i] for r in part], t) for i, t in (
            (0, np.uint64), (1, np.uint32), (2, np.uint8), (3, np.uint8), (4, np.uint8))))
        assert len(table) == len(model)
    numbers = [n for n in DT_NUMBERS for _ in (0, 1, 7)]
    scopes = [s for _ in DT_NUMBERS for s in (0, 1, 7)]
    decided, optout = table.get_many(np.array(numbers, np.uint64), np.array(scopes, np.uint32))
    for i, key in enumerate(zip(numbers, scopes, strict=True)):
        assert (int(decided[i]), int(optout[i])) == model.get(key, (0, 0))
        assert table.get(*key) == model.get(key, (0, 0))


def test_take_events_refuses_what_no_table_can_hold_naming_it():
    from anning._index import take_events

    latest, decisions = LatestTable(), DecisionTable()
    none = np.empty(0, np.uint64), np.empty(0, np.int64)
    good = Event(8613800000001, "shop", 1, OPT_OUT, 1_700_000_000_000, "api", 1)
    bad = Event(0, "shop", 1, OPT_OUT, 1_700_000_000_000, "api", 2)
    sources = SOURCE_IDS
    with pytest.raises(ValueError, match=r"events\[1\].number: 0"):
        take_events(latest, decisions, [good, bad], np.zeros(2, np.uint32), sources, 0, 1,
                    *none)
    with pytest.raises(ValueError, match=r"events\[0\].source: 'pigeon'"):
        take_events(latest, decisions, [Event(8613800000001, "shop", 1, OPT_OUT,
                                              1_700_000_000_000, "pigeon", 3)],
                    np.zeros(1, np.uint32), sources, 0, 1, *none)
    with pytest.raises(ValueError, match="differ in length"):
        take_events(latest, decisions, [good], np.zeros(2, np.uint32), sources, 0, 1, *none)
    assert len(latest) == 0 and len(decisions) == 0  # all or none: nothing was taken
    # the good one alone: taken, and decided outright (later than anything the list says)
    assert [len(a) for a in take_events(latest, decisions, [good], np.zeros(1, np.uint32),
                                        sources, 0, 1, *none)] == [0, 0, 0, 0]
    assert len(latest) == 1 and decisions.get(good.number, 0) == (1, 1)

"""The folding load's merge (anning._index.fold_statements: the rows and the events'
statements, each ordered by number) against a plain model of SPEC §5's rule:
per (number, scope, bit) the latest statement wins, an opt-out over an opt-in at the same
time, after every statement of the number older than its latest reassignment is dropped; the
opt-out winners become entries (a mask and the latest time per number and scope), the opt-in
winners tombstones."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anning._index import fold_statements
from anning.index.statements import KEY_DTYPE, MOVE_DTYPE
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN

AS_OF = 1


def fold(rows, events, timed):
    """fold_statements of rows (number, scope, mask, at, action) and event statements
    (number, scope, bit, at, kind), as plain lists."""
    rows = sorted(rows, key=lambda r: r[0])
    columns = (np.array([r[0] for r in rows], np.uint64), np.array([r[1] for r in rows],
                                                                    np.uint32),
               np.array([r[2] for r in rows], np.uint8),
               np.array([r[3] for r in rows], np.int64) if timed else None,
               np.array([r[4] for r in rows], np.uint8))
    events = sorted(events, key=lambda s: s[0])
    said = tuple(np.array([s[i] for s in events], dtype) for i, dtype in enumerate(
        (np.uint64, np.uint32, np.uint8, np.int64, np.uint8)))
    entries, bit_times, tombstones, moved = fold_statements(
        columns, AS_OF, said, timed, KEY_DTYPE, MOVE_DTYPE)
    return (list(zip(*(c.tolist() for c in entries), strict=True)),
            [tuple(r) for r in bit_times.tolist()], [tuple(r) for r in tombstones.tolist()],
            [tuple(r) for r in moved.tolist()])


def model(rows, events, timed):
    said = [(n, s, 0, at if timed else AS_OF, a) if a == REASSIGN else
            (n, s, b, at if timed else AS_OF, a)
            for n, s, m, at, a in rows for b in (range(8) if a != REASSIGN else [0])
            if a == REASSIGN or m >> b & 1]
    said += list(events)
    moved: dict[int, int] = {}
    for number, _scope, _bit, at, kind in said:
        if kind == REASSIGN:
            moved[number] = max(moved.get(number, at), at)
    best: dict[tuple[int, int, int], tuple[int, bool]] = {}
    for number, scope, bit, at, kind in said:
        if kind == REASSIGN or at < moved.get(number, at):
            continue
        key, rank = (number, scope, bit), (at, kind == OPT_OUT)
        if key not in best or rank > best[key]:
            best[key] = rank
    outs = {k: at for k, (at, out) in best.items() if out}
    entries: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for (number, scope, bit), at in sorted(outs.items()):
        entries.setdefault((number, scope), []).append((bit, at))
    bit_times = [(n, s, b, at) for (n, s), bits in entries.items() for b, at in bits
                 if (len({a for _, a in bits}) > 1 if timed else at != AS_OF)]
    return ([(n, s, sum(1 << b for b, _ in bits), max(a for _, a in bits))
             for (n, s), bits in entries.items()], bit_times,
            [(*k, at) for k, (at, out) in sorted(best.items()) if not out], sorted(moved.items()))


numbers = st.sampled_from([8613800000001, 8613800000002, 8613900000003, 1, 10**15 - 1])
times = st.one_of(st.integers(-1, 3), st.sampled_from([-2**63, 2**63 - 1]))
kinds = st.sampled_from([OPT_OUT, OPT_IN, REASSIGN])
scopes = st.sampled_from([0, 1, 2, 7, 2**31 - 1])
row_lists = st.lists(st.tuples(numbers, scopes, st.integers(1, 255), times, kinds), max_size=30)
event_lists = st.lists(st.tuples(numbers, scopes, st.integers(0, 7), times, kinds), max_size=40)


@settings(max_examples=500, deadline=None)
@given(row_lists, event_lists, st.booleans())
def test_the_merge_folds_as_the_plain_model(rows, events, timed):
    assert fold(rows, events, timed) == model(rows, events, timed)


def test_a_number_with_many_statements_is_folded_as_with_few():
    rng = np.random.default_rng(5)
    events = [(8613800000001, int(s), int(b), int(a), int(k)) for s, b, a, k in zip(
        rng.integers(0, 50, 3000), rng.integers(0, 8, 3000), rng.integers(0, 100, 3000),
        rng.choice([OPT_OUT, OPT_IN, OPT_IN, OPT_OUT, REASSIGN], 3000), strict=True)]
    rows = [(8613800000001, int(s), int(m), int(a), OPT_OUT) for s, m, a in zip(
        rng.integers(0, 50, 500), rng.integers(1, 256, 500), rng.integers(0, 100, 500),
        strict=True)] + [(8613800000002, 3, 1, 5, OPT_OUT)]
    for timed in (False, True):
        assert fold(rows, events, timed) == model(rows, events, timed)


def test_bad_streams_are_refused_naming_what_is_wrong():
    one = (np.array([8613800000002, 8613800000001], np.uint64), np.ones(2, np.uint32),
           np.ones(2, np.uint8), np.zeros(2, np.int64), np.ones(2, np.uint8))
    none = tuple(c[:0] for c in one)
    with pytest.raises(ValueError, match="out of number order"):
        fold_statements(none, 0, one, False, KEY_DTYPE, MOVE_DTYPE)
    with pytest.raises(ValueError, match="out of number order"):
        fold_statements(one, 0, none, False, KEY_DTYPE, MOVE_DTYPE)
    with pytest.raises(ValueError, match="events: columns of 2, 2, 2, 1, 2"):
        fold_statements(none, 0, (*one[:3], one[3][:1], one[4]), False, KEY_DTYPE, MOVE_DTYPE)
    with pytest.raises(ValueError, match="rows: 1 times for 2 rows"):
        fold_statements((*one[:3], one[3][:1], one[4]), 0, none, True, KEY_DTYPE, MOVE_DTYPE)
    with pytest.raises(ValueError, match="not the records this fold writes"):
        fold_statements(none, 0, none, False, MOVE_DTYPE, KEY_DTYPE)

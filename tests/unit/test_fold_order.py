"""The fold's sort of (number, scope-and-bit) pairs (anning.load.fold._pair_order) against
numpy's lexsort: the same pairs in the same order, packed into one key where they fit and by
lexsort where they do not."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anning.load.fold import _pair_order

numbers = st.sampled_from([8613800000001, 8613800000002, 8613900000003, 1, 10**15 - 1])
keys = st.one_of(st.integers(0, 64), st.sampled_from([0, 7, (1 << 35) - 1, (1 << 63) - 1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(numbers, keys), max_size=40))
def test_pairs_come_in_lexsort_order(pairs):
    number = np.array([p[0] for p in pairs], np.uint64)
    key = np.array([p[1] for p in pairs], np.uint64)
    order = _pair_order(number, key)
    expected = np.lexsort((key, number))
    assert sorted(order.tolist()) == list(range(len(pairs)))
    assert list(zip(number[order].tolist(), key[order].tolist(), strict=True)) == \
        list(zip(number[expected].tolist(), key[expected].tolist(), strict=True))

"""The log's events made columns in one compiled pass (anning.storage.records.columns_of)
against the same columns made in plain Python, and its refusals of fields that do not fit."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anning._events import fields_well_formed
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, REASSIGN_SCOPE
from anning.model.scopes import SOURCE_IDS, SOURCES
from anning.storage import records
from anning.storage.records import columns_of


def plain_columns(fields):
    ids: dict[str, int] = {}
    scope = [REASSIGN_SCOPE if f[0] == REASSIGN else ids.setdefault(f[2], len(ids))
             for f in fields]
    return {"kind": [f[0] for f in fields], "number": [f[1] for f in fields], "scope": scope,
            "mask": [f[3] for f in fields], "at": [f[4] for f in fields],
            "source": [SOURCES.index(f[5]) for f in fields]}, list(ids)


def test_columns_equal_plain_python():
    rng = random.Random(7)
    scopes = ["京东", "entity:jd", "*", "shop1", "s" * 64]
    fields = [(kind, 8613800000000 + rng.randrange(10**6),
               "" if kind == REASSIGN else rng.choice(scopes), rng.choice([1, 2, 255]),
               rng.randrange(-2**62, 2**62), rng.choice(SOURCES))
              for kind in rng.choices([OPT_OUT, OPT_IN, REASSIGN], k=5000)]
    got = columns_of(list(range(1, 5001)), fields)
    want, names = plain_columns(fields)
    assert got.scopes == names
    assert got.columns["sequence"].tolist() == list(range(1, 5001))
    for name, values in want.items():
        assert got.columns[name].tolist() == values, name
    assert len(columns_of([], [])) == 0


@pytest.mark.parametrize("bad, error", [
    ((1, 2**64, "s", 1, 0, "api"), OverflowError),
    ((1, 8613800000000, "s", 256, 0, "api"), OverflowError),
    ((1, 8613800000000, "s", 1, 2**63, "api"), OverflowError),
    ((1, 8613800000000, "s", 1, 0, "carrier pigeon"), KeyError),
    ((1, 8613800000000, "s", 1, 0), ValueError),
])
def test_fields_that_do_not_fit_are_refused(bad, error):
    good = (OPT_OUT, 8613800000000, "s", 1, 0, "api")
    with pytest.raises(error):
        columns_of([1, 2], [good, bad])
    assert np.array_equal(columns_of([1], [good]).columns["number"], [8613800000000])


@pytest.mark.parametrize("bad", [
    (7, 8613800000000, "s", 1, 0, "api"), (1, -1, "s", 1, 0, "api"),
    (1, 2**64, "s", 1, 0, "api"), (1, 8613800000000, "s", 256, 0, "api"),
    (1, 8613800000000, "s", -1, 0, "api"), (1, 8613800000000, "s", 1, 2**63, "api"),
    (1, 8613800000000, "s", 1, 0, "carrier pigeon"), (True, 8613800000000, "s", 1, 0, "api"),
    (1, 8613800000000, b"s", 1, 0, "api"), {0: 1, 1: 2, 2: "s", 3: 1, 4: 0, 5: "api"},
])
def test_a_write_checked_in_bulk_refuses_what_one_event_would(bad):
    """A write's events are checked in bulk (types and ranges over all of them), one by one
    only when one fails: a bad one among good ones is RecordError naming it, as alone."""
    good = [(OPT_OUT, 8613800000000 + i, "s", 1, i, "api") for i in range(50)]
    assert records.decode([3, 1, good]).events == good
    assert records.decode([3, 1, [list(g) for g in good]]).events == good
    with pytest.raises(records.RecordError, match="not the fields of an event"):
        records.decode([3, 1, [*good[:20], bad, *good[20:]]])
    with pytest.raises(records.RecordError, match="not the fields of an event"):
        records.decode([2, [bad, *good]])


_field_values = st.one_of(
    st.integers(-2**64, 2**65), st.sampled_from([0, 1, 2, 3, 7, 255, 256, 2**63 - 1, 2**63,
                                                 2**64 - 1, 2**64, -2**63, -2**63 - 1]),
    st.booleans(), st.text(max_size=3), st.sampled_from(SOURCES), st.binary(max_size=2),
    st.none(), st.floats(allow_nan=False))
_items = st.one_of(
    st.tuples(st.sampled_from([1, 2, 3, 4, True]), st.integers(-1, 2**64), st.text(max_size=3),
              st.integers(-1, 256), st.integers(-2**63 - 1, 2**63), st.sampled_from(
                  [*SOURCES, "carrier pigeon"])),
    st.lists(_field_values, min_size=5, max_size=7).map(tuple),
    st.lists(_field_values, min_size=6, max_size=6), st.none(), st.integers(),
    st.dictionaries(st.integers(0, 5), _field_values, max_size=6))


@settings(max_examples=500, deadline=None)
@given(st.lists(_items, max_size=8))
def test_the_compiled_check_of_a_write_is_the_one_by_one_check(items):
    """fields_well_formed (one C pass) says yes exactly when every item passes `_checked`."""
    def one_by_one() -> bool:
        try:
            for item in items:
                records._checked(item)
        except records.RecordError:
            return False
        return True

    assert fields_well_formed(items, records._KIND_SET, SOURCE_IDS) == one_by_one()

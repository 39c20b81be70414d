"""The log's events made columns in one compiled pass (anning.storage.records.columns_of)
against the same columns made in plain Python, and its refusals of fields that do not fit."""

import random

import msgpack
import numpy as np
import pytest
from hypothesis import assume, given, settings
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


@pytest.mark.parametrize("bad", [
    (7, 8613800000000, "s", 1, 0, "api"), (0, 8613800000000, "s", 1, 0, "api"),
    (4, 8613800000000, "s", 1, 0, "api"), (-1, 8613800000000, "s", 1, 0, "api"),
    (1, -1, "s", 1, 0, "api"), (1, 8613800000000, "s", 256, 0, "api"),
    (1, 8613800000000, "s", 511, 0, "api"), (1, 8613800000000, "s", -1, 0, "api"),
    (1, 8613800000000, "s", 1, 2**63, "api"), (1, 8613800000000, "s", 1, 2**64 - 1, "api"),
    (1, 8613800000000, "s", 1, 0, "carrier pigeon"), (True, 8613800000000, "s", 1, 0, "api"),
    (1, 8613800000000, b"s", 1, 0, "api"), (1, 8613800000000, "s", 1, 0, b"api"),
    (1, 8613800000000, "s", 1, 0.5, "api"), (1, 8613800000000, "s", 1, 0),
    (1, None, "s", 1, 0, "api"),
    (1, 8613800000000, "s", 1, 0, "api", 1),
])
def test_a_write_with_one_bad_event_is_left_to_python(bad):
    """The compiled pass takes no write Python would refuse (which then names the event)."""
    good = [(OPT_OUT, 8613800000000 + i, "s", 1, i, "api") for i in range(5)]
    payload = msgpack.packb([3, 1, [*good[:2], bad, *good[2:]]], use_bin_type=True)
    writes, columns = _compiled([payload])
    assert writes == [None] and len(columns) == 0
    assert _decode_in_python(payload) is None
    _agrees([payload, msgpack.packb([3, 9, good], use_bin_type=True)])


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


def _decode_in_python(payload: bytes) -> records.Write | None:
    """What the one-by-one path makes of a payload: a write of this version, else None."""
    try:
        decoded = records.decode(msgpack.unpackb(payload, raw=False))
    except (ValueError, msgpack.UnpackException, records.RecordError):
        return None
    return decoded if isinstance(decoded, records.Write) and decoded.first_sequence else None


def _compiled(payloads: list[bytes]):
    data = b"".join(payloads)
    lengths = np.array([len(p) for p in payloads], np.int64)
    offsets = np.cumsum(lengths) - lengths
    return records.decode_columns(data, offsets, lengths)


def _fields(columns, rows):
    c = columns.columns
    return [(int(c["kind"][i]), int(c["number"][i]),
             "" if c["scope"][i] == REASSIGN_SCOPE else columns.scopes[c["scope"][i]],
             int(c["mask"][i]), int(c["at"][i]), SOURCES[c["source"][i]]) for i in rows]


def _agrees(payloads: list[bytes]) -> None:
    """Every record the compiled pass takes, Python decodes to the same events and first
    sequence; every write of this version Python takes with int sequences, the compiled pass
    takes too."""
    found = _compiled(payloads)
    python = [_decode_in_python(p) for p in payloads]
    if found is None:  # a scope not UTF-8: no record in Python takes it either
        assert all(p is None for p in python)
        return
    writes, columns = found
    row = 0
    for write, want, payload in zip(writes, python, payloads, strict=True):
        if write is None:
            value = None if want is None else msgpack.unpackb(payload, raw=False)
            assert want is None or value[0] != 3 or type(value[1]) is not int, payload
            continue
        assert want is not None, payload
        assert write.first_sequence == want.first_sequence
        # as columns, a reassignment has no scope (columns_of's too)
        assert _fields(columns, range(row, row + write.count)) == [
            (k, n, "" if k == REASSIGN else s, m, a, src) for k, n, s, m, a, src in want.events]
        row += write.count
    assert row == len(columns)


def test_writes_decoded_in_one_pass_are_the_writes_decoded_one_by_one():
    rng = random.Random(11)
    scopes = ["京东", "entity:jd", "*", "shop1", "s" * 300]
    payloads = []
    for first in range(1, 200, 7):
        fields = [(kind, rng.choice([0, 1, 127, 128, 2**16, 2**32, 2**64 - 1, 8613800000000]),
                   "" if kind == REASSIGN else rng.choice(scopes), rng.choice([0, 1, 255]),
                   rng.choice([-2**63, -2**31, -33, -1, 0, 5, 2**40, 2**63 - 1]),
                   rng.choice(SOURCES)) for kind in rng.choices([OPT_OUT, OPT_IN, REASSIGN],
                                                                k=rng.randrange(1, 40))]
        events = [records.event_of(f) for f in fields]
        payloads.append(records.stamp(records.encode_events(events), first)[records.FRAME.size:])
    payloads.insert(3, records.encode_seal(2, 9)[records.FRAME.size:])
    payloads.insert(0, records.encode_header(1)[records.FRAME.size:])
    _agrees(payloads)
    writes, columns = _compiled(payloads)
    assert writes[0] is None and writes[4] is None  # the header and the seal: Python's
    assert sum(w.count for w in writes if w) == len(columns) > 500


_payload_values = st.recursive(
    st.one_of(st.integers(-2**63, 2**64 - 1), st.booleans(), st.none(), st.text(max_size=4),
              st.sampled_from(SOURCES), st.binary(max_size=2), st.floats(allow_nan=False)),
    lambda inner: st.lists(inner, max_size=7), max_leaves=20)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.sampled_from([3, 3, 3, 2, True]), st.integers(-1, 2**64 - 1),
              st.lists(st.one_of(_items, st.lists(_field_values, min_size=6, max_size=6)),
                       max_size=5)).map(list),
    _payload_values), min_size=1, max_size=4), st.binary(max_size=3))
def test_the_compiled_decoding_of_records_is_the_one_by_one_decoding(values, junk):
    """Garbage, near-records and records: the compiled pass takes a payload only as Python
    reads it, and every write of this version; a payload with bytes after its value, or cut
    short, it leaves to Python (which refuses it)."""
    payloads = []
    for value in values:
        try:
            payloads.append(msgpack.packb(value, use_bin_type=True))
        except OverflowError:  # an int msgpack cannot hold: no payload to decode
            continue
    assume(payloads)
    _agrees(payloads)
    _agrees([p + junk for p in payloads])
    _agrees([p[:-1] for p in payloads if len(p) > 1] or [b"\x93"])


def test_a_payload_that_is_more_or_less_than_one_write_is_left_to_python():
    good = records.stamp(records.encode_events([records.event_of(
        (OPT_OUT, 8613800000000 + i, "京东", 1, 0, "api")) for i in range(3)]), 1)
    payload = good[records.FRAME.size:]
    for odd in (payload + b"\x00", payload + payload, payload[:-1], payload[:4],
                b"\x93\x03\x01\x90", b"\x93\x03\x00\x91" + payload[-8:]):
        writes, _ = _compiled([odd])
        assert writes == [None], odd
        assert _decode_in_python(odd) is None
    assert _compiled([payload])[0][0] == records.Write(1, None, 3)


def test_a_scope_that_is_not_utf8_leaves_the_whole_read_to_python():
    good = records.stamp(records.encode_events([records.event_of(
        (OPT_OUT, 8613800000000, "京东", 1, 0, "api"))]), 1)[records.FRAME.size:]
    bad = good.replace("京东".encode(), b"\xff\xfe\xfd\xfc\xfb\xfa")
    assert len(bad) == len(good)
    assert _compiled([good, bad]) is None
    assert _decode_in_python(bad) is None  # msgpack refuses it: the scan names the record


def test_records_outside_the_data_are_refused_naming_the_record():
    from anning._events import decode_writes

    data = b"\x93\x03\x01\x90" * 2
    with pytest.raises(ValueError, match=r"record 1: 4 bytes at 6 are outside the data \(8"):
        decode_writes(data, np.array([0, 6], np.int64), np.array([4, 4], np.int64), SOURCE_IDS)
    with pytest.raises(ValueError, match="lengths: 1 for 2 offsets"):
        decode_writes(data, np.array([0, 4], np.int64), np.array([4], np.int64), SOURCE_IDS)

"""A process's tail of the write log leaves out its own writes (it took their events already)
before decoding them, and takes every other process's records, in order. Real files; two
EventLog instances on one directory stand for two worker processes, whose events get dense
sequences."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anning.model.events import OPT_OUT, Event
from anning.storage.records import encode_events
from anning.storage.wal import EventLog
from anning.storage.wal.segments import OwnWrites

AT = 1_767_225_600_000


def record(number: int) -> bytes:
    return encode_events([Event(number, "s1", 1, OPT_OUT, AT + number % 1000, "api")])


def test_tail_takes_the_other_process_records_and_never_its_own(tmp_path):
    a, b = EventLog(tmp_path), EventLog(tmp_path)
    rng = random.Random(7)
    seen_by = {id(a): [], id(b): []}
    written_by = {id(a): [], id(b): []}
    sequences: list[int] = []  # every event's, from the writers' acknowledgements
    number = 8613800000000
    for _ in range(300):
        writer = rng.choice((a, b))
        numbers = [number + i for i in range(rng.choice((1, 1, 2, 5)))]
        number += len(numbers)
        if rng.random() < 0.3:  # one record of many events (a WriteBatch)
            (first,) = writer.append([encode_events([Event(n, "s1", 1, OPT_OUT, AT, "api")
                                                     for n in numbers])], [len(numbers)])
            sequences += range(first, first + len(numbers))
        else:  # several records in one write() (a group commit)
            sequences += writer.append([record(n) for n in numbers], [1] * len(numbers))
        written_by[id(writer)] += numbers
        if rng.random() < 0.4:
            reader = rng.choice((a, b))
            seen_by[id(reader)] += [e.number for e in reader.tail()]
    for log, other in ((a, b), (b, a)):
        seen_by[id(log)] += [e.number for e in log.tail()]
        assert seen_by[id(log)] == written_by[id(other)]
    # two processes writing one log: dense sequences, 1..n, none twice
    assert sorted(sequences) == list(range(1, number - 8613800000000 + 1))
    # and a reader of its own sees them all, in order, with the sequences acknowledged
    everything = EventLog(tmp_path).tail()
    assert [e.sequence for e in everything] == list(range(1, len(sequences) + 1))
    assert not a.own.spans and not b.own.spans  # every own write met was let go


@st.composite
def frames_and_own(draw):
    gaps = draw(st.lists(st.integers(1, 50), min_size=1, max_size=40))
    frames = np.cumsum(np.array(gaps, np.int64)) + draw(st.integers(0, 1000))
    own: dict[tuple[int, int], int] = {}
    i = 0
    while i < len(frames):
        if draw(st.booleans()):
            span = draw(st.integers(1, 4))
            end = int(frames[i + span]) if i + span < len(frames) else int(frames[-1]) + 7
            own[(3, int(frames[i]))] = end
            i += span
        else:
            i += 1
    # writes of another segment, and of this one beyond or between what was read
    own[(2, int(frames[0]))] = int(frames[0]) + 5
    own[(3, int(frames[-1]) + 1000)] = int(frames[-1]) + 1100
    return frames, own


@settings(max_examples=300, deadline=None)
@given(frames_and_own())
def test_not_own_against_a_model(case):
    frames, own = case
    expected = [not any(n == 3 and s <= f < e for (n, s), e in own.items())
                for f in frames.tolist()]
    left = {k: v for k, v in own.items() if k[0] != 3 or k[1] not in set(frames.tolist())}
    marks = OwnWrites()
    marks.spans = {key: (end, 0) for key, end in own.items()}
    assert marks.keep(3, frames)[0].tolist() == expected
    assert marks.spans == {key: (end, 0) for key, end in left.items()}

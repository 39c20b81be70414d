"""A process's tail of the write log leaves out its own writes (it took their events already)
before decoding them, and takes every other process's records, in order. Real files; two
EventLog instances on one directory stand for two worker processes, whose events get dense
sequences."""

from __future__ import annotations

import os
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anning.model.events import OPT_OUT, Event
from anning.storage.records import encode_events, stamp
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
@given(frames_and_own(), st.integers(0, 60))
def test_not_own_against_a_model(case, short):
    """The reader's read ends `short` bytes before the last frame's end could be: an own write
    that reaches past what was read is only partly there (a write() is not atomic for pread):
    the read stops at its start, and it is not forgotten."""
    frames, own = case
    visible_end = int(frames[-1]) + 7 - short
    met = {k: e for k, e in own.items() if k[0] == 3 and k[1] in set(frames.tolist())}
    partial = [k[1] for k, e in met.items() if e > visible_end]
    cut = min(partial) if partial else None
    whole = {k: e for k, e in met.items() if cut is None or k[1] < cut}
    expected = [not any(n == 3 and s <= f < e for (n, s), e in whole.items())
                and (cut is None or f < cut) for f in frames.tolist()]
    left = {k: v for k, v in own.items() if k not in whole}
    marks = OwnWrites()
    marks.spans = {key: (end, 0) for key, end in own.items()}
    keep, _after, got_cut = marks.keep(3, frames, visible_end)
    assert keep.tolist() == expected
    assert got_cut == cut
    assert marks.spans == {key: (end, 0) for key, end in left.items()}


def test_an_own_write_read_half_written_is_read_again_whole(tmp_path):
    """A process's reader meets its own group-commit write half written (pread is not atomic
    with write()): it must leave that write to its next read, not forget it at its first frame
    and then read its later frames as another process's (sequences already counted: the
    reader stopped every check with CorruptLog "sequence n, after n", seen in the write
    benchmark)."""
    log = EventLog(tmp_path)
    log.append([record(8613800000001)], [1])
    assert [e.sequence for e in log.tail()] == []  # its own
    segment = log.writer.segment
    start = segment.known_end
    own = [stamp(record(8613800000002), 2), stamp(record(8613800000003), 3)]
    data = b"".join(own)
    log.own.mark(segment.number, start, start + len(data), 4)  # as the writer marks, first
    fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data[:len(own[0]) + 5])  # the first record whole, the second begun
        assert log.tail() == []
        os.write(fd, data[len(own[0]) + 5:])
        assert log.tail() == []  # whole now: still its own, left out
    finally:
        os.close(fd)
    other = EventLog(tmp_path)
    other.append([record(8613800000004)], [1])
    assert [(e.number, e.sequence) for e in log.tail()] == [(8613800000004, 4)]

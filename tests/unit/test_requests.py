"""anning.server.requests: the first fault of bytes that are not a request, named; details cut
to fit a trailer; the log that keeps to a few lines a second."""

from __future__ import annotations

import logging
import random

import pytest

from anning.errors import InvalidInput
from anning.server.requests import SparseLog, UndecodableRequest, brief, decode, fault
from anning.v1 import anning_pb2 as pb

EVENT = pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number="13900000001", scope="京东")


@pytest.mark.parametrize(("message", "data", "says"), [
    (pb.CheckRequest, b"\x0a\x02\xc3\x28", "sender at byte 2: not UTF-8"),
    (pb.CheckRequest, b"\x0a\x05ab", "sender at byte 0: 5 bytes said, 2 there"),
    (pb.CheckRequest, b"\x0a", "sender at byte 0: its length cut off"),
    (pb.CheckRequest, b"\x80", "byte 0: a field tag cut off"),
    (pb.CheckRequest, b"\x00", "byte 0: field number 0"),
    (pb.OptOutRequest, b"\x20\xff", "at_ms at byte 0: a number cut off"),
    (pb.CheckRequest, b"\x19\x01\x02", "category at byte 0: a fixed-size number cut off"),
    (pb.CheckRequest, b"\x26", "field 4 at byte 0: wire type 6, which does not exist"),
    (pb.CheckRequest, b"\x23\x08\x01", "field 4 at byte 0: a group never closed"),
    (pb.CheckRequest, b"\x0c", "byte 0: the end of a group that was never opened"),
    (pb.WriteBatchRequest, pb.WriteBatchRequest(events=[EVENT]).SerializeToString() +
     b"\x0a\x05\x12\x03\xe4\xba\x28", "events[1].number at byte 29: not UTF-8"),
    (pb.LoadSnapshotRequest, b"\x0a\x01a\x0a\x01b\x0a\x02\xff\xff",
     "paths[2] at byte 8: not UTF-8"),
])
def test_the_first_fault_is_named(message, data, says):
    assert fault(message.DESCRIPTOR, data) == says
    with pytest.raises(UndecodableRequest) as info:
        decode(message, data)
    assert str(info.value) == f"request: not a valid {message.DESCRIPTOR.full_name}: {says}"
    assert isinstance(info.value, InvalidInput)  # INVALID_ARGUMENT


def test_what_protobuf_takes_is_no_fault():
    """The walk finds nothing where protobuf finds nothing: an unknown group, a field with
    another wire type than its own, every good message."""
    for message, data in ((pb.CheckRequest, b"\x1b\x08\x01\x1c"), (pb.CheckRequest, b"\x08\x05"),
                          (pb.WriteBatchRequest,
                           pb.WriteBatchRequest(events=[EVENT] * 3).SerializeToString())):
        message.FromString(data)
        assert fault(message.DESCRIPTOR, data) is None
        assert decode(message, data) == message.FromString(data)


def test_a_fault_is_found_where_protobuf_finds_one():
    rng = random.Random(5)
    good = pb.WriteBatchRequest(events=[EVENT] * 2).SerializeToString()
    named = 0
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data[:rng.randint(0, len(data))]) if rng.random() < 0.3 else bytes(data)
        try:
            pb.WriteBatchRequest.FromString(data)
        except Exception:
            with pytest.raises(UndecodableRequest) as info:
                decode(pb.WriteBatchRequest, data)
            named += "corrupt (" not in str(info.value)  # the walk named it
        else:
            assert fault(pb.WriteBatchRequest.DESCRIPTOR, data) is None, data
    assert named > 500


def test_brief_keeps_small_details_and_cuts_big_ones_in_the_middle():
    assert brief("number: '12x' is not a number") == "number: '12x' is not a number"
    long = "sender: '" + "京" * 100_000 + "' is longer than 64 characters"
    cut = brief(long)
    assert len(cut.encode()) <= 1024
    assert cut.startswith("sender: '京京") and cut.endswith("' is longer than 64 characters")
    assert "characters]…" in cut


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sparse_log_keeps_to_its_rate_and_counts_what_it_held(caplog):
    clock = Clock()
    logger = logging.getLogger("anning.test.sparse")
    sparse = SparseLog(logger, rate=2.0, burst=3, clock=clock)
    with caplog.at_level(logging.INFO, logger="anning.test.sparse"):
        went = [sparse.log(logging.INFO, f"line {i}") for i in range(100)]
        assert went == [True] * 3 + [False] * 97
        clock.now += 0.5  # one more line's worth
        assert sparse.log(logging.INFO, "after") is True
        assert not sparse.log(logging.INFO, "held")
        sparse.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert lines[3] == "after (97 lines like it held back before this one)"
    assert lines[4].startswith("1 lines about bad requests held back")
    assert len(lines) == 5

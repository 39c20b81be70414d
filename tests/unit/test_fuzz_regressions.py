"""Bugs the fuzz targets in fuzz/ found, one test each (the inputs are kept under
fuzz/regressions/<target>/ too, where fuzz/run.py replays them under the sanitizers)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest

from anning import InvalidInput, SuppressionIndex, normalize_number, normalize_sender
from anning._events import join_payloads, scan_frames
from anning._wire import BatchCodec, MalformedRequest, item_senders
from anning.engine import Engine
from anning.errors import CorruptCheckpoint, CorruptLog, CorruptSnapshot
from anning.gate.pdu import SUBMIT_SM, PduError, decode_message, encode_pdu
from anning.model.events import OPT_OUT, REASSIGN, Event, EventColumns
from anning.server.metrics import Metrics
from anning.server.requests import BadRequests
from anning.server.servicers import CallsInFlight, Limits, Suppression
from anning.storage import records
from anning.storage.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from anning.storage.fileio import OS_IO
from anning.storage.snapshot import read_snapshot, snapshot_summary, write_snapshot
from anning.storage.wal.segments import Segment, scan
from anning.v1 import anning_pb2 as pb

ITEM = pb.CheckRequest(sender="京东", number="13812345678").SerializeToString()


@pytest.fixture(scope="module")
def codec() -> BatchCodec:
    index = SuppressionIndex.build(["13812345678"], ["【京东】"])
    return BatchCodec(index._sender_id, index.category_bit, normalize_number, 0,
                      index.default_country)


@pytest.fixture(scope="module")
def metrics() -> Metrics:
    """One for the module: prometheus_client registers each metric name once a process."""
    return Metrics()


def _varint(value: int) -> bytes:
    out = b""
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


# fuzz_wire: the hand-written CheckBatch decoder and protobuf disagreed on what a request is.

def test_wire_field_number_zero_is_malformed(codec):
    """b"\\x00\\x40" (field 0): protobuf refuses it; the decoder answered an empty batch."""
    with pytest.raises(MalformedRequest):
        codec.decode(b"\x00\x40", 10)


def test_wire_large_field_number_does_not_alias_field_1(codec):
    """A key whose field number is 2^32 + 1 was cut to an int, 1, and read as a check."""
    data = _varint(((1 << 32) + 1) << 3 | 2) + _varint(len(ITEM)) + ITEM
    with pytest.raises(MalformedRequest):
        codec.decode(data, 10)


def test_wire_groups_are_skipped_as_protobuf_does(codec):
    """An unknown field may be a group (wire type 3), field 0 allowed inside: protobuf parses
    these requests, and the decoder called them malformed."""
    for group in (b"\x0b=\x04\x01\x05\x00\x00\x00\x0c", b"\x13\x13\x14\x14",
                  b"\x0b" * 100 + b"\x0c" * 100):
        data = group + b"\x0a" + _varint(len(ITEM)) + ITEM
        assert len(pb.CheckBatchRequest.FromString(data).checks) == 1
        _ids, numbers, _bits, errors = codec.decode(data, 10)
        assert numbers.tolist() == [8613812345678] and not errors
    for bad in (b"\x0b\x14", b"\x0c", b"\x0b" * 101 + b"\x0c" * 101, b"\x13\x00\x14"):
        with pytest.raises(MalformedRequest):
            codec.decode(bad + b"\x0a" + _varint(len(ITEM)) + ITEM, 10)


def test_check_batch_with_an_item_not_utf8_needing_sender_names(metrics):
    """b"\\x0a\\x07\\x0a\\x02\\xff\\xfe\\x12\\x01\\x31": one check whose sender is not UTF-8.
    The server re-read the request with protobuf to name senders the list does not know (of
    numbers with real-time events, here the stand-in number of a bad item); protobuf refuses
    the whole request for that string: DecodeError, INTERNAL. It now names them by the
    decoder's own walk, and the batch is answered, the bad item with its error."""
    engine = Engine(SuppressionIndex.build(["13812345678"], ["【京东】"]))
    engine.opt_out("13912345678", "淘宝")  # a sender the list does not know
    engine.opt_out("8613800000000", "*")
    server = Suppression(engine, metrics, Limits(), CallsInFlight(),
                         BadRequests(metrics.bad_requests, metrics.errors))
    good = pb.CheckRequest(sender="淘宝", number="13912345678").SerializeToString()
    bad = b"\x0a\x07\x0a\x02\xff\xfe\x12\x01\x31"
    for data, scopes in ((bad, [0]), (b"\x0a" + _varint(len(good)) + good + bad, [1, 0])):
        assert item_senders(data)[-1] == "\ufffd\ufffd"
        answer = server._check_batch(data, "CheckBatch")
        results = pb.CheckBatchResponse.FromString(answer).results
        assert [r.scope for r in results] == scopes
        assert "is not valid UTF-8" in results[-1].error


# fuzz_frames: join_payloads copied without bounds checks.

def test_join_payloads_refuses_frames_outside_the_data():
    """More lengths than offsets read past the offsets array; an offset or length past the
    data read past the data (a wrong answer at best, a crash at worst)."""
    data = b"abcdefgh"
    offsets, lengths, _end, _why = scan_frames(data, 100)
    assert join_payloads(data, offsets, lengths) == b""
    assert join_payloads(data, np.array([2, 6], np.int64), np.array([1, 2], np.int64)) == b"cgh"
    for offs, lens in (([], [1]), ([0], [1, 1]), ([6], [5]), ([-2], [1]), ([9], [0]),
                       ([0], [-1])):
        with pytest.raises(ValueError):
            join_payloads(data, np.array(offs, np.int64), np.array(lens, np.int64))


# fuzz_normalize: SPEC §3 against phonenumbers, and senders' normal form.

@pytest.mark.parametrize(("text", "value"), [
    ("tel:9555595555++++++", 869555595555),  # the input the fuzzer found
    ("138 1234 5678 +", 8613812345678),
    ("++86 138 1234 5678", 8613812345678),
    ("(++86)13812345678", 8613812345678),
])
def test_plus_where_phonenumbers_takes_it(text, value):
    """phonenumbers drops trailing '+' and reads a run of leading ones as one; it finds
    these valid, so SPEC §3 says anning must give the same E.164 digits."""
    assert normalize_number(text) == value


@pytest.mark.parametrize("text", ["138+1234 5678", "+ +8613812345678", "+(+8613812345678",
                                  "0086+13812345678", "13812345678+1", "++"])
def test_plus_elsewhere_is_still_invalid(text):
    with pytest.raises(InvalidInput, match="number: "):
        normalize_number(text)


def test_sender_normal_form_is_its_own_normal_form():
    """"[[]]" normalised to "[]", which normalised again is empty (invalid): a sender stored
    under its normal form must be found by it."""
    with pytest.raises(InvalidInput, match="is empty"):
        normalize_sender("[[]]")
    for text in ("【【京东】】", "[ 【京东】 ]", "「[京东]」"):
        assert normalize_sender(text) == "京东" == normalize_sender(normalize_sender(text))
    assert normalize_sender("[a]b[c]") == "a]b[c" == normalize_sender("a]b[c")


def test_sender_folded_letter_composing_with_a_mark():
    """"Ｊ̌" (full-width J, combining caron): NFKC gives "J" + U+030C, folding "j" + U+030C,
    which NFKC composes to "ǰ": the result was not its own normal form."""
    sender = normalize_sender("\uff2a\u030c纍")
    assert sender == "\u01f0纍" == normalize_sender(sender)


def test_sender_written_as_a_scope_key_is_invalid(metrics):
    """A sender whose normal form is `*` or `entity:...` ("[entity:]", "【*】") was read as
    global or as an entity (an opt-out for "[entity:x]" hit the entity x), and "[entity:]" in
    a batch, for a number with real-time events, failed the whole batch."""
    for text in ("[entity:]", "[entity:x]", "【*】", "*", "ENTITY:x"):
        with pytest.raises(InvalidInput, match="written as a scope key"):
            normalize_sender(text)
    engine = Engine(SuppressionIndex.build(["13812345678"], ["【京东】"]))
    engine.opt_out("13912345678", "京东")
    server = Suppression(engine, metrics, Limits(), CallsInFlight(),
                         BadRequests(metrics.bad_requests, metrics.errors))
    request = pb.CheckBatchRequest()
    request.checks.add(sender="[entity:]", number="13912345678")
    request.checks.add(sender="京东", number="13912345678")
    results = pb.CheckBatchResponse.FromString(
        server._check_batch(request.SerializeToString(), "CheckBatch")).results
    assert "written as a scope key" in results[0].error and results[1].scope == 1


# -- the readers of files and the gate's PDUs (fuzz_snapshot, fuzz_checkpoint, fuzz_records,
# fuzz_pdu): each input is kept under fuzz/regressions/<target>/

REGRESSIONS = Path(__file__).resolve().parents[2] / "fuzz" / "regressions"


@pytest.mark.parametrize(("name", "problem"), [
    ("summary-meta-offset-past-end", "outside the file"),  # was ValueError from f.read
    ("meta-as-of-ms-past-int64", "as_of_ms"),  # loaded; statements then OverflowError
    ("directory-out-of-order", "directory: slot 4"),  # loaded; lookups read past the words
])
def test_crafted_snapshot_is_corrupt(tmp_path, name, problem):
    """Snapshots whose checksums hold but whose contents do not (a crafted file)."""
    path = tmp_path / "index.anx"
    path.write_bytes((REGRESSIONS / "snapshot" / name).read_bytes())
    with pytest.raises(CorruptSnapshot, match=problem) as caught:
        snapshot_summary(path)
        read_snapshot(path)
    assert caught.value.path == path


@pytest.mark.parametrize(("field", "at"), [("remainder_bits", 32), ("scope_bits", 36),
                                           ("bloom_k", 40)])
def test_snapshot_header_numbers_past_a_c_int_are_corrupt(tmp_path, field, at):
    """A header number past what the index takes as a C int, the header's CRC made right:
    IndexCore raised OverflowError (fuzz_snapshot's long run; its input is kept as
    header-bits-past-int)."""
    path = tmp_path / "index.anx"
    write_snapshot(SuppressionIndex.build(["13812345678"], ["【京东】"]), path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, at, 0x80000005)
    struct.pack_into("<I", data, 12, 0)
    struct.pack_into("<I", data, 12, zlib.crc32(data[:4096]))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match=f"{field} 2147483653"):
        read_snapshot(path)


@pytest.mark.parametrize("bits", [0, 1, 51])
def test_snapshot_remainder_bits_out_of_range_are_corrupt(tmp_path, bits):
    """remainder_bits 0 made the directory check shift an int by 50 (undefined; UBSan in
    fuzz_snapshot's long run, input kept as remainder-bits-zero-shift), 51 by a negative."""
    path = tmp_path / "index.anx"
    write_snapshot(SuppressionIndex.build(["13812345678"], ["【京东】"]), path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 32, bits)
    struct.pack_into("<I", data, 12, 0)
    struct.pack_into("<I", data, 12, zlib.crc32(data[:4096]))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot, match=f"remainder_bits {bits}"):
        read_snapshot(path)


def _checkpoint_file(tmp_path, edit=None, meta_edit=None, extra=b""):
    """A real checkpoint, its columns edited, then every CRC made right (a crafted file)."""
    events = [Event(8613812345678, "京东", 1, OPT_OUT, 1_790_000_000_000, "reply", 5),
              Event(8613912345678, "", 0, REASSIGN, 1_790_000_000_001, "api", 6)]
    path = tmp_path / "events.ckpt"
    write_checkpoint(path, Checkpoint(EventColumns.from_events(events), 1, 6, 0))
    data = bytearray(path.read_bytes())
    meta_length = struct.unpack_from("<I", data, 16)[0]
    meta = json.loads(data[20:20 + meta_length])
    if edit:
        name, row, value = edit
        offset, length, _crc = meta["columns"][name]
        dtype = dict(EventColumns.FIELDS)[name]
        column = np.frombuffer(bytes(data[offset:offset + length]), dtype).copy()
        column[row] = value
        data[offset:offset + length] = column.tobytes()
        padded = data[offset:offset + 4096]
        meta["columns"][name][2] = zlib.crc32(padded)
    meta.update(meta_edit or {})
    raw = json.dumps(meta).encode()
    data[20:4096] = raw + bytes(4096 - 20 - len(raw))
    struct.pack_into("<II", data, 12, 0, len(raw))
    struct.pack_into("<I", data, 12, zlib.crc32(data[:4096]))
    path.write_bytes(bytes(data) + extra)
    return path


@pytest.mark.parametrize(("edit", "meta_edit", "extra", "problem"), [
    (None, {"watermark": float("inf")}, b"", "watermark"),  # was OverflowError
    (None, {"covers": 1.5}, b"", "covers"),  # was taken as 1
    (("scope", 1, 0), None, b"", "a reassignment names a scope"),  # events(): IndexError
    (("kind", 0, 7), None, b"", "kind 7"),
    (("source", 0, 9), None, b"", "source 9"),  # events(): IndexError
    (None, None, b"\0", "extended"),  # bytes no checksum covers
])
def test_crafted_checkpoint_is_corrupt(tmp_path, edit, meta_edit, extra, problem):
    path = _checkpoint_file(tmp_path, edit, meta_edit, extra)
    with pytest.raises(CorruptCheckpoint, match=problem):
        read_checkpoint(path)
    (tmp_path / "base").mkdir()
    read_checkpoint(_checkpoint_file(tmp_path / "base"))  # the base itself loads


@pytest.mark.parametrize("value", [
    [2, [5]],  # TypeError: 'int' object is not iterable
    [1, 1, 8613812345678, "京东", 1, 1_790_000_000_000, "carrier pigeon"],  # KeyError later
    [3, 1, [[1, -1, "京东", 1, 1_790_000_000_000, "reply"]]],  # OverflowError later
    [3, 1, [[9, 8613812345678, "京东", 1, 1_790_000_000_000, "reply"]]],
    [3, 1, [[1, 8613812345678, "京东", 256, 1_790_000_000_000, "reply"]]],
    [3, 1, [[True, 8613812345678, "京东", 1, 1_790_000_000_000, "reply"]]],
])
def test_log_record_with_fields_the_columns_cannot_hold(value):
    with pytest.raises(records.RecordError):
        records.decode(value)


def test_segment_whose_sequences_go_back_is_corrupt(tmp_path):
    """A header in the middle of a segment set the expected sequence back: the old-version
    write after it took sequences already given."""
    event = [1, 8613812345678, "京东", 1, 1_790_000_000_000, "reply"]
    data = (records.encode_header(5) + records.frame(msgpack.packb([2, [event, event]]))
            + records.encode_header(5) + records.frame(msgpack.packb([2, [event]])))
    segment = Segment(OS_IO, tmp_path, 1)
    os.write(segment.fd, data)
    with pytest.raises(CorruptLog, match="sequence 5, after 6"):
        scan(OS_IO, segment, 0, True, 0)


def test_submit_sm_of_255_bytes_is_refused():
    """sm_length is 0..254: 255 was decoded, and no encoder could write the PDU back."""
    body = (b"\0" + b"\0\0" + b"123\0" + b"\0\0" + b"456\0" + b"\0\0\0" + b"\0\0"
            + b"\0\0\0\0" + bytes([255]) + b"x" * 255)
    with pytest.raises(PduError, match="sm_length: 255"):
        decode_message(SUBMIT_SM, body)
    assert (REGRESSIONS / "pdu" / "submit-sm-length-255").read_bytes()[1:17] == \
        encode_pdu(SUBMIT_SM, 1, body)[:16]

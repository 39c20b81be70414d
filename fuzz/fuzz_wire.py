"""Fuzz target: the compiled CheckBatch codec (anning._wire.BatchCodec.decode, encode_results).

The codec reads protobuf wire format by hand, in C, from the network. Properties, per input:
- decode raises nothing but MalformedRequest (not a CheckBatchRequest) or OverflowError (more
  items than max_items);
- it agrees with a plain-Python reading of the wire format below (protobuf's rules as upb
  applies them: varints of at most 10 bytes, field numbers 1 to 2^29-1, wire types 0-5 with
  groups nested at most 100 deep, lengths within the message), which in turn agrees with
  protobuf itself on every input protobuf parses: the same items, each with the sender id,
  number and category bit (or the error) that the Python API gives for its texts;
- every item without an error re-encodes with the protobuf classes to the same check;
- encode_results' bytes parse as a CheckBatchResponse with the same codes and errors;
- item_senders gives each item's sender text, as the reference reads it;
- the server's whole CheckBatch path (Suppression._check_batch, over an engine with real-time
  events, some for senders the list does not know, which need their names) answers every good
  item as the scalar Engine.check does, and raises only what decode raises.
Run: python fuzz/fuzz_wire.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import numpy as np
    from google.protobuf.message import DecodeError

    from anning import InvalidInput, SuppressionIndex
    from anning._normalize import normalize_number
    from anning._wire import BatchCodec, MalformedRequest, encode_results, item_senders
    from anning.engine import Engine
    from anning.server.metrics import Metrics
    from anning.server.requests import BadRequests, UndecodableRequest
    from anning.server.servicers import CallsInFlight, Limits, Suppression
    from anning.v1 import anning_pb2 as pb

MAX_ITEMS = 64
MAX_FIELD = (1 << 29) - 1
MAX_GROUP_DEPTH = 100

INDEX = SuppressionIndex.build(
    ["13812345678", "+86 139-1234-5678", "008613712345678"],
    ["【京东】", "entity:京东集团", "*"],
    ["marketing", "all", "notification"],
    entities={"京东超市": "京东集团"},
)


def make_codec() -> BatchCodec:
    """As anning.server.servicers.Suppression._codec_for builds it."""
    return BatchCodec(INDEX._sender_id, INDEX.category_bit, normalize_number, 0,
                      INDEX.default_country)


CODEC = make_codec()
ENGINE = Engine(INDEX)
for _number, _scope in (("13912345678", "淘宝"), ("13812345678", "京东超市"),
                        ("8613800000000", "*"), ("13712345678", "淘宝")):
    ENGINE.opt_out(_number, _scope)  # "淘宝": a sender the list itself does not know
METRICS = Metrics()
SERVER = Suppression(ENGINE, METRICS, Limits(max_batch=MAX_ITEMS), CallsInFlight(),
                     BadRequests(METRICS.bad_requests, METRICS.errors))


class Bad(Exception):
    """Not protobuf wire format (the reference's MalformedRequest)."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    for k in range(10):
        if pos >= end:
            raise Bad("varint cut short")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            return value & ((1 << 64) - 1), pos
    raise Bad("varint longer than 10 bytes")


def _fields(buf: bytes, pos: int, end: int, depth: int, in_group: bool = False):
    """(field, wire type, payload start, payload end) of each field in buf[pos:end]; groups
    may nest `depth` deep. Inside a group protobuf lets field number 0 pass; it stops at the
    end-group key (yielded with wire type 4)."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field > MAX_FIELD or (field == 0 and not in_group):
            raise Bad(f"field number {field}")
        start = pos
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise Bad("length past the end")
            start = pos
            pos += length
        elif wire == 3:
            if depth < 1:
                raise Bad("groups nested too deep")
            pos = _skip_group(buf, pos, end, field, depth - 1)
        elif wire == 4 and in_group:
            yield field, wire, start, pos
            return
        else:
            raise Bad(f"wire type {wire}")
        if pos > end:
            raise Bad("field past the end")
        yield field, wire, start, pos


def _skip_group(buf: bytes, pos: int, end: int, field: int, depth: int) -> int:
    for f, wire, _start, stop in _fields(buf, pos, end, depth, in_group=True):
        if wire == 4:
            if f != field:
                raise Bad("end of another group")
            return stop
    raise Bad("group not ended")


def reference_decode(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """The (sender, number, category) bytes of each check; the last of a repeated field wins."""
    items = []
    for field, wire, start, end in _fields(data, 0, len(data), MAX_GROUP_DEPTH):
        if field == 1 and wire == 2:
            texts = [b"", b"", b""]
            for f, w, s, e in _fields(data, start, end, MAX_GROUP_DEPTH - 1):
                if w == 2 and 1 <= f <= 3:
                    texts[f - 1] = data[s:e]
            items.append((texts[0], texts[1], texts[2]))
    return items


def expected_item(i: int, sender: bytes, number: bytes, category: bytes
                  ) -> tuple[int, int, int, str | None]:
    """(sender id, number, category bit, error field) the Python API gives for the texts."""
    if not sender:
        return 0, 0, 0, "sender"
    try:
        sid = INDEX._sender_id(sender.decode("utf-8"))
    except (UnicodeDecodeError, InvalidInput):
        return 0, 0, 0, "sender"
    bit = 0
    if category:
        try:
            bit = INDEX.category_bit(category.decode("utf-8"))
        except (UnicodeDecodeError, InvalidInput):
            return sid, 0, 0, "category"
    try:
        value = normalize_number(number.decode("utf-8"), INDEX.default_country,
                                 f"checks[{i}].number")
    except (UnicodeDecodeError, InvalidInput):
        return sid, 0, bit, "number"
    return sid, value, bit, None


def structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A well-formed request built with protobuf from fuzzed texts (reaches the per-item code
    far more often than raw bytes), sometimes with raw bytes appended."""
    pieces = ["13812345678", "+86 139-1234-5678", "京东", "【京东】", "京东超市", "*", "淘宝",
              "notification", "all", "marketing", "tel:", "００８６", " ", "+", "(0)"]
    request = pb.CheckBatchRequest()
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        texts = []
        for _ in range(3):
            if fdp.ConsumeBool():
                texts.append(fdp.PickValueInList(pieces) + fdp.ConsumeUnicodeNoSurrogates(6))
            else:
                texts.append(fdp.ConsumeUnicodeNoSurrogates(16))
        request.checks.add(sender=texts[0], number=texts[1], category=texts[2])
    tail = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
    if fdp.ConsumeBool():  # a check whose sender is not UTF-8: protobuf refuses the request
        tail = b"\x0a\x07\x0a\x02\xff\xfe\x12\x01\x31" + tail
    return request.SerializeToString() + tail


def test_one_input(raw: bytes) -> None:
    data = structured(atheris.FuzzedDataProvider(raw[1:])) if raw[:1] == b"\x01" else raw
    try:
        reference: list | None = reference_decode(data)
    except Bad:
        reference = None
    try:
        parsed = list(pb.CheckBatchRequest.FromString(data).checks)
    except DecodeError:
        parsed = None
    if parsed is not None:  # protobuf's reading is the reference's
        expect(reference is not None, "protobuf parses what the reference calls malformed")
        expect(reference == [(c.sender.encode(), c.number.encode(), c.category.encode())
                             for c in parsed], "the reference reads other checks than protobuf")
    try:
        ids, numbers, bits, errors = CODEC.decode(data, MAX_ITEMS)
    except MalformedRequest:
        expect(reference is None, f"MalformedRequest for a request of {len(reference or [])} "
                                  "checks")
        check_server(data, MalformedRequest)
        return
    except OverflowError:
        expect(reference is None or len(reference) > MAX_ITEMS,
               "OverflowError for a batch within the limit")
        check_server(data, OverflowError)
        return
    expect(reference is not None, "decoded what is not a CheckBatchRequest")
    assert reference is not None
    expect(len(ids) == len(numbers) == len(bits) == len(reference),
           f"{len(ids)} checks decoded, {len(reference)} in the request")
    expect(set(errors) <= set(range(len(ids))), "an error for a check that is not there")
    good = []
    for i, texts in enumerate(reference):
        sid, number, bit, bad_field = expected_item(i, *texts)
        if bad_field is not None:
            expect(i in errors and errors[i].startswith(f"checks[{i}].{bad_field}: "),
                   f"checks[{i}]: expected an error on {bad_field}, got {errors.get(i)!r}")
            continue
        expect(i not in errors, f"checks[{i}]: unexpected error {errors.get(i)!r}")
        expect((int(ids[i]), int(numbers[i]), int(bits[i])) == (sid, number, bit),
               f"checks[{i}]: decoded {(ids[i], numbers[i], bits[i])}, "
               f"expected {(sid, number, bit)}")
        good.append(i)
    # Each good item re-encodes, with protobuf, to the same check.
    again = pb.CheckBatchRequest()
    for i in good:
        sender, number, category = (t.decode("utf-8") for t in reference[i])
        again.checks.add(sender=sender, number=number, category=category)
    ids2, numbers2, bits2, errors2 = make_codec().decode(again.SerializeToString(), MAX_ITEMS)
    expect(not errors2, f"re-encoded good checks have errors: {errors2}")
    expect(np.array_equal(ids2, ids[good]) and np.array_equal(numbers2, numbers[good])
           and np.array_equal(bits2, bits[good]), "re-encoded checks decode differently")
    expect(item_senders(data) == [t[0].decode("utf-8", "replace") for t in reference],
           "item_senders: other senders")
    check_server(data, None, reference, errors)
    # The answer's encoding.
    codes = np.frombuffer(bytes((b & 3) for b in data[: len(ids)]).ljust(len(ids), b"\0"),
                          np.uint8).copy()
    response = pb.CheckBatchResponse.FromString(encode_results(codes, errors))
    expect(len(response.results) == len(ids), "encode_results: another number of results")
    for i, result in enumerate(response.results):
        if i in errors:
            expect(result.error == errors[i] and not result.suppressed and result.scope == 0,
                   f"results[{i}]: {result} for error {errors[i]!r}")
        else:
            expect(result.error == "" and result.scope == codes[i]
                   and result.suppressed == bool(codes[i]), f"results[{i}]: {result}")


def check_server(data: bytes, raises: type | None, reference: list | None = None,
                 errors: dict | None = None) -> None:
    """The server's batch path answers as decode does, and each good check as Engine.check."""
    try:
        answer = SERVER._check_batch(data, "CheckBatch")
    except UndecodableRequest as exc:  # the server names the fault of what decode refused
        expect(raises is MalformedRequest, f"_check_batch raised {exc!r}, decode {raises}")
        return
    except (MalformedRequest, OverflowError) as exc:
        expect(raises is not None and isinstance(exc, raises), f"_check_batch raised {exc!r}")
        return
    expect(raises is None, f"_check_batch answered where decode raised {raises}")
    assert reference is not None and errors is not None
    results = pb.CheckBatchResponse.FromString(answer).results
    expect(len(results) == len(reference), "_check_batch: another number of results")
    for i, (sender, number, category) in enumerate(reference):
        if i in errors:
            expect(results[i].error == errors[i], f"results[{i}]: {results[i]}")
            continue
        want = ENGINE.check(sender.decode(), number.decode(), category.decode() or "marketing")
        expect(results[i].scope == int(want) and not results[i].error,
               f"results[{i}]: {results[i].scope} for {reference[i]}, Engine.check {want!r}")


if __name__ == "__main__":
    _harness.run(test_one_input)

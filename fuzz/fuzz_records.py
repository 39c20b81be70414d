"""Fuzz target: the write log's record decoder (anning.storage.records.decode) and the scan of a
segment (anning.storage.wal.segments.scan), the Python half of reading the log at start-up.

After a crash or on a damaged disk a segment holds anything; start-up must take every whole
good record, drop a torn tail, and stop on corruption before the end naming the file and the
offset, never with another exception. Properties, per input:
- decode of any msgpack value gives a Seal, a Header or a Write, or raises RecordError;
- a decoded write's events are events the log can hold: as columns (records.columns_of, what
  recovery and the reader make of them) they take no other exception, and re-encoded
  (encode_events, stamp) they decode to the same events and first sequence;
- the compiled decoding of a payload (records.decode_columns) takes only what decode reads
  as a write, to the same events;
- scan of a segment made of records (good ones, old versions, seals, headers, garbage
  payloads with good frames, damaged frames) returns a Scan or raises CorruptLog naming the
  segment; nothing else. What it returns is whole: one sequence per event, increasing, and
  every event's columns can be made; its end lies within the file.
Run: python fuzz/fuzz_records.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import msgpack
    import numpy as np

    from anning.errors import CorruptLog
    from anning.model.scopes import SOURCES
    from anning.storage import records
    from anning.storage.fileio import OS_IO
    from anning.storage.wal.segments import Segment, scan

WORKDIR = Path(tempfile.mkdtemp(prefix="anning-fuzz-records-",
                                dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
SCOPES = ("京东", "entity:京东集团", "*", "shop")
ODD = (0, -1, (1 << 64) - 1, (1 << 63) - 1, -(1 << 63), True, 4, 256, "", "x", b"\xff", None,
       1.5, [], [1], {}, "snapshot", "api", 10**15)


def some_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    """A msgpack value, often near a record's shape."""
    pick = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 5)
    if pick <= 3:
        return ODD[fdp.ConsumeIntInRange(0, len(ODD) - 1)]
    if pick == 4:
        return fdp.ConsumeIntInRange(-(1 << 63), (1 << 64) - 1)
    if pick == 5:
        return fdp.ConsumeUnicodeNoSurrogates(8)
    if pick == 6:
        return some_event(fdp)
    if pick == 7:
        version = fdp.ConsumeIntInRange(0, 5)
        return [version, *(some_value(fdp, depth + 1)
                           for _ in range(fdp.ConsumeIntInRange(0, 7)))]
    if pick == 8:
        return [3, fdp.ConsumeIntInRange(0, 1 << 40),
                [some_event(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]]
    return [some_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]


def some_event(fdp: atheris.FuzzedDataProvider) -> list[object]:
    fields: list[object] = [
        fdp.ConsumeIntInRange(1, 3), 8613812345678 + fdp.ConsumeIntInRange(0, 9),
        SCOPES[fdp.ConsumeIntInRange(0, len(SCOPES) - 1)], fdp.ConsumeIntInRange(0, 255),
        1_790_000_000_000 + fdp.ConsumeIntInRange(0, 10**6),
        SOURCES[fdp.ConsumeIntInRange(1, len(SOURCES) - 1)]]
    if fdp.ConsumeIntInRange(0, 2) == 0:  # one field odd
        fields[fdp.ConsumeIntInRange(0, 5)] = ODD[fdp.ConsumeIntInRange(0, len(ODD) - 1)]
    return fields


def check_decoded(value: object) -> None:
    try:
        decoded = records.decode(value)
    except records.RecordError:
        return
    expect(isinstance(decoded, (records.Seal, records.Header, records.Write)),
           f"decode gave {decoded!r}")
    if not isinstance(decoded, records.Write):
        return
    records.columns_of(range(1, len(decoded.events) + 1), decoded.events)
    if not decoded.events:  # an empty write of version 2, read; version 3 has one at least
        return
    first = decoded.first_sequence or 1
    events = [records.event_of(f) for f in decoded.events]
    again = records.decode(msgpack.unpackb(
        records.stamp(records.encode_events(events), first)[records.FRAME.size:], raw=False))
    expect(isinstance(again, records.Write) and again.first_sequence == first
           and again.events == decoded.events,
           f"{decoded!r} re-encoded decodes to {again!r}")


def segment_bytes(fdp: atheris.FuzzedDataProvider) -> bytes:
    out = b""
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        kind = fdp.ConsumeIntInRange(0, 6)
        if kind == 0:
            out += records.encode_header(fdp.ConsumeIntInRange(0, 1 << 20))
        elif kind == 1:
            out += records.encode_seal(fdp.ConsumeIntInRange(0, 9), fdp.ConsumeIntInRange(0, 99))
        elif kind in (2, 3):
            events = [records.event_of(some_event(fdp))
                      for _ in range(fdp.ConsumeIntInRange(1, 3))]
            try:
                record = records.encode_events(events)
            except (ValueError, OverflowError, TypeError):
                continue
            out += records.stamp(record, fdp.ConsumeIntInRange(0, 60))
        elif kind == 4:
            try:
                out += records.frame(msgpack.packb(some_value(fdp), use_bin_type=True))
            except (ValueError, OverflowError, TypeError):
                continue
        elif kind == 5:
            out += records.frame(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12)))
        else:
            out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 12))
    damage = fdp.ConsumeIntInRange(0, 3)
    if damage == 1 and out:
        at = fdp.ConsumeIntInRange(0, len(out) - 1)
        out = out[:at] + bytes([out[at] ^ fdp.ConsumeIntInRange(1, 255)]) + out[at + 1:]
    elif damage == 2:
        out = out[:fdp.ConsumeIntInRange(0, len(out))]
    return out


def check_scan(data: bytes, final: bool, next_sequence: int) -> None:
    directory = WORKDIR / "wal"
    directory.mkdir(exist_ok=True)
    segment = Segment(OS_IO, directory, 1)
    os.ftruncate(segment.fd, 0)
    os.pwrite(segment.fd, data, 0)
    try:
        found = scan(OS_IO, segment, 0, final, next_sequence)
    except CorruptLog as exc:
        expect(exc.path == segment.path, f"CorruptLog names {exc.path}")
        return
    finally:
        os.close(segment.fd)
        segment.fd = -1
    sequences = found.events.sequence
    expect(bool((np.diff(sequences.astype(np.int64)) > 0).all()),
           f"sequences not increasing: {sequences.tolist()}")
    expect(0 <= found.end <= len(data), f"scan ends at {found.end} of {len(data)}")
    found.events.events()  # every event's columns make an event


def check_compiled(payload: bytes) -> None:
    """records.decode_columns (the compiled pass) takes a payload only as records.decode
    reads it, to the same events."""
    found = records.decode_columns(payload, np.zeros(1, np.int64),
                                   np.array([len(payload)], np.int64))
    try:
        python = records.decode(msgpack.unpackb(payload, raw=False))
    except (ValueError, msgpack.UnpackException, records.RecordError):
        python = None
    if found is None or found[0][0] is None:
        return
    write, columns = found[0][0], found[1]
    expect(isinstance(python, records.Write) and python.first_sequence ==
           write.first_sequence, f"compiled took {payload!r}, Python reads {python!r}")
    assert isinstance(python, records.Write)
    got = [(e.kind, e.number, e.scope, e.mask, e.at_ms, e.source)
           for e in columns.events()]
    want = [(k, n, "" if k == 3 else s, m, a, src) for k, n, s, m, a, src in python.events or ()]
    expect(got == want, f"compiled {got!r}, Python {want!r}")


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    mode = fdp.ConsumeIntInRange(0, 2)
    if mode == 0:  # a payload as bytes
        try:
            payload = fdp.ConsumeBytes(fdp.remaining_bytes())
            value = msgpack.unpackb(payload, raw=False, use_list=False)
        except (ValueError, msgpack.UnpackException):
            value = None
        check_compiled(payload)
        if value is not None:
            check_decoded(value)
    elif mode == 1:
        value = some_value(fdp)
        check_decoded(value)
        with contextlib.suppress(OverflowError, TypeError):  # not a value msgpack writes
            check_compiled(msgpack.packb(value, use_bin_type=True))
    else:
        final = fdp.ConsumeBool()
        next_sequence = fdp.ConsumeIntInRange(0, 30)
        check_scan(segment_bytes(fdp), final, next_sequence)


if __name__ == "__main__":
    _harness.run(test_one_input)

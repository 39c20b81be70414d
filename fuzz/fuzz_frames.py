"""Fuzz target: the write log's frame scanner (anning._events.scan_frames, join_payloads).

A log segment is `u32 length | u32 crc32 | payload` frames; after a crash or on a damaged disk
it holds anything. Properties, per input:
- scan_frames agrees with a plain-Python scanner written here from the format (FRAME_END at the
  end of the data, FRAME_TORN at a frame cut short or longer than max_record, FRAME_BAD at a
  frame whose CRC fails): the same frames, the same end, the same reason;
- every frame it reports lies within the data and its CRC is zlib.crc32 of its payload;
- join_payloads gives the payloads back to back; with offsets and lengths that are not those
  of the data (a caller's mistake) it raises ValueError and never reads outside the data.
Run: python fuzz/fuzz_frames.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import struct
import zlib

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import numpy as np

    from anning._events import FRAME_BAD, FRAME_END, FRAME_TORN, join_payloads, scan_frames


def reference_scan(data: bytes, max_record: int) -> tuple[list[int], list[int], int, int]:
    offsets: list[int] = []
    lengths: list[int] = []
    pos = 0
    while pos + 8 <= len(data):
        length, crc = struct.unpack_from("<II", data, pos)
        if length > max_record or pos + 8 + length > len(data):
            return offsets, lengths, pos, FRAME_TORN
        if zlib.crc32(data[pos + 8 : pos + 8 + length]) != crc:
            return offsets, lengths, pos, FRAME_BAD
        offsets.append(pos + 8)
        lengths.append(length)
        pos += 8 + length
    return offsets, lengths, pos, FRAME_END if pos == len(data) else FRAME_TORN


def frame(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    """Mostly good frames, then maybe damage: raw mutation rarely makes a CRC match."""
    out = b"".join(frame(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
                   for _ in range(fdp.ConsumeIntInRange(0, 6)))
    damage = fdp.ConsumeIntInRange(0, 3)
    if damage == 1 and out:  # a flipped byte
        at = fdp.ConsumeIntInRange(0, len(out) - 1)
        out = out[:at] + bytes([out[at] ^ (fdp.ConsumeIntInRange(1, 255))]) + out[at + 1 :]
    elif damage == 2:  # cut short
        out = out[: fdp.ConsumeIntInRange(0, len(out))]
    elif damage == 3:  # junk after
        out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
    return out


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    mode = fdp.ConsumeIntInRange(0, 3)
    max_record = fdp.ConsumeIntInRange(-1, 80)
    data = fdp.ConsumeBytes(fdp.remaining_bytes()) if mode == 2 else structured(fdp)
    offsets, lengths, end, why = scan_frames(data, max_record)
    want = reference_scan(data, max_record)
    expect((offsets.tolist(), lengths.tolist(), end, why) == want,
           f"scan_frames {(offsets.tolist(), lengths.tolist(), end, why)}, reference {want}")
    for off, length in zip(offsets.tolist(), lengths.tolist(), strict=True):
        expect(off >= 8 and 0 <= length <= max_record and off + length <= end <= len(data),
               f"frame at {off}+{length} outside the data")
        expect(zlib.crc32(data[off : off + length]) == struct.unpack_from("<I", data, off - 4)[0],
               f"frame at {off}: CRC does not match")
    joined = join_payloads(data, offsets, lengths)
    expect(joined == b"".join(data[o : o + n] for o, n in zip(want[0], want[1], strict=True)),
           "join_payloads: other bytes")
    if mode == 3:  # offsets and lengths of a caller's own making
        count = fdp.ConsumeIntInRange(0, 4)
        offs = np.array([fdp.ConsumeIntInRange(-4, len(data) + 4) for _ in range(count)],
                        np.int64)
        lens = np.array([fdp.ConsumeIntInRange(-4, len(data) + 4)
                         for _ in range(fdp.ConsumeIntInRange(0, 4))], np.int64)
        fits = len(offs) == len(lens) and all(
            o >= 0 and n >= 0 and o + n <= len(data) for o, n in zip(offs, lens, strict=True))
        try:
            joined = join_payloads(data, offs, lens)
        except ValueError:
            expect(not fits, f"join_payloads refused {offs}, {lens} over {len(data)} bytes")
            return
        expect(fits, f"join_payloads took {offs}, {lens} over {len(data)} bytes")
        expect(joined == b"".join(data[o : o + n] for o, n in zip(offs, lens, strict=True)),
               "join_payloads: other bytes")


if __name__ == "__main__":
    _harness.run(test_one_input)

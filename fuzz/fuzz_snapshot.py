"""Fuzz target: the binary snapshot reader (anning.storage.snapshot.read_snapshot, and
snapshot_summary), over damaged, truncated and crafted files.

A snapshot is written by anning, but LoadSnapshot maps whatever file it is pointed at (under
--load-dir), and a disk or a copy can damage one. The bases are real snapshots made here by
the package's own writer from a handful of source rows (version 2, and the same index laid out
as version 1), each with the rows' statements; an input is either a whole file (it starts with
the magic: the committed corpus holds the real one) or a program of damage to a base: bytes
flipped or set anywhere, in the header or in a section, the meta JSON edited, the file cut or
extended, and then maybe every checksum made right again, so that the parts behind the CRCs
(the section table, the meta, the arrays) are reached as well. Properties, per input:
- read_snapshot returns an index or raises CorruptSnapshot naming the file; nothing else;
  snapshot_summary likewise (a file read_snapshot takes, it takes);
- every byte is checked: without the checksums made right, a file that loads is the base
  itself, byte for byte, and answers every check of its source rows as they say (SPEC §2, a
  reference written here): the most specific scope whose mask holds the category;
- a crafted file that loads (checksums right, contents anything) is safe to serve: the
  directory of its buckets is monotone within its entries (else a lookup reads outside
  them), single and batch checks, entries, statements and verify() answer within their
  domains, never crash.
Run: python fuzz/fuzz_snapshot.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import numpy as np

    from anning import CorruptSnapshot, InvariantError, Scope, SuppressionIndex
    from anning.index.statements import KEY_DTYPE, MOVE_DTYPE
    from anning.storage.snapshot import (
        MAGIC,
        read_snapshot,
        snapshot_summary,
        write_snapshot,
    )

PAGE = 4096
HEADER = struct.Struct("<8sIIQQIIII")
SECTION = struct.Struct("<16sQQI4x")
V2_NAMES = ("directory", "words", "bloom", "sender_scope", "sender_entity", "times",
            "bit_times", "tombstones", "reassigned", "meta")
V1_NAMES = (*V2_NAMES[:5], "meta")

# The source rows: (number, scope key, categories); entities of senders.
ROWS = [
    (8613812345678, "京东", ("marketing",)),
    (8613912345678, "entity:京东集团", ("marketing", "notification")),
    (8613712345678, "*", ("notification",)),
    (442079460958, "shop", ("marketing",)),
    (8613812345678, "shop", ("notification",)),
    (8613600000001, "*", ("marketing", "notification")),
    (8613600000001, "京东超市", ("marketing",)),
]
# and enough others that the directory has buckets (17 slots), whose order a file may break
ROWS += [(8615000000000 + i * 1_000_003, "*" if i % 3 else "shop", ("notification",))
         for i in range(60)]
ENTITIES = {"京东超市": "京东集团", "京东": "京东集团"}
CATEGORIES = ("marketing", "notification")
PROBE_NUMBERS = sorted({n for n, _s, _c in ROWS[:8]} | {ROWS[-1][0], ROWS[-2][0], 8613800000000,
                        15550001111})
PROBE_SENDERS = ["京东", "京东超市", "shop", "nobody"]


def reference(sender: str, number: int, category: str) -> Scope:
    """SPEC §2 from the rows: sender, then the sender's entity, then global."""
    held = {(n, s) for n, s, cats in ROWS if category in cats}
    entity = ENTITIES.get(sender)
    for scope, answer in ((sender, Scope.SENDER),
                          (f"entity:{entity}" if entity else None, Scope.ENTITY),
                          ("*", Scope.GLOBAL)):
        if scope is not None and (number, scope) in held:
            return answer
    return Scope.NONE


def build_base() -> SuppressionIndex:
    index = SuppressionIndex.build(
        [n for n, _s, _c in ROWS], [s for _n, s, _c in ROWS],
        np.array([sum(1 << CATEGORIES.index(c) for c in cats) for _n, _s, cats in ROWS],
                 np.uint8),
        entities=ENTITIES, meta={"as_of_ms": 1_790_000_000_000},
    )
    numbers = index.entries()[0]
    st = index.statements
    st.times = np.arange(len(numbers), dtype=np.int64) + 1_789_000_000_000
    st.bit_times = np.array([(int(numbers[0]), 1, 0, 1_789_500_000_000)], KEY_DTYPE)
    st.tombstones = np.array([(8613800000000, 0, 1, 1_789_600_000_000)], KEY_DTYPE)
    st.reassigned = np.array([(8613700000000, 1_780_000_000_000)], MOVE_DTYPE)
    return index


def sections_of(data: bytes) -> list[tuple[str, bytes]]:
    """(name, payload) of each section of a well-formed file."""
    count = HEADER.unpack_from(data)[-1]
    out = []
    for i in range(count):
        raw, offset, length, _crc = SECTION.unpack_from(data, HEADER.size + i * SECTION.size)
        out.append((raw.rstrip(b"\0").decode(), data[offset:offset + length]))
    return out


def lay_out(version: int, params: tuple[int, ...], sections: list[tuple[str, bytes]]) -> bytes:
    """A snapshot file from its parts, as the format says (a writer of crafted files)."""
    body, table, offset = b"", b"", PAGE
    starts = []
    for _name, payload in sections:
        starts.append(offset)
        offset = (offset + len(payload) + PAGE - 1) // PAGE * PAGE
    for i, (name, payload) in enumerate(sections):
        end = starts[i + 1] if i + 1 < len(sections) else offset
        padded = payload + bytes(end - starts[i] - len(payload))
        table += SECTION.pack(name.encode(), starts[i], len(payload), zlib.crc32(padded))
        body += padded
    header = bytearray(PAGE)
    HEADER.pack_into(header, 0, MAGIC, version, 0, offset, *params, len(sections))
    header[HEADER.size:HEADER.size + len(table)] = table
    struct.pack_into("<I", header, 12, zlib.crc32(header))
    return bytes(header) + body


def fix_checksums(data: bytearray, fix_size: bool) -> None:
    """Make every CRC right again as the (maybe damaged) table reads, where it can be read."""
    if len(data) < PAGE or data[:8] != MAGIC:
        return
    if fix_size:
        struct.pack_into("<Q", data, 16, len(data))
    count = min(HEADER.unpack_from(data)[-1], (PAGE - HEADER.size) // SECTION.size)
    spans = []
    for i in range(count):
        at = HEADER.size + i * SECTION.size
        _raw, offset, _length, _crc = SECTION.unpack_from(data, at)
        spans.append((at, offset))
    for i, (at, offset) in enumerate(spans):
        end = spans[i + 1][1] if i + 1 < len(spans) else len(data)
        if offset <= end <= len(data):
            struct.pack_into("<I", data, at + 32, zlib.crc32(data[offset:end]))
    struct.pack_into("<I", data, 12, 0)
    struct.pack_into("<I", data, 12, zlib.crc32(data[:PAGE]))


WORKDIR = Path(tempfile.mkdtemp(prefix="anning-fuzz-snapshot-",
                                dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
PATH = WORKDIR / "index.anx"
write_snapshot(build_base(), PATH)
BASE_V2 = PATH.read_bytes()
_PARAMS = HEADER.unpack_from(BASE_V2)[4:8]
BASE_V1 = lay_out(1, _PARAMS, [(n, p) for n, p in sections_of(BASE_V2) if n in V1_NAMES])
BASES = (BASE_V2, BASE_V1)
INTERESTING = (0, 1, 2, 7, 8, 0xFF, 0x1000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               0xFFFFFFFFFFFFFFFF, 1 << 32, 1 << 63)
META_VALUES = (None, -1, 0, 2**64, 1e308, float("nan"), "x", "", [], {}, ["*"], ["*", "*"],
               [[]], {"a": 1}, True, ["marketing"] * 9, ["Marketing"], "*" * 300)


def edit_meta(data: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    """The base with one key of its meta JSON dropped or set to something odd."""
    version = HEADER.unpack_from(data)[1]
    parts = sections_of(data)
    meta = json.loads(parts[-1][1])
    keys = [*sorted(meta), "scopes", "senders", "categories"]
    key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
    how = fdp.ConsumeIntInRange(0, 3)
    if how == 0:
        meta.pop(key, None)
    elif how == 1:
        meta[key] = META_VALUES[fdp.ConsumeIntInRange(0, len(META_VALUES) - 1)]
    elif how == 2 and isinstance(meta.get(key), list) and meta[key]:
        items = meta[key]
        at = fdp.ConsumeIntInRange(0, len(items) - 1)
        items[at] = fdp.ConsumeUnicodeNoSurrogates(8) if fdp.ConsumeBool() else items[-1]
    else:
        meta[key] = fdp.ConsumeUnicodeNoSurrogates(16)
    raw = json.dumps(meta, ensure_ascii=False).encode()
    if fdp.ConsumeBool():
        raw = raw[:fdp.ConsumeIntInRange(0, len(raw))]
    params = HEADER.unpack_from(data)[4:8]
    return lay_out(version, params, [*parts[:-1], ("meta", raw)])


def damaged(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, bool]:
    data = BASES[fdp.ConsumeIntInRange(0, 1)]
    crafted = fdp.ConsumeIntInRange(0, 3) == 3
    if crafted:  # laid out anew: its checksums are right
        data = edit_meta(data, fdp)
    out = bytearray(data)
    count = HEADER.unpack_from(out)[-1]
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        where = fdp.ConsumeIntInRange(0, 2)
        if where == 0:  # header fields and the section table
            at = fdp.ConsumeIntInRange(0, HEADER.size + count * SECTION.size - 1)
        elif where == 1:  # a section's payload
            _raw, offset, length, _crc = SECTION.unpack_from(
                out, HEADER.size + fdp.ConsumeIntInRange(0, count - 1) * SECTION.size)
            at = offset + fdp.ConsumeIntInRange(0, max(length - 1, 0))
        else:
            at = fdp.ConsumeIntInRange(0, len(out) - 1)
        at = min(at, len(out) - 1)
        how = fdp.ConsumeIntInRange(0, 3)
        if how == 0:
            out[at] ^= fdp.ConsumeIntInRange(1, 255)
        elif how in (1, 2):
            size = 4 if how == 1 else 8
            value = INTERESTING[fdp.ConsumeIntInRange(0, len(INTERESTING) - 1)]
            value = (value + fdp.ConsumeIntInRange(-2, 2)) % (1 << (8 * size))
            chunk = value.to_bytes(size, "little")
            out[at:at + size] = chunk[:len(out) - at]
        else:
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
            out[at:at + len(chunk)] = chunk
    size_change = fdp.ConsumeIntInRange(0, 5)
    if size_change == 1:
        del out[fdp.ConsumeIntInRange(0, len(out)):]
    elif size_change == 2:
        out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    elif size_change == 3:
        out += bytes(PAGE)
    fix = fdp.ConsumeIntInRange(0, 2)  # 0 none, 1 checksums, 2 checksums and the size
    if fix:
        fix_checksums(out, fix == 2)
    return bytes(out), fix or crafted


def probe(index: SuppressionIndex, exact: bool) -> None:
    """Checks over the loaded index; `exact`: the answers are the source rows'."""
    for category in CATEGORIES:
        for sender in PROBE_SENDERS:
            for number in PROBE_NUMBERS:
                got = index.check(sender, number, category)
                expect(isinstance(got, Scope), f"check answered {got!r}")
                if exact:
                    want = reference(sender, number, category)
                    expect(got is want, f"check({sender!r}, {number}, {category}): {got!r}, "
                                        f"the rows say {want!r}")
            batch = index.check_batch([sender] * len(PROBE_NUMBERS), PROBE_NUMBERS, category)
            expect([Scope(int(c)) for c in batch] ==
                   [index.check(sender, n, category) for n in PROBE_NUMBERS],
                   f"check_batch of {sender!r} differs from check")
    numbers, scopes, masks = index.entries()
    expect(len(numbers) == len(scopes) == len(masks) == len(index), "entries: lengths")
    if exact:
        want = {}
        for n, s, cats in ROWS:
            want[(n, s)] = want.get((n, s), 0) | sum(1 << CATEGORIES.index(c) for c in cats)
        got = {(int(n), index.scopes[int(s)]): int(m)
               for n, s, m in zip(numbers, scopes, masks, strict=True)}
        expect(got == want, f"entries {got}, the rows {want}")
        index.verify()
        return
    ids = np.append(np.arange(len(index.senders), dtype=np.uint32),
                    np.uint32(0xFFFFFFFF))  # and UNKNOWN_SENDER
    for number in PROBE_NUMBERS:
        codes = index.check_ids(ids, np.full(len(ids), number, np.uint64))
        expect(bool(np.all(codes <= 3)), f"check_ids answered {codes}")
    if len(numbers):
        kinds, _times = index.statements_of(numbers[:4], scopes[:4],
                                            np.zeros(min(4, len(numbers)), np.uint8))
        expect(bool(np.all(kinds <= 2)), f"statements answered kinds {kinds}")
    with contextlib.suppress(InvariantError):
        index.verify()  # a crafted file whose checksums hold: served as it says, safely


def test_one_input(raw: bytes) -> None:
    if raw.startswith(MAGIC):
        remade = bytearray(raw)
        fix_checksums(remade, True)
        # as it is, then with its checksums made right: both maybe crafted, neither the base
        candidates = [(raw, True), (bytes(remade), True)]
    else:
        candidates = [damaged(atheris.FuzzedDataProvider(raw))]
    for data, fixed in candidates:
        PATH.write_bytes(data)
        try:
            summary = snapshot_summary(PATH)
        except CorruptSnapshot as exc:
            expect(exc.path == PATH, f"CorruptSnapshot names {exc.path}, not the file")
            summary = None
        try:
            index = read_snapshot(PATH)
        except CorruptSnapshot as exc:
            expect(exc.path == PATH, f"CorruptSnapshot names {exc.path}, not the file")
            continue
        expect(summary is not None, "read_snapshot took a file snapshot_summary refused")
        if not fixed:
            expect(data in BASES, "a file that is not the base loaded without its checksums "
                                  "made right: some byte is not checked")
        directory = np.asarray(index.arrays().directory, np.int64)
        expect(bool(np.all(np.diff(directory) >= 0)) and int(directory[-1]) == len(index),
               "a loaded directory is not monotone within the entries: lookups read outside")
        probe(index, exact=data in BASES)
        del index


if __name__ == "__main__":
    _harness.run(test_one_input)

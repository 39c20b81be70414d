"""Fuzz target: the events checkpoint reader (anning.storage.checkpoint.read_checkpoint), over
damaged, truncated and crafted files.

Start-up reads the checkpoint before anything else; a bad one must stop it with the file named,
never with another exception, and never serve what it cannot trust. The bases are real
checkpoints made here by the package's own writer: a few events with their meta in the header,
and the same with many long scope names, whose meta moves past the columns. An input is either
a whole file (it starts with the magic; the committed corpus holds the real ones) or a program
of damage to a base: bytes flipped or set in the header, the meta or a column, a key of the
meta dropped or set to something odd, the file cut or extended, and then maybe every checksum
made right again. Properties, per input:
- read_checkpoint returns a Checkpoint or raises CorruptCheckpoint naming the file; nothing
  else;
- every byte is checked: without the checksums made right, a file that loads is the base itself
  and gives back exactly what was written;
- what loads from a crafted file is safe to use: columns of one length, sequences increasing,
  scopes, kinds and sources in range, so that its events and after() work.
Run: python fuzz/fuzz_checkpoint.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import numpy as np

    from anning.errors import CorruptCheckpoint
    from anning.model.events import Event, EventColumns
    from anning.model.scopes import SOURCES
    from anning.storage.checkpoint import (
        MAGIC,
        Checkpoint,
        read_checkpoint,
        write_checkpoint,
    )

PAGE = 4096
HEADER = struct.Struct("<8sIII")
T0 = 1_790_000_000_000


def base_checkpoint(scopes: int) -> Checkpoint:
    names = ["京东", "entity:京东集团", "*"] + [f"sender-{i:03d}-" + "x" * 60
                                            for i in range(scopes)]
    events = [Event(8613812345678 + i, names[i % len(names)] if i % 5 != 4 else "",
                    0 if i % 5 == 4 else 1 + i % 3, 3 if i % 5 == 4 else 1 + i % 2,
                    T0 + i * 1000, SOURCES[1 + i % 5], 101 + i)
              for i in range(max(12, scopes))]
    return Checkpoint(EventColumns.from_events(events), covers=7, last_sequence=100 + len(events),
                      watermark=100, origin="nats:anning:2026")


WORKDIR = Path(tempfile.mkdtemp(prefix="anning-fuzz-checkpoint-",
                                dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
PATH = WORKDIR / "events.ckpt"
WRITTEN = (base_checkpoint(0), base_checkpoint(80))
BASES = []
for _checkpoint in WRITTEN:
    write_checkpoint(PATH, _checkpoint)
    BASES.append(PATH.read_bytes())
ODD = (None, -1, 0, 1, 2**64, 1e308, float("nan"), float("inf"), "x", "", [], {}, [0, 0, 0],
       [4096, 8, 0], [2**40, 8, 0], [-4096, 8, 0], ["a"], True, {"rows": 1})


def meta_of(data: bytes) -> tuple[dict[str, Any], int | None]:
    """The meta and, when it lies past the columns, where its block starts."""
    length = HEADER.unpack_from(data)[3]
    meta = json.loads(data[HEADER.size:HEADER.size + length])
    if "meta_at" in meta:
        at = meta["meta_at"]
        return json.loads(data[at:at + meta["meta_length"]]), at
    return meta, None


def with_meta(data: bytes, meta: dict[str, Any], at: int | None) -> bytes:
    """The file with another meta, its header (and the meta block's) CRC right."""
    raw = json.dumps(meta, ensure_ascii=False).encode()
    out = bytearray(data)
    if at is not None:
        del out[at:]
        out += raw
        raw = json.dumps({"meta_at": at, "meta_length": len(raw),
                          "meta_crc": zlib.crc32(raw)}).encode()
    raw = raw[:PAGE - HEADER.size]
    out[HEADER.size:PAGE] = raw + bytes(PAGE - HEADER.size - len(raw))
    struct.pack_into("<I", out, 8 + 8, len(raw))
    fix_checksums(out, columns=False)
    return bytes(out)


def fix_checksums(data: bytearray, columns: bool) -> None:
    """Make the CRCs right as the (maybe damaged) meta says, where it can be read."""
    if len(data) < PAGE:
        return
    if columns:
        try:
            meta, at = meta_of(bytes(data))
            meta["columns"] = {**meta["columns"]}
            for name, (offset, length, _crc) in meta["columns"].items():
                padded = data[offset:offset + (length + PAGE - 1) // PAGE * PAGE]
                meta["columns"][name] = [offset, length, zlib.crc32(padded)]
            data[:] = with_meta(bytes(data), meta, at)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError,
                RecursionError):
            pass  # a table beyond repair: the header's CRC alone, below
    struct.pack_into("<I", data, 12, 0)
    struct.pack_into("<I", data, 12, zlib.crc32(data[:PAGE]))


def damaged(fdp: atheris.FuzzedDataProvider) -> tuple[bytes, bool]:
    data = BASES[fdp.ConsumeIntInRange(0, len(BASES) - 1)]
    crafted = fdp.ConsumeIntInRange(0, 3) == 3
    if crafted:
        meta, at = meta_of(data)
        keys = sorted(meta) + sorted(f"columns.{c}" for c in meta["columns"])
        key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
        holder = meta["columns"] if key.startswith("columns.") else meta
        key = key.removeprefix("columns.")
        if fdp.ConsumeBool():
            holder.pop(key, None)
        else:
            holder[key] = ODD[fdp.ConsumeIntInRange(0, len(ODD) - 1)]
        data = with_meta(data, meta, at)
    out = bytearray(data)
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        region = fdp.ConsumeIntInRange(0, 2)
        limit = (HEADER.size + 200) if region == 0 else len(out)
        at = min(fdp.ConsumeIntInRange(0, limit - 1), len(out) - 1)
        if fdp.ConsumeBool():
            out[at] ^= fdp.ConsumeIntInRange(1, 255)
        else:
            chunk = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))
            out[at:at + len(chunk)] = chunk
    size_change = fdp.ConsumeIntInRange(0, 4)
    if size_change == 1:
        del out[fdp.ConsumeIntInRange(0, len(out)):]
    elif size_change == 2:
        out += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    fix = fdp.ConsumeIntInRange(0, 2)  # 0 none, 1 header CRC, 2 every CRC
    if fix:
        fix_checksums(out, columns=fix == 2)
    return bytes(out), bool(fix) or crafted


def same(a: Checkpoint, b: Checkpoint) -> bool:
    return (a.covers, a.last_sequence, a.watermark, a.origin, a.events.scopes) == \
        (b.covers, b.last_sequence, b.watermark, b.origin, b.events.scopes) and all(
            np.array_equal(a.events.columns[n], b.events.columns[n]) for n, _ in
            EventColumns.FIELDS)


def usable(checkpoint: Checkpoint) -> None:
    events = checkpoint.events
    lengths = {name: len(events.columns[name]) for name, _ in EventColumns.FIELDS}
    expect(len(set(lengths.values())) == 1, f"columns of different lengths: {lengths}")
    q = events.sequence
    expect(bool(np.all(q[1:] > q[:-1])), "sequences not increasing")
    for event in events.events():
        expect(event.kind in (1, 2, 3), f"an event of kind {event.kind}")
        expect(event.source in SOURCES, f"an event of source {event.source!r}")
    if len(events):
        events.after(int(q[len(q) // 2]))
    expect(all(isinstance(v, int) for v in (checkpoint.covers, checkpoint.last_sequence,
                                            checkpoint.watermark)), "counts not integers")


def test_one_input(raw: bytes) -> None:
    if raw.startswith(MAGIC):
        remade = bytearray(raw)
        fix_checksums(remade, columns=True)
        candidates = [(raw, True), (bytes(remade), True)]
    else:
        candidates = [damaged(atheris.FuzzedDataProvider(raw))]
    for data, crafted in candidates:
        PATH.write_bytes(data)
        try:
            checkpoint = read_checkpoint(PATH)
        except CorruptCheckpoint as exc:
            expect(exc.path == PATH, f"CorruptCheckpoint names {exc.path}, not the file")
            continue
        if not crafted:
            expect(data in BASES, "a damaged file loaded without its checksums made right")
        if data in BASES:
            expect(same(checkpoint, WRITTEN[BASES.index(data)]), "not what was written")
        usable(checkpoint)


if __name__ == "__main__":
    _harness.run(test_one_input)

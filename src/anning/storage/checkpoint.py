"""The events checkpoint: sealed segments of the write log folded into one file, so that they can
be retired.

It keeps every event as taken (not only the latest per key): anning is the system of record for
its events until upstream has them (SPEC §4), so the checkpoint holds each event with a sequence
past the serving snapshot's watermark, for the change feed and for the next load to fold in.

Layout (little-endian): a 4096-byte header (magic, format version, header CRC, the length of a
JSON meta block that follows in the header: rows, the last log segment folded in, the last
sequence held, the watermark, whose sequences they are (the origin: "" for the local write log,
"nats:STREAM:CREATED" for a replica of a JetStream stream; absent in files written before it
was, which are the local log's), the scope names, and per column its offset, length and CRC-32),
then the columns of the events (anning.model.events.EventColumns), each at a 4096-byte boundary.
Every byte is checked before any is used; the file is written whole through FileIO's atomic
replace, and mapped read-only to load.

Version 1 (earlier) held only the latest event per key, without sequences: read, its events
are given sequences 1..n in the order of their times.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from anning.errors import CorruptCheckpoint
from anning.model.events import OPT_OUT, REASSIGN, REASSIGN_SCOPE, EventColumns
from anning.model.scopes import SOURCES
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import sweep_temporaries

__all__ = ["Checkpoint", "read_checkpoint", "write_checkpoint"]

MAGIC = b"ANNINGEV"
FORMAT_VERSION = 2
PAGE = 4096
_HEADER = struct.Struct("<8sIII")  # magic, version, header CRC, meta length
_CRC_OFFSET = 12
_V1_COLUMNS = (("number", np.uint64), ("at", np.int64), ("scope", np.uint32),
               ("bit", np.uint8), ("kind", np.uint8), ("source", np.uint8))


@dataclass(frozen=True)
class Checkpoint:
    events: EventColumns  # sequence order
    covers: int  # the last log segment folded in (0: none)
    last_sequence: int  # of the last event folded in (0: none ever)
    watermark: int  # events up to this sequence were left out (upstream has them)
    origin: str = ""  # whose sequences: "" the local write log, "nats:STREAM:created" a stream

    @classmethod
    def empty(cls) -> Checkpoint:
        return cls(EventColumns.empty(), 0, 0, 0)


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def write_checkpoint(path: str | PathLike[str], checkpoint: Checkpoint,
                     io: FileIO = OS_IO) -> None:
    events = checkpoint.events
    sweep_temporaries(os.path.dirname(os.fspath(path)) or ".")  # a killed writer's leftovers
    chunks: list[bytes] = []
    columns = {}
    offset = PAGE
    for name, dtype in EventColumns.FIELDS:
        data = np.ascontiguousarray(events.columns[name], dtype).tobytes()
        padded = data + bytes(_align(len(data)) - len(data))
        columns[name] = [offset, len(data), zlib.crc32(padded)]
        chunks.append(padded)
        offset += len(padded)
    meta = json.dumps({"rows": len(events), "covers": checkpoint.covers,
                       "last_sequence": checkpoint.last_sequence,
                       "watermark": checkpoint.watermark, "origin": checkpoint.origin,
                       "scopes": events.scopes,
                       "columns": columns, "size": offset}, ensure_ascii=False).encode()
    if _HEADER.size + len(meta) > PAGE:
        # many scope names: the meta block moves past the columns, the header points at it
        meta_at = offset
        chunks.append(meta)
        header_meta = json.dumps({"meta_at": meta_at, "meta_length": len(meta),
                                  "meta_crc": zlib.crc32(meta)}).encode()
    else:
        header_meta = meta
    header = bytearray(PAGE)
    _HEADER.pack_into(header, 0, MAGIC, FORMAT_VERSION, 0, len(header_meta))
    header[_HEADER.size:_HEADER.size + len(header_meta)] = header_meta
    struct.pack_into("<I", header, _CRC_OFFSET, zlib.crc32(header))
    io.replace_file(path, [bytes(header), *chunks])


def read_checkpoint(path: str | PathLike[str]) -> Checkpoint:
    """Map and check a checkpoint; CorruptCheckpoint names the file and what is wrong."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < PAGE:
                raise CorruptCheckpoint(path, f"{size} bytes, shorter than a checkpoint header")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise CorruptCheckpoint(path, f"cannot be read: {exc.strerror or exc}") from exc
    try:
        return _read_mapped(path, mm, size)
    except (ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser goes (a crafted header)
        raise CorruptCheckpoint(path, f"inconsistent contents: {exc!r}") from None


def _read_mapped(path: Path, mm: mmap.mmap, size: int) -> Checkpoint:
    header = bytearray(mm[:PAGE])
    magic, version, crc, meta_length = _HEADER.unpack_from(header)
    if magic != MAGIC:
        raise CorruptCheckpoint(path, f"not an anning events checkpoint (magic {magic!r})")
    if version not in (1, FORMAT_VERSION):
        raise CorruptCheckpoint(path, f"checkpoint format {version}, this build reads 1 and "
                                f"{FORMAT_VERSION}")
    struct.pack_into("<I", header, _CRC_OFFSET, 0)
    if zlib.crc32(header) != crc or meta_length > PAGE - _HEADER.size:
        raise CorruptCheckpoint(path, "checkpoint header checksum mismatch")
    meta: dict[str, Any] = json.loads(bytes(header[_HEADER.size:_HEADER.size + meta_length]))
    after_columns = 0  # the meta block, when it follows the columns
    if "meta_at" in meta:
        at, length = meta["meta_at"], meta["meta_length"]
        block = mm[at:at + length]
        if len(block) != length or zlib.crc32(block) != meta["meta_crc"]:
            raise CorruptCheckpoint(path, f"checkpoint meta block at offset {at} is damaged")
        meta = json.loads(block)
        after_columns = length
    if meta["size"] > size:
        raise CorruptCheckpoint(path, f"truncated ({size} bytes of {meta['size']})")
    if version == FORMAT_VERSION and size != meta["size"] + after_columns:
        # bytes no checksum covers (a copy or an append gone wrong): the file is not as written
        raise CorruptCheckpoint(path, f"extended: {size} bytes, written as "
                                f"{meta['size'] + after_columns}")
    fields = EventColumns.FIELDS if version == FORMAT_VERSION else _V1_COLUMNS
    columns = {}
    for name, dtype in fields:
        offset, length, column_crc = meta["columns"][name]
        padded = memoryview(mm)[offset:offset + _align(length)]
        if zlib.crc32(padded) != column_crc:
            raise CorruptCheckpoint(path, f"checkpoint column {name!r} at offset {offset} "
                                    "fails its checksum")
        column = np.frombuffer(mm, dtype, length // np.dtype(dtype).itemsize, offset)
        if len(column) != meta["rows"]:
            raise CorruptCheckpoint(path, f"column {name!r} has {len(column)} rows of "
                                    f"{meta['rows']}")
        columns[name] = column
    scopes = [str(s) for s in meta["scopes"]]
    if version == 1:
        return _from_version_1(columns, scopes, _count(meta, "covers"))
    events = EventColumns(columns, scopes)
    _check(path, events)
    return Checkpoint(events, _count(meta, "covers"), _count(meta, "last_sequence"),
                      _count(meta, "watermark"), str(meta.get("origin", "")))


def _count(meta: dict[str, Any], key: str) -> int:
    """A segment number or a sequence of the meta: int() took 1.5 and failed on Infinity
    with OverflowError, which start-up did not expect."""
    value = meta[key]
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise ValueError(f"{key}: {value!r} is not a count")
    return value


def _check(path: Path, events: EventColumns) -> None:
    """The lookups search the sequence column and index the scopes: sorted, in range."""
    q = events.sequence
    if len(q) > 1 and bool(np.any(q[1:] <= q[:-1])):
        raise CorruptCheckpoint(path, "checkpoint events are not in sequence order")
    scope, kind = events.columns["scope"], events.columns["kind"]
    reassign = kind == REASSIGN
    real = scope[~reassign]
    if len(real) and int(real.max()) >= len(events.scopes):
        raise CorruptCheckpoint(path, f"an event names scope {int(real.max())} of "
                                f"{len(events.scopes)}")
    # what events() and the tables index with: a crafted file failed there, IndexError
    if bool(np.any(scope[reassign] != REASSIGN_SCOPE)):
        raise CorruptCheckpoint(path, "a reassignment names a scope")
    if bool(np.any((kind < OPT_OUT) | (kind > REASSIGN))):
        raise CorruptCheckpoint(path, f"an event of kind {int(kind.max())}")
    if len(kind) and int(events.columns["source"].max()) >= len(SOURCES):
        raise CorruptCheckpoint(path, f"an event of source "
                                f"{int(events.columns['source'].max())}")


def _from_version_1(columns: dict[str, np.ndarray], scopes: list[str],
                    covers: int) -> Checkpoint:
    """A checkpoint of an earlier version: its latest event per key, as events in time order
    with sequences 1..n."""
    order = np.argsort(columns["at"], kind="stable")
    n = len(order)
    kind = columns["kind"][order]
    mask = np.where(kind == REASSIGN, 0, np.left_shift(1, columns["bit"][order])).astype(np.uint8)
    events = EventColumns({
        "sequence": np.arange(1, n + 1, dtype=np.uint64), "number": columns["number"][order],
        "at": columns["at"][order], "scope": columns["scope"][order], "mask": mask,
        "kind": kind, "source": columns["source"][order]}, scopes)
    return Checkpoint(events, covers, n, 0)

"""The events checkpoint: the write log folded into one binary file, so the log can be retired.

Layout (little-endian): a 4096-byte header (magic, format version, header CRC, the length of a
JSON meta block that follows in the header: rows, the last log segment folded in, the scope
names, and per column its offset, length and CRC-32), then the columns of an EventTable, each
at a 4096-byte boundary. Every byte is checked before any is used; the file is written whole
through a temporary file, fsync, rename and directory fsync, and mapped read-only to load.
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

import numpy as np

from anning.errors import CorruptCheckpoint
from anning.model.events import COLUMNS, EventTable
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import sweep_temporaries

__all__ = ["Checkpoint", "read_checkpoint", "write_checkpoint"]

MAGIC = b"ANNINGEV"
FORMAT_VERSION = 1
PAGE = 4096
_HEADER = struct.Struct("<8sIII")  # magic, version, header CRC, meta length
_CRC_OFFSET = 12


@dataclass(frozen=True)
class Checkpoint:
    table: EventTable
    covers: int  # the last log segment folded in (0: none)
    as_of_ms: int  # events not later than this were left out (the snapshot's as_of then)


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def write_checkpoint(path: str | PathLike[str], checkpoint: Checkpoint,
                     io: FileIO = OS_IO) -> None:
    table = checkpoint.table
    sweep_temporaries(os.path.dirname(os.fspath(path)) or ".")  # a killed writer's leftovers
    chunks: list[bytes] = []
    columns = {}
    offset = PAGE
    for name, dtype in COLUMNS:
        data = np.ascontiguousarray(table.columns[name], dtype).tobytes()
        padded = data + bytes(_align(len(data)) - len(data))
        columns[name] = [offset, len(data), zlib.crc32(padded)]
        chunks.append(padded)
        offset += len(padded)
    meta = json.dumps({"rows": len(table), "covers": checkpoint.covers,
                       "as_of_ms": checkpoint.as_of_ms, "scopes": table.scopes,
                       "columns": columns, "size": offset}, ensure_ascii=False).encode()
    if _HEADER.size + len(meta) > PAGE:
        # many scope names: the meta block moves past the columns, the header points at it
        meta_at = offset
        chunks.append(meta)
        pointer = json.dumps({"meta_at": meta_at, "meta_length": len(meta),
                              "meta_crc": zlib.crc32(meta)}).encode()
        header_meta = pointer
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
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < PAGE:
            raise CorruptCheckpoint(path, f"{size} bytes, shorter than a checkpoint header")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    header = bytearray(mm[:PAGE])
    magic, version, crc, meta_length = _HEADER.unpack_from(header)
    if magic != MAGIC:
        raise CorruptCheckpoint(path, f"not an anning events checkpoint (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise CorruptCheckpoint(path, f"checkpoint format {version}, this build reads "
                              f"{FORMAT_VERSION}")
    struct.pack_into("<I", header, _CRC_OFFSET, 0)
    if zlib.crc32(header) != crc or meta_length > PAGE - _HEADER.size:
        raise CorruptCheckpoint(path, "checkpoint header checksum mismatch")
    meta = json.loads(bytes(header[_HEADER.size:_HEADER.size + meta_length]))
    if "meta_at" in meta:
        at, length = meta["meta_at"], meta["meta_length"]
        block = mm[at:at + length]
        if len(block) != length or zlib.crc32(block) != meta["meta_crc"]:
            raise CorruptCheckpoint(path, f"checkpoint meta block at offset {at} is damaged")
        meta = json.loads(block)
    if meta["size"] > size:
        raise CorruptCheckpoint(path, f"truncated ({size} bytes of {meta['size']})")
    columns = {}
    for name, dtype in COLUMNS:
        offset, length, crc = meta["columns"][name]
        padded = memoryview(mm)[offset:offset + _align(length)]
        if zlib.crc32(padded) != crc:
            raise CorruptCheckpoint(path, f"checkpoint column {name!r} at offset {offset} "
                                  "fails its checksum")
        column = np.frombuffer(mm, dtype, length // np.dtype(dtype).itemsize, offset)
        if len(column) != meta["rows"]:
            raise CorruptCheckpoint(path, f"column {name!r} has {len(column)} rows of "
                                  f"{meta['rows']}")
        columns[name] = column
    table = EventTable(columns, list(meta["scopes"]))
    _check_sorted(path, table)
    return Checkpoint(table, int(meta["covers"]), int(meta["as_of_ms"]))


def _check_sorted(path: Path, table: EventTable) -> None:
    """The lookups search the number column: it must be sorted, scope ids in range."""
    n = table.number
    if len(n) > 1 and bool(np.any(n[1:] < n[:-1])):
        raise CorruptCheckpoint(path, "checkpoint rows are not sorted by number")
    scope = table.columns["scope"]
    real = scope[scope != 0xFFFFFFFF]
    if len(real) and int(real.max()) >= len(table.scopes):
        raise CorruptCheckpoint(path, f"a checkpoint row names scope {int(real.max())} of "
                              f"{len(table.scopes)}")

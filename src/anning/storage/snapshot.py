"""The binary snapshot: an index laid out to be memory-mapped, versioned and checksummed.

Layout (little-endian):
  [0, 4096)   header: magic, format version, file size, index parameters, a table of sections
              (name, offset, length, CRC-32) and the CRC-32 of the header itself.
  sections    each at a 4096-byte boundary, in this order: directory (uint32), words (uint64),
              bloom (uint64), sender_scope (uint32), sender_entity (uint32), meta (UTF-8 JSON:
              categories, scopes, senders, as_of ...). A section's CRC covers its bytes and the
              zero padding up to the next section (or the end), so every byte of the file is
              checked before any of it is served.

Loading maps the file read-only (pages shared between processes) and never parses entries. The
checksums are computed over what pread() reads, not through the mapping: a section is resident
in the process only once a check touches it (the statements' times may never be), and the two
that are copied onto huge pages (anning.index.hugepages) are read straight into their copies,
so that no second, file-backed copy of them stays resident beside the first.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from anning.errors import CorruptSnapshot, InvalidInput
from anning.index import IndexArrays, ScopeTable, SuppressionIndex, hugepages
from anning.index.statements import KEY_DTYPE, MOVE_DTYPE, RowStatements
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import sweep_temporaries

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "SnapshotSummary",
    "read_snapshot",
    "snapshot_summary",
    "write_snapshot",
]

MAGIC = b"ANNINGIX"
FORMAT_VERSION = 2
PAGE = 4096
HEADER_SIZE = PAGE
# magic, version, header crc, file size, entries, remainder bits, scope bits, bloom k, sections
_HEADER = struct.Struct("<8sIIQQIIII")
_SECTION = struct.Struct("<16sQQI4x")
_SECTIONS_V1 = (
    ("directory", np.uint32),
    ("words", np.uint64),
    ("bloom", np.uint64),
    ("sender_scope", np.uint32),
    ("sender_entity", np.uint32),
    ("meta", np.uint8),
)
# version 2: when the list's statements were made (anning.index.statements), before the meta
_SECTIONS = (*_SECTIONS_V1[:5], ("times", np.int64), ("bit_times", np.uint8),
             ("tombstones", np.uint8), ("reassigned", np.uint8), _SECTIONS_V1[5])
_LAYOUTS = {1: _SECTIONS_V1, 2: _SECTIONS}
_CRC_OFFSET = 12  # the header CRC field, zero while the CRC is computed


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def _bytes_of(array: np.ndarray) -> memoryview:
    return np.ascontiguousarray(array).view(np.uint8).data


def write_snapshot(index: SuppressionIndex, path: str | PathLike[str],
                   io: FileIO = OS_IO) -> None:
    """Write `index` to `path` whole and atomically (FileIO.replace_file: a temporary file,
    fsync, rename, directory fsync)."""
    path = Path(path)
    arrays = index.arrays()
    meta = {
        **index.meta,
        "categories": list(index.categories),
        "scopes": index.scopes,
        "senders": index.senders,
        "written_at": time.time(),
    }
    meta.pop("path", None)  # where a loaded copy was mapped from: not part of the list
    statements = index.statements
    times = statements.times if statements.times is not None else np.empty(0, np.int64)
    payloads: list[memoryview] = [
        *(_bytes_of(a) for a in (arrays.directory, arrays.words, arrays.bloom,
                                 arrays.sender_scope, arrays.sender_entity, times,
                                 statements.bit_times, statements.tombstones,
                                 statements.reassigned)),
        memoryview(json.dumps(meta, ensure_ascii=False).encode()),
    ]
    offsets, offset = [], HEADER_SIZE
    for payload in payloads:
        offsets.append(offset)
        offset = _align(offset + len(payload))
    file_size = offset
    table = b""
    chunks: list[bytes | memoryview] = []
    for i, payload in enumerate(payloads):
        end = offsets[i + 1] if i + 1 < len(payloads) else file_size
        padding = bytes(end - offsets[i] - len(payload))
        table += _SECTION.pack(_SECTIONS[i][0].encode(), offsets[i], len(payload),
                               zlib.crc32(padding, zlib.crc32(payload)))
        chunks += [payload, padding]
    header = bytearray(HEADER_SIZE)
    _HEADER.pack_into(
        header, 0, MAGIC, FORMAT_VERSION, 0, file_size, len(index), arrays.remainder_bits,
        arrays.scope_bits, arrays.bloom_k, len(payloads),
    )
    header[_HEADER.size : _HEADER.size + len(table)] = table
    struct.pack_into("<I", header, _CRC_OFFSET, zlib.crc32(header))
    sweep_temporaries(path.parent)  # a load killed mid-way left one as big as an index
    io.replace_file(path, [header, *chunks])


@dataclass(frozen=True)
class SnapshotSummary:
    """What a snapshot's header and meta section say, its body unread."""

    entries: int
    meta: dict[str, Any]

    @property
    def as_of_ms(self) -> int:
        return int(self.meta.get("as_of_ms", 0))

    @property
    def events_through(self) -> int:
        """The watermark: upstream had taken in every anning event up to this sequence."""
        return int(self.meta.get("events_through", 0))

    @property
    def folded_through(self) -> int:
        """The last anning event whose outcome this snapshot holds."""
        return int(self.meta.get("folded_through", 0))


def snapshot_summary(path: str | PathLike[str]) -> SnapshotSummary:
    """The entry count and meta of a snapshot, reading only its header and meta section (both
    checked): for tools that need no list, only facts about it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = bytearray(f.read(HEADER_SIZE))
            if len(header) < HEADER_SIZE:
                raise CorruptSnapshot(path, f"truncated: {len(header)} bytes, a header is "
                                      f"{HEADER_SIZE}")
            magic, version, crc, file_size, entries, *_rest, count = \
                _HEADER.unpack_from(header, 0)
            _check_header(path, header, magic, version, crc, file_size, size, count)
            _raw, offset, length, section_crc = _SECTION.unpack_from(
                header, _HEADER.size + (count - 1) * _SECTION.size)
            # the header's CRC held, but its table may still point anywhere (a crafted file):
            # a read from past the end was a ValueError, not CorruptSnapshot
            if not HEADER_SIZE <= offset <= size:
                raise CorruptSnapshot(path, f"section meta at byte {offset}, outside the file "
                                      f"of {size} bytes")
            f.seek(offset)
            block = f.read(size - offset)
    except OSError as exc:
        raise CorruptSnapshot(path, f"cannot be read: {exc.strerror or exc}") from exc
    if zlib.crc32(block) != section_crc or length > len(block):
        raise CorruptSnapshot(path, "section meta checksum mismatch")
    try:
        meta = json.loads(block[:length])
    except (ValueError, RecursionError) as exc:
        raise CorruptSnapshot(path, f"meta section is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise CorruptSnapshot(path, "meta section is not a JSON object")
    return SnapshotSummary(entries, meta)


def read_snapshot(path: str | PathLike[str]) -> SuppressionIndex:
    """Map and check a binary snapshot; raise CorruptSnapshot naming the file and the fault."""
    path = Path(path)
    mm: mmap.mmap | None = None
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < HEADER_SIZE:
                raise CorruptSnapshot(path, f"truncated: {size} bytes, a header is {HEADER_SIZE}")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                return _read_mapped(path, f.fileno(), mm, size)
            except CorruptSnapshot as exc:
                # Drop the frames (and the array views into the map they hold), then unmap.
                error = exc.with_traceback(None)
    except OSError as exc:
        error = CorruptSnapshot(path, f"cannot be read: {exc.strerror or exc}")
        error.__cause__ = exc
    if mm is not None:
        with contextlib.suppress(BufferError):  # else the map goes with its last reference
            mm.close()
    raise error


# The parts every check probes at random, off the file's small pages onto huge ones (see
# anning.hugepages): 2.3 bytes an entry, private to the process (a worker forked after the
# load shares them); the entries stay mapped from the file.
_ON_HUGE_PAGES = ("bloom", "directory")


def _read_mapped(path: Path, fd: int, mm: mmap.mmap, size: int) -> SuppressionIndex:
    with memoryview(mm) as view:
        params, spans = _check_layout(path, view, size)
    layout = _SECTIONS if len(spans) == len(_SECTIONS) else _SECTIONS_V1
    arrays: dict[str, np.ndarray] = {}
    copies: dict[str, np.ndarray] = {}
    for (offset, end, _crc, name), (_name, dtype) in zip(spans, layout, strict=True):
        itemsize = np.dtype(dtype).itemsize
        if (end - offset) % itemsize:
            raise CorruptSnapshot(path, f"section {name} is not whole {np.dtype(dtype)} items")
        if name in _ON_HUGE_PAGES and hugepages.worth(end - offset):
            copies[name] = arrays[name] = hugepages.zeros((end - offset) // itemsize, dtype)
        else:
            arrays[name] = np.frombuffer(mm, dtype, (end - offset) // itemsize, offset)
    _check_sections(path, fd, spans, size, copies)
    try:
        # read, not copied out of the mapping: its pages would stay resident, MBs of them
        raw_meta = _read_bytes(path, fd, spans[-1][0], len(arrays.pop("meta")))
        meta = json.loads(raw_meta)
        index = _assemble(arrays, meta, *params)
    except (ValueError, KeyError, TypeError, InvalidInput, RecursionError) as exc:
        # RecursionError: meta JSON nested deeper than the parser goes (a crafted file)
        raise CorruptSnapshot(path, f"inconsistent contents: {exc}") from None
    index.meta["path"] = str(path)
    del meta, arrays
    if len(raw_meta) >= _TRIM_FROM:
        _give_back_freed_memory()
    return index


_TRIM_FROM = 256 << 10  # bytes of meta (the sender table): its parse leaves MBs behind


def _give_back_freed_memory() -> None:
    """Hand the heap memory the load freed (the meta's parse, the tables' growth) back to the
    system: glibc keeps it resident otherwise, a few MB beside the index for good. About a ms;
    below _TRIM_FROM there is little to give back, and a walk of every thread's arena would
    cost a busy process more than it gains."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _check_layout(
    path: Path, view: memoryview, size: int
) -> tuple[tuple[int, int, int, int], list[tuple[int, int, int, str]]]:
    """Header and section table; returns index parameters and sections."""
    magic, version, header_crc, file_size, entries, remainder_bits, scope_bits, bloom_k, count = (
        _HEADER.unpack_from(view, 0)
    )
    _check_header(path, bytearray(view[:HEADER_SIZE]), magic, version, header_crc, file_size,
                  size, count)
    spans: list[tuple[int, int, int, str]] = []
    for i, (name, _dtype) in enumerate(_LAYOUTS[version]):
        raw, offset, length, crc = _SECTION.unpack_from(view, _HEADER.size + i * _SECTION.size)
        end = spans[-1][1] if spans else HEADER_SIZE
        if raw.rstrip(b"\0") != name.encode() or offset % PAGE or offset < end:
            raise CorruptSnapshot(path, f"section {i} is {raw!r} at {offset}; expected {name}")
        if offset + length > size:
            raise CorruptSnapshot(path, f"section {name} ends past the end of the file")
        spans.append((offset, offset + length, crc, name))
    # the header's numbers are uint32; the index takes C ints of a few bits (a crafted file
    # whose checksums hold gave IndexCore an OverflowError, not CorruptSnapshot)
    for name, value in (("remainder_bits", remainder_bits), ("scope_bits", scope_bits),
                        ("bloom_k", bloom_k)):
        if value > 64:
            raise CorruptSnapshot(path, f"header: {name} {value} is past 64")
    return (entries, remainder_bits, scope_bits, bloom_k), spans


_CHUNK = 4 << 20  # bytes a pread of the checksum pass


def _check_sections(path: Path, fd: int, spans: list[tuple[int, int, int, str]], size: int,
                    copies: dict[str, np.ndarray]) -> None:
    """Every section's CRC, over what pread() reads (never through the mapping, which would
    leave every page resident); a section in `copies` is read into its copy whole."""
    # Each section's CRC covers it and the padding up to the next (or the file's end).
    regions = [
        (s[0], spans[i + 1][0] if i + 1 < len(spans) else size, s[2], s[3])
        for i, s in enumerate(spans)
    ]

    def crc_of(region: tuple[int, int, int, str]) -> int:
        start, end, _expected, name = region
        crc, position = 0, start
        into = copies.get(name)
        if into is not None:
            whole = into.reshape(-1).view(np.uint8).data
            _read_into(path, fd, whole, position)
            crc, position = zlib.crc32(whole), position + len(whole)
        if position == end:
            return crc
        # An anonymous map, not the heap: unmapped when done, where freed heap memory of a
        # thread's arena would stay resident beside the index.
        with mmap.mmap(-1, min(_CHUNK, end - position)) as chunk, memoryview(chunk) as buffer:
            while position < end:
                part = buffer[: min(_CHUNK, end - position)]
                _read_into(path, fd, part, position)
                crc = zlib.crc32(part, crc)
                position += len(part)
                part.release()
        return crc

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        crcs = list(pool.map(crc_of, regions))
    for (_start, _end, expected, name), actual in zip(regions, crcs, strict=True):
        if actual != expected:
            raise CorruptSnapshot(path, f"section {name} checksum mismatch")


def _read_bytes(path: Path, fd: int, position: int, length: int) -> bytearray:
    out = bytearray(length)
    with memoryview(out) as view:
        _read_into(path, fd, view, position)
    return out


def _read_into(path: Path, fd: int, view: memoryview, position: int) -> None:
    """Fill `view` from the file at `position`: the file was checked for size, so a short read
    means it shrank under us."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], position + done)
        if n <= 0:
            raise CorruptSnapshot(path, f"truncated while read, at byte {position + done}")
        done += n


def _check_header(path: Path, header: bytearray, magic: bytes, version: int, crc: int,
                  file_size: int, size: int, count: int) -> None:
    if magic != MAGIC:
        raise CorruptSnapshot(path, f"not an anning snapshot (magic {magic!r})")
    if version not in _LAYOUTS:
        raise CorruptSnapshot(
            path, f"format version {version}; this anning reads versions 1 and {FORMAT_VERSION}"
        )
    struct.pack_into("<I", header, _CRC_OFFSET, 0)
    if zlib.crc32(header) != crc:
        raise CorruptSnapshot(path, "header checksum mismatch")
    if file_size != size:
        raise CorruptSnapshot(
            path, f"truncated or extended: the header says {file_size} bytes, the file has {size}"
        )
    if count != len(_LAYOUTS[version]):
        raise CorruptSnapshot(path, f"{count} sections; version {version} has "
                              f"{len(_LAYOUTS[version])}")


# the meta's numbers, as the writers put them: times (Unix ms), sequences, a country code
_META_NUMBERS = (("as_of_ms", 0, (1 << 63) - 1), ("events_through", 0, (1 << 63) - 1),
                 ("folded_through", 0, (1 << 63) - 1), ("default_country", 1, 999))


def _assemble(
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    entries: int,
    remainder_bits: int,
    scope_bits: int,
    bloom_k: int,
) -> SuppressionIndex:
    for key, low, high in _META_NUMBERS:
        value = meta.get(key, low)
        # checked here, once: a crafted meta's 2**64 or 1e308 failed far from the load
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"meta {key}: {value!r} is not an integer in {low}..{high}")
    categories = tuple(meta.pop("categories"))
    scopes, senders = meta.pop("scopes"), meta.pop("senders")
    if len(arrays["words"]) != entries:
        raise ValueError(f"{len(arrays['words'])} entries, the header says {entries}")
    table = ScopeTable.restore(scopes, senders, arrays["sender_scope"], arrays["sender_entity"])
    statements = RowStatements(int(meta.get("as_of_ms", 0)))
    if "times" in arrays:
        times = arrays["times"]
        statements.times = times if len(times) else None
        for name, dtype in (("bit_times", KEY_DTYPE), ("tombstones", KEY_DTYPE),
                            ("reassigned", MOVE_DTYPE)):
            raw = arrays[name]
            if len(raw) % dtype.itemsize:
                raise ValueError(f"section {name} is not whole records")
            setattr(statements, name, raw.view(dtype))
    return SuppressionIndex.from_arrays(
        IndexArrays(arrays["directory"], arrays["words"], arrays["bloom"],
                    arrays["sender_scope"], arrays["sender_entity"], remainder_bits,
                    scope_bits, bloom_k),
        table, categories, meta, statements)

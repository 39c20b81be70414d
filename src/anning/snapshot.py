"""The binary snapshot: an index laid out to be memory-mapped, versioned and checksummed.

Layout (little-endian):
  [0, 4096)   header: magic, format version, file size, index parameters, a table of sections
              (name, offset, length, CRC-32) and the CRC-32 of the header itself.
  sections    each at a 4096-byte boundary, in this order: directory (uint32), words (uint64),
              bloom (uint64), sender_scope (uint32), sender_entity (uint32), meta (UTF-8 JSON:
              categories, scopes, senders, as_of ...). A section's CRC covers its bytes and the
              zero padding up to the next section (or the end), so every byte of the file is
              checked before any of it is served.

Loading maps the file read-only (pages shared between processes) and never parses entries.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from anning import _index, hugepages
from anning.errors import CorruptSnapshot, InvalidInput
from anning.index import ScopeTable, SuppressionIndex
from anning.scopes import ENTITY_PREFIX, GLOBAL, validate_categories

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "fsync_directory",
    "read_snapshot",
    "snapshot_entries",
    "write_snapshot",
]

MAGIC = b"ANNINGIX"
FORMAT_VERSION = 1
PAGE = 4096
HEADER_SIZE = PAGE
# magic, version, header crc, file size, entries, remainder bits, scope bits, bloom k, sections
_HEADER = struct.Struct("<8sIIQQIIII")
_SECTION = struct.Struct("<16sQQI4x")
_SECTIONS = (
    ("directory", np.uint32),
    ("words", np.uint64),
    ("bloom", np.uint64),
    ("sender_scope", np.uint32),
    ("sender_entity", np.uint32),
    ("meta", np.uint8),
)
_CRC_OFFSET = 12  # the header CRC field, zero while the CRC is computed


def _align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def fsync_directory(path: str | PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot(index: SuppressionIndex, path: str | PathLike[str]) -> None:
    """Write `index` to `path` through a temporary file, fsync, rename and directory fsync."""
    path = Path(path)
    core = index._core
    meta = {
        **index.meta,
        "categories": list(index.categories),
        "scopes": index.scopes,
        "senders": index.senders,
        "written_at": time.time(),
    }
    payloads: list[memoryview] = [
        memoryview(np.ascontiguousarray(core.directory)).cast("B"),
        memoryview(np.ascontiguousarray(core.words)).cast("B"),
        memoryview(np.ascontiguousarray(core.bloom)).cast("B"),
        memoryview(np.ascontiguousarray(core.sender_scope)).cast("B"),
        memoryview(np.ascontiguousarray(core.sender_entity)).cast("B"),
        memoryview(json.dumps(meta, ensure_ascii=False).encode()),
    ]
    offsets, offset = [], HEADER_SIZE
    for payload in payloads:
        offsets.append(offset)
        offset = _align(offset + len(payload))
    file_size = offset
    table = b""
    for i, payload in enumerate(payloads):
        end = offsets[i + 1] if i + 1 < len(payloads) else file_size
        crc = zlib.crc32(payload)
        crc = zlib.crc32(bytes(end - offsets[i] - len(payload)), crc)
        table += _SECTION.pack(_SECTIONS[i][0].encode(), offsets[i], len(payload), crc)
    header = bytearray(HEADER_SIZE)
    _HEADER.pack_into(
        header, 0, MAGIC, FORMAT_VERSION, 0, file_size, len(index), core.remainder_bits,
        core.scope_bits, core.bloom_k, len(payloads),
    )
    header[_HEADER.size : _HEADER.size + len(table)] = table
    struct.pack_into("<I", header, _CRC_OFFSET, zlib.crc32(header))

    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            for i, payload in enumerate(payloads):
                f.seek(offsets[i])
                f.write(payload)
            f.truncate(file_size)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def snapshot_entries(path: str | PathLike[str]) -> int:
    """The number of entries a snapshot's header declares (header checked, body not read)."""
    path = Path(path)
    with open(path, "rb") as f:
        header = bytearray(f.read(HEADER_SIZE))
    if len(header) < HEADER_SIZE:
        raise CorruptSnapshot(path, f"truncated: {len(header)} bytes, a header is {HEADER_SIZE}")
    magic, version, crc, _size, entries, *_ = _HEADER.unpack_from(header, 0)
    struct.pack_into("<I", header, _CRC_OFFSET, 0)
    if magic != MAGIC or version != FORMAT_VERSION or zlib.crc32(header) != crc:
        raise CorruptSnapshot(path, "not a readable anning snapshot header")
    return entries


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of writers that died (a load killed mid-way): as big as an index."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


def read_snapshot(path: str | PathLike[str]) -> SuppressionIndex:
    """Map and check a binary snapshot; raise CorruptSnapshot naming the file and the fault."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < HEADER_SIZE:
                raise CorruptSnapshot(path, f"truncated: {size} bytes, a header is {HEADER_SIZE}")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise CorruptSnapshot(path, f"cannot be read: {exc.strerror or exc}") from exc
    try:
        return _read_mapped(path, mm, size)
    except CorruptSnapshot as exc:
        # Drop the frames (and the array views into the map they hold), then unmap now.
        error = exc.with_traceback(None)
    with contextlib.suppress(BufferError):  # else the map goes with its last reference
        mm.close()
    raise error


def _read_mapped(path: Path, mm: mmap.mmap, size: int) -> SuppressionIndex:
    with memoryview(mm) as view:
        params, spans = _check_layout(path, view, size)
    arrays = {}
    for (offset, end, _crc, name), (_name, dtype) in zip(spans, _SECTIONS, strict=True):
        itemsize = np.dtype(dtype).itemsize
        if (end - offset) % itemsize:
            raise CorruptSnapshot(path, f"section {name} is not whole {np.dtype(dtype)} items")
        arrays[name] = np.frombuffer(mm, dtype, (end - offset) // itemsize, offset)
    # The parts every check probes at random, off the file's small pages onto huge ones (see
    # anning.hugepages): 2.3 bytes an entry, private to the process (a worker forked after
    # the load shares them); the entries stay mapped from the file.
    for name in ("bloom", "directory"):
        arrays[name] = hugepages.copy(arrays[name])
    try:
        meta = json.loads(arrays.pop("meta").tobytes())
        index = _assemble(arrays, meta, *params)
    except (ValueError, KeyError, TypeError, InvalidInput) as exc:
        raise CorruptSnapshot(path, f"inconsistent contents: {exc}") from None
    index.meta["path"] = str(path)
    return index


def _check_layout(
    path: Path, view: memoryview, size: int
) -> tuple[tuple[int, int, int, int], list[tuple[int, int, int, str]]]:
    """Header, section table and every checksum; returns index parameters and sections."""
    magic, version, header_crc, file_size, entries, remainder_bits, scope_bits, bloom_k, count = (
        _HEADER.unpack_from(view, 0)
    )
    if magic != MAGIC:
        raise CorruptSnapshot(path, f"not an anning snapshot (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise CorruptSnapshot(
            path, f"format version {version}; this anning reads version {FORMAT_VERSION}"
        )
    header = bytearray(view[:HEADER_SIZE])
    struct.pack_into("<I", header, _CRC_OFFSET, 0)
    if zlib.crc32(header) != header_crc:
        raise CorruptSnapshot(path, "header checksum mismatch")
    if file_size != size:
        raise CorruptSnapshot(
            path, f"truncated or extended: the header says {file_size} bytes, the file has {size}"
        )
    if count != len(_SECTIONS):
        raise CorruptSnapshot(path, f"{count} sections; version {version} has {len(_SECTIONS)}")
    spans = []
    for i, (name, _dtype) in enumerate(_SECTIONS):
        raw, offset, length, crc = _SECTION.unpack_from(view, _HEADER.size + i * _SECTION.size)
        end = spans[-1][1] if spans else HEADER_SIZE
        if raw.rstrip(b"\0") != name.encode() or offset % PAGE or offset < end:
            raise CorruptSnapshot(path, f"section {i} is {raw!r} at {offset}; expected {name}")
        if offset + length > size:
            raise CorruptSnapshot(path, f"section {name} ends past the end of the file")
        spans.append((offset, offset + length, crc, name))
    # Each section's CRC covers it and the padding up to the next (or the file's end).
    regions = [
        (s[0], spans[i + 1][0] if i + 1 < len(spans) else size, s[2], s[3])
        for i, s in enumerate(spans)
    ]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        crcs = list(pool.map(lambda r: zlib.crc32(view[r[0] : r[1]]), regions))
    for (_start, _end, expected, name), actual in zip(regions, crcs, strict=True):
        if actual != expected:
            raise CorruptSnapshot(path, f"section {name} checksum mismatch")
    return (entries, remainder_bits, scope_bits, bloom_k), spans


def _assemble(
    arrays: dict[str, np.ndarray],
    meta: dict[str, Any],
    entries: int,
    remainder_bits: int,
    scope_bits: int,
    bloom_k: int,
) -> SuppressionIndex:
    categories = validate_categories(meta.pop("categories"))
    scopes, senders = meta.pop("scopes"), meta.pop("senders")
    if len(arrays["words"]) != entries:
        raise ValueError(f"{len(arrays['words'])} entries, the header says {entries}")
    if not scopes or scopes[0] != GLOBAL:
        raise ValueError("the first scope is not global")
    table = ScopeTable()
    table.scopes = list(scopes)
    table.scope_ids = {s: i for i, s in enumerate(scopes)}
    table.senders = list(senders)
    table.sender_ids = {s: i for i, s in enumerate(senders)}
    if len(table.scope_ids) != len(scopes) or len(table.sender_ids) != len(senders):
        raise ValueError("a scope or sender is listed twice")
    sender_scope, sender_entity = arrays["sender_scope"], arrays["sender_entity"]
    if len(sender_scope) != len(senders):
        raise ValueError(f"{len(sender_scope)} sender scopes for {len(senders)} senders")
    for i, name in enumerate(senders):
        if table.scope_ids.get(name) != sender_scope[i] or name.startswith(ENTITY_PREFIX):
            raise ValueError(f"sender {name!r} does not match its scope")
    table._entity_of = sender_entity.tolist()
    if (1 << scope_bits) < len(scopes):
        raise ValueError(f"{len(scopes)} scopes do not fit {scope_bits} bits")
    core = _index.IndexCore(
        arrays["directory"], arrays["words"], arrays["bloom"], sender_scope, sender_entity,
        remainder_bits, scope_bits, bloom_k,
    )
    return SuppressionIndex(core, table, categories, meta)

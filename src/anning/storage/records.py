"""The write log's record format: the one codec of event records, and its versions.

A record on disk is a frame `length u32 | crc32 u32 | payload` (little-endian) whose payload is
one msgpack array led by its format version:

    [4, first_sequence]                                   a segment's first record: the sequence
                                                          its first event will have
    [3, first_sequence, [[kind, number, scope, mask, at_ms, source], ...]]
                                                          the events of one write, all or none;
                                                          the i-th has sequence first + i
    [0, next_segment, next_sequence]                      a seal: the segment ends here

and, written by earlier versions and still read: [0, next_segment] (a seal), [1, kind, number,
scope, mask, at_ms, source] (one event) and [2, [[...], ...]] (a write), whose events take the
next sequences in log order. `kind` is 1 opt-out, 2 opt-in, 3 reassignment (scope "" and mask
0); `number` the E.164 digits; `scope` a canonical key (a sender, `entity:NAME` or `*`); `mask`
the category bits in the data directory's category order; `at_ms` Unix milliseconds; `source`
one of anning.model.scopes.SOURCES. A write's sequence is stamped under the segment's lock
(`stamp`: eight bytes of the payload and the CRC), so the records are encoded before it.

A reader meets a version it does not know as corruption: it never guesses.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from anning._events import decode_writes, event_columns, fields_well_formed
from anning.model.events import Event, EventColumns
from anning.model.scopes import SOURCE_IDS

__all__ = [
    "FRAME",
    "MAX_RECORD",
    "EventFields",
    "Header",
    "RecordError",
    "Seal",
    "Write",
    "columns_of",
    "decode",
    "decode_columns",
    "encode_events",
    "encode_header",
    "encode_seal",
    "event_of",
    "fields_of",
    "frame",
    "stamp",
]

FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
MAX_RECORD = 64 << 20  # the largest gRPC message: a WriteBatch is one record
SEAL, EVENT, BATCH, WRITE, HEADER = 0, 1, 2, 3, 4
_KINDS = (1, 2, 3)  # opt-out, opt-in, reassignment (anning.model.events)
_KIND_SET = frozenset(_KINDS)
EventFields = tuple[int, int, str, int, int, str]  # kind, number, scope, mask, at_ms, source
# A write's payload starts 0x93 (an array of 3), 0x03 (version 3), 0xcf (a uint64 follows):
# its first sequence sits at these bytes of the payload, big-endian.
_SEQUENCE_AT = 3
_SEQUENCE = struct.Struct(">Q")


class RecordError(ValueError):
    """A payload that is no record of a version this build reads."""


@dataclass(frozen=True)
class Seal:
    next_segment: int
    next_sequence: int  # 0: a seal of an earlier version, which did not say


@dataclass(frozen=True)
class Header:
    first_sequence: int


@dataclass(frozen=True)
class Write:
    """The events of one record; `first_sequence` 0 for a record of an earlier version.
    `events` None: they were decoded to columns (`decode_columns`), `count` of them."""

    first_sequence: int
    events: list[EventFields] | None
    count: int = -1

    def __post_init__(self) -> None:
        if self.count < 0:
            object.__setattr__(self, "count", len(self.events or ()))


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _pack(value: Sequence[Any]) -> bytes:
    return frame(msgpack.packb(list(value), use_bin_type=True))


def fields_of(event: Event) -> EventFields:
    return (event.kind, event.number, event.scope, event.mask, event.at_ms, event.source)


def event_of(fields: Sequence[Any], sequence: int = 0) -> Event:
    kind, number, scope, mask, at_ms, source = fields
    return Event(number, scope, mask, kind, at_ms, source, sequence)


def encode_events(events: Sequence[Event]) -> bytes:
    """One framed record of a write, its sequence still to be stamped."""
    body = msgpack.packb([list(fields_of(e)) for e in events], use_bin_type=True)
    return frame(b"\x93\x03\xcf" + bytes(8) + body)


def stamp(record: bytes, first_sequence: int) -> bytes:
    """The record of a write with the sequence of its first event, its CRC made anew."""
    payload = bytearray(record[FRAME.size:])
    _SEQUENCE.pack_into(payload, _SEQUENCE_AT, first_sequence)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_seal(next_segment: int, next_sequence: int) -> bytes:
    return _pack((SEAL, next_segment, next_sequence))


def encode_header(first_sequence: int) -> bytes:
    return _pack((HEADER, first_sequence))


def columns_of(sequences: Sequence[int], fields: Sequence[EventFields]) -> EventColumns:
    """Events as the log's records hold them, as columns (no object per event), in one
    compiled pass over the fields (restarts, catch-ups, loads and the change feed read them
    all: seven generator passes took 0.3 s for half a million events)."""
    kind, number, scope, mask, at, source, names = event_columns(
        fields if isinstance(fields, list) else list(fields), SOURCE_IDS)
    columns: dict[str, np.ndarray] = {
        "sequence": np.fromiter(sequences, np.uint64, len(sequences)),
        "number": number, "at": at, "scope": scope, "mask": mask, "kind": kind,
        "source": source,
    }
    return EventColumns(columns, names)


def decode_columns(data: bytes, offsets: np.ndarray, lengths: np.ndarray
                   ) -> tuple[list[Write | None], EventColumns] | None:
    """The payloads at `offsets` (`lengths` bytes each) that are writes of this version, with
    well-formed events, decoded in one compiled pass without the GIL: per record a Write
    whose events are in the columns (their sequences left 0), or None for a record to
    `decode` one by one (a seal, a header, an earlier version, or not a record at all). None
    for the whole when a scope is not UTF-8 (`decode` names the record)."""
    found = decode_writes(data, offsets, lengths, SOURCE_IDS)
    if found is None:
        return None
    first, count, kind, number, scope, mask, at, source, names = found
    writes = [Write(f, None, c) if f else None
              for f, c in zip(first.tolist(), count.tolist(), strict=True)]
    columns: dict[str, np.ndarray] = {
        "sequence": np.zeros(len(kind), np.uint64), "number": number, "at": at,
        "scope": scope, "mask": mask, "kind": kind, "source": source,
    }
    return writes, EventColumns(columns, names)


def decode(value: Any) -> Seal | Header | Write:
    """A decoded payload (RecordError names what is wrong)."""
    if not isinstance(value, (list, tuple)) or not value or not isinstance(value[0], int):
        raise RecordError(f"not a record: {_short(value)}")
    version = value[0]
    if version == WRITE and len(value) == 3 and isinstance(value[1], int) and value[1] > 0 \
            and isinstance(value[2], (list, tuple)) and value[2]:
        return Write(value[1], _checked_all(value[2]))
    if version == HEADER and len(value) == 2 and isinstance(value[1], int) and value[1] > 0:
        return Header(value[1])
    if version == SEAL and len(value) in (2, 3) and all(isinstance(v, int) for v in value):
        return Seal(value[1], value[2] if len(value) == 3 else 0)
    if version == EVENT and len(value) == 7:
        return Write(0, [_checked(value[1:])])
    if version == BATCH and len(value) == 2 and isinstance(value[1], (list, tuple)):
        return Write(0, _checked_all(value[1]))
    raise RecordError(f"record version {version!r} of {len(value)} fields is not one this "
                      f"build reads (0 to 4): {_short(value)}")


def _checked_all(items: Sequence[Any]) -> list[EventFields]:
    """`_checked` of every item: in one compiled pass when every one is well formed (all of
    them, but for corruption: half a million events in 0.04 s, against 0.2 s of map and set
    passes in Python); else item by item, naming the bad one."""
    if fields_well_formed(items, _KIND_SET, SOURCE_IDS):
        return list(map(tuple, items))
    return [_checked(item) for item in items]


def _checked(item: Any) -> EventFields:
    """The fields of one event, each of its type and within what the event columns hold
    (a record with a kind 7, a number past 64 bits or an unknown source was taken here and
    failed later, in columns_of, with KeyError or OverflowError instead of CorruptLog)."""
    if not isinstance(item, (list, tuple)) or len(item) != 6 or not all(
            type(f) is t for f, t in zip(item, (int, int, str, int, int, str), strict=True)):
        raise RecordError(f"not the fields of an event: {_short(item)}")
    kind, number, _scope, mask, at_ms, source = item
    if kind not in _KINDS or not 0 <= number < 1 << 64 or not 0 <= mask <= 0xFF \
            or not -(1 << 63) <= at_ms < 1 << 63 or source not in SOURCE_IDS:
        raise RecordError(f"not the fields of an event: {_short(item)}")
    return tuple(item)  # checked field by field


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

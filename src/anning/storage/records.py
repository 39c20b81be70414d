"""The write log's record format: the one codec of event records, and its versions.

A record on disk is a frame `length u32 | crc32 u32 | payload` (little-endian) whose payload is
one msgpack array led by its format version:

    [0, next_segment]                                     a seal: the segment ends here
    [1, kind, number, scope, mask, at_ms, source]         one event
    [2, [[kind, number, scope, mask, at_ms, source], ...]] the events of one write, all or none

`kind` is 1 opt-out, 2 opt-in, 3 reassignment (scope "" and mask 0); `number` the E.164 digits;
`scope` a canonical key (a sender, `entity:NAME` or `*`); `mask` the category bits in the
serving list's order; `at_ms` Unix milliseconds; `source` one of anning.model.scopes.SOURCES.
A reader meets a version it does not know as corruption: it never guesses.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

from anning.model.events import Event

__all__ = [
    "FRAME",
    "MAX_RECORD",
    "EventFields",
    "RecordError",
    "decode",
    "encode_events",
    "encode_seal",
    "event_of",
    "fields_of",
    "frame",
]

FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
MAX_RECORD = 64 << 20  # the largest gRPC message: a WriteBatch is one record
SEAL, EVENT, BATCH = 0, 1, 2
EventFields = tuple[int, int, str, int, int, str]  # kind, number, scope, mask, at_ms, source


class RecordError(ValueError):
    """A payload that is no record of a version this build reads."""


def frame(payload: bytes) -> bytes:
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _pack(value: Sequence[Any]) -> bytes:
    return frame(msgpack.packb(list(value), use_bin_type=True))


def fields_of(event: Event) -> EventFields:
    return (event.kind, event.number, event.scope, event.mask, event.at_ms, event.source)


def event_of(fields: Sequence[Any]) -> Event:
    kind, number, scope, mask, at_ms, source = fields
    return Event(number, scope, mask, kind, at_ms, source)


def encode_events(events: Sequence[Event]) -> bytes:
    """One framed record of a write: after a crash all of it is there or none of it."""
    if len(events) == 1:
        return _pack((EVENT, *fields_of(events[0])))
    return _pack((BATCH, [list(fields_of(e)) for e in events]))


def encode_seal(next_segment: int) -> bytes:
    return _pack((SEAL, next_segment))


def decode(value: Any) -> int | list[EventFields]:
    """A decoded payload: the next segment's number for a seal, else the events it holds.
    RecordError names what is wrong."""
    if not isinstance(value, (list, tuple)) or not value or not isinstance(value[0], int):
        raise RecordError(f"not a record: {_short(value)}")
    version = value[0]
    if version == EVENT and len(value) == 7:
        return [_checked(value[1:])]
    if version == BATCH and len(value) == 2 and isinstance(value[1], (list, tuple)):
        return [_checked(item) for item in value[1]]
    if version == SEAL and len(value) == 2 and isinstance(value[1], int):
        return int(value[1])
    raise RecordError(f"record version {version!r} of {len(value)} fields is not one this "
                      f"build reads (0, 1, 2): {_short(value)}")


def _checked(item: Iterable[Any]) -> EventFields:
    fields = tuple(item)
    if len(fields) != 6 or not all(isinstance(f, t) for f, t in
                                   zip(fields, (int, int, str, int, int, str), strict=True)):
        raise RecordError(f"not the fields of an event: {_short(fields)}")
    return fields  # type: ignore[return-value,unused-ignore]  # checked field by field


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

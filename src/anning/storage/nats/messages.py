"""The event message of the replicated log: one event per JetStream message, its format and its
version (this module is the one owner of it).

With NATS the stream's sequence is the event's sequence (SPEC §4, §8), so every event is a
message of its own; a write of several events is one atomic batch, whose messages take
consecutive sequences. A message's payload, little-endian:

    version u8 (1) | kind u8 | mask u8 | source u8 | number u64 | at_ms i64 |
    scope length u16 | scope (UTF-8)

`kind` 1 opt-out, 2 opt-in, 3 reassignment (scope empty, mask 0); `number` the E.164 digits;
`mask` the category bits in the list's category order; `source` an index into
anning.model.scopes.SOURCES. A payload of another version, or one that does not add up, is
refused with what is wrong: a replica never guesses.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from anning._stream import decode_events
from anning.errors import CorruptFile
from anning.model.events import EARLIEST_MS, REASSIGN, REASSIGN_SCOPE, Event, EventColumns
from anning.model.scopes import SOURCE_IDS, SOURCES

__all__ = ["MESSAGE_VERSION", "BadMessage", "decode_messages", "decode_run", "encode_event"]

MESSAGE_VERSION = 1
_FIXED = struct.Struct("<BBBBQqH")


class BadMessage(CorruptFile):
    """A message of the stream that is no event of a version this build reads."""

    def __init__(self, stream: str, sequence: int, problem: str) -> None:
        super().__init__(f"stream {stream}", f"message {sequence}: {problem}")
        self.sequence = sequence


def encode_event(event: Event) -> bytes:
    scope = b"" if event.kind == REASSIGN else event.scope.encode()
    return _FIXED.pack(MESSAGE_VERSION, event.kind, event.mask, SOURCE_IDS[event.source],
                       event.number, event.at_ms, len(scope)) + scope


def decode_messages(stream: str, sequences: Sequence[int],
                    payloads: Sequence[bytes]) -> EventColumns:
    """The events of messages (their stream sequences and payloads), as columns."""
    n = len(payloads)
    seq = np.fromiter(sequences, np.uint64, n)
    number = np.empty(n, np.uint64)
    at = np.empty(n, np.int64)
    scope = np.empty(n, np.uint32)
    mask = np.empty(n, np.uint8)
    kind = np.empty(n, np.uint8)
    source = np.empty(n, np.uint8)
    ids: dict[bytes, int] = {}
    unpack = _FIXED.unpack_from
    fixed = _FIXED.size
    for i, payload in enumerate(payloads):
        try:
            version, k, m, s, num, at_ms, length = unpack(payload)
        except struct.error:
            raise BadMessage(stream, int(seq[i]), f"{len(payload)} bytes, shorter than an "
                             "event") from None
        if version != MESSAGE_VERSION:
            raise BadMessage(stream, int(seq[i]), f"event message version {version}, this "
                             f"build reads {MESSAGE_VERSION}")
        if len(payload) != fixed + length or not 1 <= k <= 3 or s >= len(SOURCES):
            raise BadMessage(stream, int(seq[i]), f"not an event: {bytes(payload[:40])!r}")
        number[i], at[i], mask[i], kind[i], source[i] = num, at_ms, m, k, s
        if k == REASSIGN:
            scope[i] = REASSIGN_SCOPE
            continue
        name = bytes(payload[fixed:])
        found = ids.get(name)
        if found is None:
            found = ids[name] = len(ids)
        scope[i] = found
    # what validate_event asks of every event before it is written, asked of the columns
    reassign = kind == REASSIGN
    bad = (number == 0) | (number >= 10**15) | (at < EARLIEST_MS) | \
        np.where(reassign, mask != 0, mask == 0) | (source == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadMessage(stream, int(seq[i]), f"not an event: number {int(number[i])}, mask "
                         f"{int(mask[i])}, at_ms {int(at[i])}, source {int(source[i])}")
    scopes: list[str] = []
    for name in ids:
        try:
            scopes.append(name.decode())
        except UnicodeDecodeError:
            i = int(np.flatnonzero(scope == ids[name])[0])
            raise BadMessage(stream, int(seq[i]), f"scope {name!r} is not UTF-8") from None
    return EventColumns({"sequence": seq, "number": number, "at": at, "scope": scope,
                         "mask": mask, "kind": kind, "source": source}, scopes)


def decode_run(stream: str, buf: bytes | bytearray, sequences: npt.NDArray[np.uint64],
               where: npt.NDArray[np.int64]) -> EventColumns:
    """The events of messages whose payloads lie in `buf` at `where` (rows of offset and
    length), with their stream sequences: decoded by compiled code, checked as
    `decode_messages` checks them."""
    fields, bad = decode_events(buf, np.ascontiguousarray(where, np.int64), len(SOURCES),
                                MESSAGE_VERSION)
    if bad >= 0:
        off, length = (int(v) for v in where[bad])
        raise BadMessage(stream, int(sequences[bad]), f"not an event of version "
                         f"{MESSAGE_VERSION}: {bytes(buf[off:off + min(length, 40)])!r}")
    number, at, mask, kind, source = (fields[k] for k in ("number", "at", "mask", "kind",
                                                          "source"))
    reassign = kind == REASSIGN
    invalid = (number == 0) | (number >= 10**15) | (at < EARLIEST_MS) | \
        np.where(reassign, mask != 0, mask == 0) | (source == 0)
    if invalid.any():
        i = int(np.flatnonzero(invalid)[0])
        raise BadMessage(stream, int(sequences[i]), f"not an event: number {int(number[i])}, "
                         f"mask {int(mask[i])}, at_ms {int(at[i])}, source {int(source[i])}")
    scope = fields["scope"]
    scopes: list[str] = []
    for k, (off, length) in enumerate(fields["names"].tolist()):
        name = bytes(buf[off:off + length])
        try:
            scopes.append(name.decode())
        except UnicodeDecodeError:
            i = int(np.flatnonzero(scope == k)[0])
            raise BadMessage(stream, int(sequences[i]), f"scope {name!r} is not UTF-8") \
                from None
    return EventColumns({"sequence": np.ascontiguousarray(sequences, np.uint64),
                         "number": number, "at": at, "scope": scope, "mask": mask,
                         "kind": kind, "source": source}, scopes)

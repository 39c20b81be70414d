"""The change feed written out: events as CSV rows that `anning load` reads back, and as the
protobuf messages of OptOuts.Changes, both in one compiled pass over the events' columns.

    number,sender,category,action,at,source,seq

`sender` as in a snapshot (a sender, `entity:NAME`, or `*`), one row a category (`all` for every
one), `action` opt_out, opt_in or reassign (sender `*`, category empty), `at` UTC ISO 8601 with
milliseconds, `seq` the event's sequence: a row per category shares its event's sequence.
"""

from __future__ import annotations

from typing import BinaryIO

from anning import _events
from anning.model.events import EventColumns
from anning.model.scopes import DEFAULT_CATEGORIES, SOURCES
from anning.storage.layout import DataDir
from anning.storage.local import LocalFeed
from anning.storage.snapshot import snapshot_summary

__all__ = ["CSV_HEADER", "ChangeEncoder", "export_csv", "format_csv"]

CSV_HEADER = b"number,sender,category,action,at,source,seq\n"
_ACTIONS = [b"", b"opt_out", b"opt_in", b"reassign"]
_CHUNK = 1 << 20  # events a pass


def _csv_field(text: str) -> bytes:
    """RFC 4180: quoted where it holds a comma, a quote or a line end."""
    raw = text.encode("utf-8")
    if any(c in raw for c in b',"\r\n'):
        return b'"' + raw.replace(b'"', b'""') + b'"'
    return raw


def _by_bit(categories: tuple[str, ...] | list[str]) -> list[bytes]:
    names = [c.encode("utf-8") for c in categories]
    return names + [f"bit{b}".encode() for b in range(len(names), 8)]


def format_csv(events: EventColumns, categories: tuple[str, ...]) -> bytes:
    """The CSV rows of events (no header)."""
    c = events.columns
    rows: bytes = _events.format_csv(
        c["sequence"], c["number"], c["at"], c["scope"], c["mask"], c["kind"], c["source"],
        [_csv_field(s) for s in events.scopes], [_csv_field(n.decode()) for n in
                                                 _by_bit(categories)],
        [_csv_field(s) for s in SOURCES], _ACTIONS)
    return rows


class ChangeEncoder:
    """Events to the bytes of ChangesResponse messages (the category names given once)."""

    def __init__(self, categories: tuple[str, ...]) -> None:
        self.categories = _by_bit(categories)
        self.sources = [s.encode() for s in SOURCES]

    def encode(self, events: EventColumns) -> bytes:
        c = events.columns
        message: bytes = _events.encode_changes(
            c["sequence"], c["number"], c["at"], c["scope"], c["mask"], c["kind"],
            c["source"], [s.encode("utf-8") for s in events.scopes], self.categories,
            self.sources)
        return message


def export_csv(data: DataDir, since: int, until: int | None,
               out: BinaryIO) -> tuple[int, int]:
    """Every event of `data` past `since` (up to `until`) as CSV into `out`, header first;
    returns (events written, the last one's sequence)."""
    categories = tuple(snapshot_summary(data.snapshot).meta.get("categories",
                                                                DEFAULT_CATEGORIES)) \
        if data.snapshot.exists() else DEFAULT_CATEGORIES
    feed = LocalFeed(data, since)
    out.write(CSV_HEADER)
    count, last = 0, since
    while True:
        events = feed.read(_CHUNK)
        if until is not None and len(events):
            events = events.until(until)
        if not len(events):
            break
        out.write(format_csv(events, categories))
        count += len(events)
        last = int(events.sequence[-1])
        if until is not None and last >= until:
            break
    return count, last

"""The nightly snapshot load (SPEC §5): text files in, a checked index and report out.

Files are CSV or TSV (told by the header), optionally gzip- or zstd-compressed (told by their
first bytes), UTF-8 with or without BOM, LF or CRLF. They stream through the compiled parser in
chunks; bad rows go to a rejects file (line, column, reason, raw text) and are skipped. The
guards (reject ratio, shrink limit, empty input, bad columns) refuse a load by raising
SnapshotRefused with the report, before anything is written.
"""

from __future__ import annotations

import csv
import os
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from anning import _csv
from anning._normalize import normalize_number
from anning.errors import InvalidInput
from anning.index import ScopeTable, SuppressionIndex
from anning.load.fold import FoldEvents, Rows, fold
from anning.load.guards import Refusal, SnapshotRefused, check_rejects
from anning.load.report import LoadReport, ProgressFn, Rejects, iso
from anning.load.sources import BOM, Source, open_text
from anning.model.events import EventColumns
from anning.model.scopes import (
    DEFAULT_CATEGORIES,
    DEFAULT_CATEGORY,
    SOURCES,
    category_mask,
    parse_scope,
    validate_categories,
)

__all__ = [
    "FoldIn",
    "LoadOptions",
    "ParsedSnapshot",
    "parse_snapshot_files",
    "parse_time",
    "read_snapshot_files",
]

CHUNK = 8 << 20


@dataclass
class LoadOptions:
    entities: str | PathLike[str] | None = None
    as_of: str | None = None
    rejects: str | PathLike[str] | None = None
    max_reject_ratio: float = 0.001
    max_shrink: float = 0.20
    allow_shrink: bool = False
    categories: Sequence[str] = DEFAULT_CATEGORIES
    default_country: int = 86
    utc_offset_minutes: int = 480  # for times written without a zone: China
    # the watermark the snapshot declares: upstream had every anning event up to this
    # sequence (None: it declares none, and the previous list's stands)
    events_through: int | None = None


def parse_time(text: str, utc_offset_minutes: int = 480) -> int:
    """Unix milliseconds of an ISO 8601 time or Unix time; InvalidInput if it is neither."""
    ms = _csv.parse_time(text.encode("utf-8", "replace"), utc_offset_minutes)
    if ms is None:
        raise InvalidInput(f"as_of: {text!r} is not a time (ISO 8601 or Unix time)")
    return ms


def _header(first: bytes, path: Path) -> tuple[list[str], str, int]:
    """Column names, delimiter and the header's length in bytes (BOM included)."""
    start = len(BOM) if first.startswith(BOM) else 0
    end = first.find(b"\n", start)
    if end < 0:
        end = len(first)
    line = first[start:end].rstrip(b"\r")
    if not line.strip():
        raise Refusal(f"{path}: empty input (no header row)")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(f"{path}: the header row is not UTF-8") from None
    delimiter = "\t" if "\t" in text else ","
    try:
        names = [name.strip().lower() for name in next(csv.reader([text], delimiter=delimiter))]
    except csv.Error as exc:  # e.g. a bare CR (old Mac line ends): the header runs on
        raise Refusal(
            f"{path}: the header row cannot be read ({exc}); lines end in LF or CRLF"
        ) from None
    unknown = [n for n in names if n not in _csv.COLUMNS]
    if unknown:
        raise Refusal(
            f"{path}: unknown column {unknown[0]!r} (columns are {', '.join(_csv.COLUMNS)})"
        )
    for required in ("number", "sender"):
        if required not in names:
            raise Refusal(f"{path}: missing column {required!r}")
    if len(set(names)) != len(names):
        raise Refusal(f"{path}: a column is named twice in {names}")
    return names, delimiter, min(end + 1, len(first))


@dataclass(frozen=True)
class FoldIn:
    """anning's own events for a load to fold in (SPEC §5): those past the watermark the
    snapshot declares (`events_through`), up to `folded_through`, the last one there was."""

    events: EventColumns
    events_through: int
    folded_through: int

    @classmethod
    def none(cls) -> FoldIn:
        return cls(EventColumns.empty(), 0, 0)

    # the events past the watermark as the fold takes them, made with this (a load can make
    # them while its rows are parsed)
    to_fold: FoldEvents = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "to_fold",
                           FoldEvents(self.events.after(self.events_through)))


def read_snapshot_files(
    paths: Sequence[str | PathLike[str]],
    options: LoadOptions | None = None,
    progress: ProgressFn | None = None,
    fold_in: FoldIn | Callable[[], FoldIn] | None = None,
) -> tuple[SuppressionIndex, LoadReport]:
    """Parse snapshot files into a new index, with `fold_in`'s events folded in; raise
    SnapshotRefused when a guard refuses. `fold_in` may be a function that gives them, asked
    once the rows are parsed (the events can be read meanwhile: the parse releases the GIL).

    The reject-ratio and empty-input guards are checked here; the shrink guard needs the list
    that is serving and is checked by `check_shrink`."""
    parsed = parse_snapshot_files(paths, options, progress)
    report = parsed.report
    if callable(fold_in):
        fold_in = fold_in()
    fold_in = fold_in or FoldIn.none()
    events = fold_in.to_fold.events
    uncovered = int(events.columns["at"][0]) if len(events) else 0
    meta = {"as_of": report.as_of, "as_of_ms": parsed.as_of_ms,
            "default_country": parsed.default_country, "files": report.files,
            "events_through": fold_in.events_through,
            "folded_through": max(fold_in.folded_through, fold_in.events_through),
            "oldest_uncovered_at_ms": uncovered}
    report.events_folded = len(events)
    report.events_through = fold_in.events_through
    index = fold(parsed.rows, fold_in.to_fold, parsed.table, parsed.categories,
                 parsed.as_of_ms, meta)
    del parsed
    report.entries_after = len(index)
    # rows that made no entry of their own (a duplicate key, or undone by a later statement);
    # events folded in may add entries the rows do not have
    report.duplicates = max(0, report.loaded - len(index))
    report.seconds = time.perf_counter() - report.started
    return index, report


@dataclass
class ParsedSnapshot:
    """Rows parsed and checked, not yet an index: arrays whose scope ids are `table`'s."""

    rows: Rows
    table: ScopeTable
    categories: tuple[str, ...]
    as_of_ms: int
    default_country: int
    report: LoadReport


def parse_snapshot_files(
    paths: Sequence[str | PathLike[str]],
    options: LoadOptions | None = None,
    progress: ProgressFn | None = None,
) -> ParsedSnapshot:
    """Stream the files through the parser, reject bad rows, apply the reject-ratio and
    empty-input guards (raising SnapshotRefused)."""
    options = options or LoadOptions()
    categories = validate_categories(options.categories)
    report = LoadReport(files=[str(p) for p in paths])
    started = report.started = time.perf_counter()
    table = ScopeTable()
    rejects = Rejects(Path(options.rejects) if options.rejects else None)
    try:
        as_of_ms = _as_of(options, paths)
        report.as_of = iso(as_of_ms)
        if options.entities:
            report.entity_links = _read_entities(Path(options.entities), table, rejects)
        parser = None
        total = sum(os.stat(p).st_size for p in paths)
        done = 0
        for path in map(Path, paths):
            parser, done = _parse_file(
                path, parser, table, categories, options, rejects, progress, done, total
            )
    except Refusal as exc:
        report.refused = str(exc)
        report.rejects_file = rejects.close()
        report.seconds = time.perf_counter() - started
        raise SnapshotRefused(report) from None
    except (OSError, EOFError, zlib.error) as exc:  # the latter two: a bad gzip entities file
        report.refused = f"cannot read: {exc}"
        report.rejects_file = rejects.close()
        report.seconds = time.perf_counter() - started
        raise SnapshotRefused(report) from None
    assert parser is not None
    report.rows = parser.rows
    report.rejected = parser.rejected
    report.blank_lines = parser.blank_lines
    report.rejected_by_reason = dict(rejects.by_reason)
    report.rejects_file = rejects.close()
    report.loaded = parser.length
    report.senders = len(table.senders)
    if parser.newest_at:
        report.newest_event = iso(parser.newest_at)
    report.seconds = time.perf_counter() - started
    check_rejects(report, options.max_reject_ratio)
    numbers, scopes, masks = parser.arrays()
    report.seconds = time.perf_counter() - started
    return ParsedSnapshot(Rows(numbers, scopes, masks, parser.ats, parser.actions), table,
                          categories, as_of_ms, options.default_country, report)


def _as_of(options: LoadOptions, paths: Sequence[str | PathLike[str]]) -> int:
    if options.as_of:
        try:
            return parse_time(options.as_of, options.utc_offset_minutes)
        except InvalidInput as exc:
            raise Refusal(str(exc)) from None
    if not paths:
        raise Refusal("no snapshot file given")
    return int(max(os.stat(p).st_mtime for p in paths) * 1000)


def _parse_file(
    path: Path,
    parser: Any,
    table: ScopeTable,
    categories: tuple[str, ...],
    options: LoadOptions,
    rejects: Rejects,
    progress: ProgressFn | None,
    done: int,
    total: int,
) -> tuple[Any, int]:
    source = Source(path)
    try:
        first = source.read(CHUNK)
        while b"\n" not in first and len(first) < MAX_HEADER:
            more = source.read(CHUNK)
            if not more:
                break
            first += more
        names, delimiter, header_len = _header(first, path)
        if parser is None:
            parser = _csv.SnapshotParser(
                names, delimiter, category_mask(categories, DEFAULT_CATEGORY),
                lambda text: table.scope(parse_scope(text)),
                lambda text: _category(categories, text),
                _source_code,
                lambda text: normalize_number(text, options.default_country),
                options.default_country, options.utc_offset_minutes,
            )
        else:
            parser.start_file(names, delimiter)
        pending = first[header_len:]
        last_report = 0.0
        while True:
            chunk = source.read(CHUNK)
            final = not chunk
            data = pending + chunk if pending else chunk
            consumed = parser.feed(data, final)
            pending = data[consumed:]
            rejects.write(str(path), parser.rejects)
            parser.rejects.clear()
            now = time.monotonic()
            if progress and (final or now - last_report > 0.2):
                last_report = now
                progress(parser.rows, parser.rejected, done + source.position(), total)
            if final:
                break
        return parser, done + source.size
    finally:
        source.close()


MAX_HEADER = 1 << 20


def _category(categories: tuple[str, ...], text: str) -> int:
    return category_mask(categories, text.strip() or DEFAULT_CATEGORY)


def _source_code(text: str) -> int:
    key = text.strip().lower()
    if not key:  # blank, as an empty field: no source given
        return 0
    if key not in SOURCES:
        raise InvalidInput(f"source: {text!r} is not one of {', '.join(SOURCES)}")
    return SOURCES.index(key)


def _read_entities(path: Path, table: ScopeTable, rejects: Rejects) -> int:
    """The `sender,entity` file: small (tens of thousands of rows), read with csv."""
    links = 0
    with open_text(path) as f:
        first = f.readline()
        reader = csv.reader(_chain(first, f), dialect=csv.excel_tab if "\t" in first else csv.excel)
        header = [h.strip().lower() for h in next(reader, [])]
        if header != ["sender", "entity"]:
            raise Refusal(f"{path}: the header must be `sender,entity`, not {header}")
        end = reader.line_num
        for row in reader:
            line, end = end + 1, reader.line_num  # a record is reported at its first line
            if not row or not any(c.strip() for c in row):
                continue
            raw = ",".join(row).encode("utf-8", "surrogateescape")
            if len(row) != 2:
                rejects.write(str(path), [(line, "", f"{len(row)} fields; the header has 2", raw)])
                continue
            bad = [i for i, cell in enumerate(row) if not _utf8(cell)]
            if bad:
                rejects.write(str(path), [(line, ("sender", "entity")[bad[0]],
                                           "is not valid UTF-8", raw)])
                continue
            try:
                table.link(row[0], row[1])
                links += 1
            except InvalidInput as exc:
                column = "entity" if str(exc).startswith("entities[") else "sender"
                rejects.write(str(path), [(line, column, str(exc).split(": ", 1)[-1], raw)])
    return links


def _utf8(text: str) -> bool:
    """Whether text decoded with surrogateescape was valid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _chain(first: str, rest: Iterable[str]) -> Iterable[str]:
    yield first
    yield from rest



"""The nightly snapshot load (SPEC §5): text files in, a checked index and report out.

Files are CSV or TSV (told by the header), optionally gzip- or zstd-compressed (told by their
first bytes), UTF-8 with or without BOM, LF or CRLF. They stream through the compiled parser in
chunks; bad rows go to a rejects file (line, column, reason, raw text) and are skipped. The
guards (reject ratio, shrink limit, empty input, bad columns) refuse a load by raising
SnapshotRefused with the report, before anything is written.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

from anning import _csv
from anning._normalize import normalize_number
from anning.errors import InvalidInput
from anning.index import ScopeTable, SuppressionIndex
from anning.scopes import (
    DEFAULT_CATEGORIES,
    SOURCES,
    category_mask,
    parse_scope,
    validate_categories,
)

__all__ = [
    "SOURCES",
    "LoadOptions",
    "LoadReport",
    "ParsedSnapshot",
    "SnapshotRefused",
    "check_shrink",
    "iso",
    "parse_snapshot_files",
    "parse_time",
    "progress_printer",
    "read_snapshot_files",
]

CHUNK = 8 << 20
REJECTS_HEADER = ("line", "column", "reason", "raw")
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"
ProgressFn = Callable[[int, int, int, int], None]  # rows, rejected, bytes read, bytes total


class SnapshotRefused(Exception):
    """A load refused by a guard; `report` says what was read and why it was refused."""

    def __init__(self, report: LoadReport) -> None:
        super().__init__(report.refused)
        self.report = report


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


@dataclass
class LoadReport:
    files: list[str]
    rows: int = 0
    loaded: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    blank_lines: int = 0
    senders: int = 0
    entity_links: int = 0
    entries_before: int | None = None
    entries_after: int | None = None
    as_of: str | None = None
    newest_event: str | None = None
    seconds: float = 0.0
    rejects_file: str | None = None
    refused: str | None = None
    started: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["started"]
        return out

    def summary(self) -> str:
        lines = [
            f"files: {', '.join(self.files)}",
            f"rows read: {self.rows:,}; loaded: {self.loaded:,}; duplicates folded: "
            f"{self.duplicates:,}; rejected: {self.rejected:,}; blank lines: {self.blank_lines:,}",
        ]
        for reason, count in sorted(self.rejected_by_reason.items(), key=lambda x: -x[1]):
            lines.append(f"  rejected {count:,}: {reason}")
        before = "none" if self.entries_before is None else f"{self.entries_before:,}"
        after = "-" if self.entries_after is None else f"{self.entries_after:,}"
        lines.append(f"entries before: {before}; after: {after}; as of {self.as_of}")
        lines.append(f"seconds: {self.seconds:.2f}")
        if self.rejects_file:
            lines.append(f"rejects: {self.rejects_file}")
        if self.refused:
            lines.append(f"REFUSED: {self.refused}")
        return "\n".join(lines)


def parse_time(text: str, utc_offset_minutes: int = 480) -> int:
    """Unix milliseconds of an ISO 8601 time or Unix time; InvalidInput if it is neither."""
    ms = _csv.parse_time(text.encode("utf-8", "replace"), utc_offset_minutes)
    if ms is None:
        raise InvalidInput(f"as_of: {text!r} is not a time (ISO 8601 or Unix time)")
    return ms


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


class _Source:
    """A snapshot file, decompressed as it is read; counts the raw bytes for progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.size = os.fstat(self.raw.fileno()).st_size
        magic = self.raw.read(4)
        self.raw.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            self.stream: BinaryIO = gzip.GzipFile(fileobj=self.raw)
        elif magic == _ZSTD_MAGIC:
            self.stream = io.BufferedReader(_ZstdReader(self.raw), 1 << 20)  # type: ignore[assignment]
        else:
            self.stream = self.raw

    def read(self, n: int) -> bytes:
        try:
            return self.stream.read(n)
        except (OSError, EOFError, zlib.error) as exc:  # cut short or corrupt: never a shorter list
            raise OSError(f"{self.path}: {exc}") from None

    def position(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


class _ZstdReader(io.RawIOBase):
    """zstd frames one after another (pzstd and `cat` write several), decompressed as read.
    Input that ends inside a frame is an error (a truncated file), not a shorter list."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        super().__init__()
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = self._dctx.decompressobj()
        self._in_frame = False  # the current frame has had input and not reached its end
        self._out = b""
        self._pos = 0
        self._error = zstandard.ZstdError

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self._pos >= len(self._out):
            data = self._raw.read(1 << 20)
            if not data:
                if self._in_frame:
                    raise OSError("zstd: the input ends inside a frame (a truncated file)")
                return 0
            self._out, self._pos = self._decompress(data), 0
        n = min(len(b), len(self._out) - self._pos)
        b[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            try:
                out.append(self._frame.decompress(data))
            except self._error as exc:
                raise OSError(f"zstd: {exc}") from None
            if not self._frame.eof:
                self._in_frame = True
                break
            data = self._frame.unused_data  # the next frame, if any
            self._frame = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(out)


def _header(first: bytes, path: Path) -> tuple[list[str], str, int]:
    """Column names, delimiter and the header's length in bytes (BOM included)."""
    start = len(_BOM) if first.startswith(_BOM) else 0
    end = first.find(b"\n", start)
    if end < 0:
        end = len(first)
    line = first[start:end].rstrip(b"\r")
    if not line.strip():
        raise _Refusal(f"{path}: empty input (no header row)")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refusal(f"{path}: the header row is not UTF-8") from None
    delimiter = "\t" if "\t" in text else ","
    try:
        names = [name.strip().lower() for name in next(csv.reader([text], delimiter=delimiter))]
    except csv.Error as exc:  # e.g. a bare CR (old Mac line ends): the header runs on
        raise _Refusal(
            f"{path}: the header row cannot be read ({exc}); lines end in LF or CRLF"
        ) from None
    unknown = [n for n in names if n not in _csv.COLUMNS]
    if unknown:
        raise _Refusal(
            f"{path}: unknown column {unknown[0]!r} (columns are {', '.join(_csv.COLUMNS)})"
        )
    for required in ("number", "sender"):
        if required not in names:
            raise _Refusal(f"{path}: missing column {required!r}")
    if len(set(names)) != len(names):
        raise _Refusal(f"{path}: a column is named twice in {names}")
    return names, delimiter, min(end + 1, len(first))


class _Refusal(Exception):
    pass


class _Rejects:
    """The rejects file, written as rows are rejected; created only when there is one."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.file: io.TextIOWrapper | None = None
        self.writer: Any = None
        self.by_reason: Counter[str] = Counter()

    def write(self, source: str, rejects: Iterable[tuple[int, str, str, bytes]]) -> None:
        for line, column, reason, raw in rejects:
            key = f"{column}: {reason}" if column else reason
            self.by_reason[_reason_class(key)] += 1
            if self.path is None:
                continue
            if self.writer is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
                self.writer = csv.writer(self.file)
                self.writer.writerow(("file", *REJECTS_HEADER))
            text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
            self.writer.writerow((source, line, column, reason, text))

    def close(self) -> str | None:
        if self.file is None:
            return None
        self.file.close()
        return str(self.path)


def _reason_class(key: str) -> str:
    """A reason without the values it quotes, to count rejects by kind in the summary."""
    return _DIGITS.sub("N", _QUOTED.sub("…", key))


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_DIGITS = re.compile(r"\b\d+\b")


def read_snapshot_files(
    paths: Sequence[str | PathLike[str]],
    options: LoadOptions | None = None,
    progress: ProgressFn | None = None,
) -> tuple[SuppressionIndex, LoadReport]:
    """Parse snapshot files into a new index; raise SnapshotRefused when a guard refuses.

    The reject-ratio and empty-input guards are checked here; the shrink guard needs the list
    that is serving and is checked by `check_shrink`."""
    parsed = parse_snapshot_files(paths, options, progress)
    report = parsed.report
    index = SuppressionIndex.from_scope_ids(
        parsed.numbers, parsed.scopes, parsed.masks, parsed.table, parsed.categories,
        {"as_of": report.as_of, "as_of_ms": parsed.as_of_ms,
         "default_country": parsed.default_country, "files": report.files},
    )
    del parsed
    report.entries_after = len(index)
    report.duplicates = report.loaded - len(index)
    report.seconds = time.perf_counter() - report.started
    return index, report


@dataclass
class ParsedSnapshot:
    """Rows parsed and checked, not yet an index: arrays whose scope ids are `table`'s."""

    numbers: Any
    scopes: Any
    masks: Any
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
    rejects = _Rejects(Path(options.rejects) if options.rejects else None)
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
    except _Refusal as exc:
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
    if report.rows == 0:
        report.refused = "empty input: no data rows"
    elif report.rejected > options.max_reject_ratio * report.rows:
        report.refused = (
            f"{report.rejected:,} of {report.rows:,} rows rejected "
            f"({report.rejected / report.rows:.4%}), more than the limit "
            f"{options.max_reject_ratio:.4%}"
        )
    if report.refused:
        report.seconds = time.perf_counter() - started
        raise SnapshotRefused(report)
    numbers, scopes, masks = parser.arrays()
    report.seconds = time.perf_counter() - started
    return ParsedSnapshot(numbers, scopes, masks, table, categories, as_of_ms,
                          options.default_country, report)


def check_shrink(report: LoadReport, entries_before: int | None, options: LoadOptions) -> None:
    """The shrink guard: refuse a list that lost more than the limit, unless allowed."""
    report.entries_before = entries_before
    if entries_before and report.entries_after is not None and not options.allow_shrink:
        floor = entries_before * (1 - options.max_shrink)
        if report.entries_after < floor:
            report.refused = (
                f"the list would shrink from {entries_before:,} to {report.entries_after:,} "
                f"entries ({1 - report.entries_after / entries_before:.1%}), more than the "
                f"limit {options.max_shrink:.0%} (--allow-shrink to force)"
            )
            raise SnapshotRefused(report)


def _as_of(options: LoadOptions, paths: Sequence[str | PathLike[str]]) -> int:
    if options.as_of:
        try:
            return parse_time(options.as_of, options.utc_offset_minutes)
        except InvalidInput as exc:
            raise _Refusal(str(exc)) from None
    if not paths:
        raise _Refusal("no snapshot file given")
    return int(max(os.stat(p).st_mtime for p in paths) * 1000)


def _parse_file(
    path: Path,
    parser: Any,
    table: ScopeTable,
    categories: tuple[str, ...],
    options: LoadOptions,
    rejects: _Rejects,
    progress: ProgressFn | None,
    done: int,
    total: int,
) -> tuple[Any, int]:
    source = _Source(path)
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
                names, delimiter, category_mask(categories, categories[0]),
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
    return category_mask(categories, text.strip() or categories[0])


def _source_code(text: str) -> int:
    key = text.strip().lower()
    if not key:  # blank, as an empty field: no source given
        return 0
    if key not in SOURCES:
        raise InvalidInput(f"source: {text!r} is not one of {', '.join(SOURCES)}")
    return SOURCES.index(key)


def _read_entities(path: Path, table: ScopeTable, rejects: _Rejects) -> int:
    """The `sender,entity` file: small (tens of thousands of rows), read with csv."""
    links = 0
    with _open_text(path) as f:
        first = f.readline()
        reader = csv.reader(_chain(first, f), dialect=csv.excel_tab if "\t" in first else csv.excel)
        header = [h.strip().lower() for h in next(reader, [])]
        if header != ["sender", "entity"]:
            raise _Refusal(f"{path}: the header must be `sender,entity`, not {header}")
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


def _open_text(path: Path) -> io.TextIOWrapper:
    source = _Source(path)
    # surrogateescape: a row that is not UTF-8 is rejected, not the whole load (_read_entities)
    return io.TextIOWrapper(source.stream, encoding="utf-8-sig",  # type: ignore[arg-type]
                            errors="surrogateescape", newline="")


def progress_printer(stream: Any = None) -> ProgressFn:
    """A progress bar on a terminal; a log line every few seconds otherwise."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    started = time.monotonic()
    state = {"last": 0.0}

    def show(rows: int, rejected: int, read: int, total: int) -> None:
        now = time.monotonic()
        elapsed = max(now - started, 1e-9)
        rate = rows / elapsed
        fraction = min(read / total, 1.0) if total else 1.0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0
        if tty:
            bar = "#" * int(fraction * 30)
            stream.write(
                f"\r[{bar:<30}] {fraction:4.0%} {rows:>13,} rows {rate / 1e6:5.2f}M rows/s "
                f"ETA {eta:4.0f}s rejects {rejected:,} "
            )
            if fraction >= 1.0:
                stream.write("\n")
            stream.flush()
        elif now - state["last"] >= 5 or fraction >= 1.0:
            state["last"] = now
            stream.write(
                f"load: {fraction:.0%} {rows:,} rows, {rate:,.0f} rows/s, eta {eta:.0f}s, "
                f"{rejected:,} rejected\n"
            )
            stream.flush()

    return show


"""Fuzz target: the snapshot CSV/TSV parser (anning._csv.SnapshotParser) over chunk boundaries,
plain and through gzip and zstd as the loader reads them.

The loader (anning.load) feeds the parser 8 MiB chunks: it consumes whole records and says how
far it got, and the rest is fed again with the next chunk. Properties, per input (SPEC §5):
- accepted rows + rejected rows = records read, and with the blank lines they account for every
  data line: exactly, line for line, where no quote can make a record span lines; otherwise the
  parser's line count is the number of line ends;
- feeding the bytes in one chunk, in random chunks (down to one byte), and decompressed from
  gzip or zstd in random reads, gives the same rows, scopes, masks, rejects and counts;
- every accepted number is valid E.164 (check_e164 takes it unchanged), every scope id is one the
  scope table gave, every mask is a category mask; every reject names a line of the input;
- a compressed file cut short is an error (OSError, as the loader's _Source raises), never a
  shorter list.
Run: python fuzz/fuzz_csv.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import zstandard

    from anning._csv import COLUMNS, SnapshotParser
    from anning._normalize import check_e164, normalize_number
    from anning.index import ScopeTable
    from anning.load.parse import _category, _source_code
    from anning.load.sources import _ZstdReader
    from anning.model.scopes import DEFAULT_CATEGORIES, category_mask, parse_scope

FIRST_LINE = 2
PIECES = [b"13800000001", b"+86 138-0000-0002", b"\xef\xbc\x91\xef\xbc\x93\xef\xbc\x98" * 3,
          b"8613800000003", "京东".encode(), "【京东】".encode(), b"entity:jd", b"*", b"",
          b"marketing", b"notification", b"all", b"spam", b"2026-11-01T08:00:00+08:00",
          b"1762000000", b"yesterday", b"reply", b"api", b"sms", b'"', b'""', b",", b"\t",
          b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b" "]
_LINE_END = re.compile(rb"\r\n|\r|\n")


class Result:
    """What a parse gave: everything that must not depend on how the bytes were cut."""

    def __init__(self, parser: Any, table: ScopeTable, rejects: list) -> None:
        numbers, scopes, masks = parser.arrays()
        self.key = (numbers.tolist(), scopes.tolist(), masks.tolist(), rejects, parser.rows,
                    parser.rejected, parser.blank_lines, parser.line, parser.newest_at,
                    list(table.scopes))
        self.parser = parser
        self.table = table
        self.rejects = rejects


def parse(read: Callable[[int], bytes], sizes: list[int], columns: list[str],
          delimiter: str) -> Result:
    """The loader's loop (anning.load.parse._parse_file) with read sizes from `sizes`."""
    table = ScopeTable()
    categories = DEFAULT_CATEGORIES
    parser = SnapshotParser(
        columns, delimiter, category_mask(categories, categories[0]),
        lambda text: table.scope(parse_scope(text)),
        lambda text: _category(categories, text),
        _source_code,
        lambda text: normalize_number(text, 86),
        86, 480, FIRST_LINE, 16,  # a small capacity: the arrays grow
    )
    rejects: list = []
    pending = b""
    k = 0
    while True:
        chunk = read(sizes[k % len(sizes)])
        k += 1
        final = not chunk
        data = pending + chunk if pending else chunk
        consumed = parser.feed(data, final)
        expect(0 <= consumed <= len(data), f"feed consumed {consumed} of {len(data)}")
        pending = data[consumed:]
        rejects.extend(parser.rejects)
        parser.rejects.clear()
        if final:
            expect(not pending, f"{len(pending)} bytes left after the final chunk")
            return Result(parser, table, rejects)


def reader(stream: BinaryIO) -> Callable[[int], bytes]:
    """read() as anning.load.sources.Source has it: decompression errors become OSError."""

    def read(n: int) -> bytes:
        try:
            return stream.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise OSError(str(exc)) from None

    return read


def decompressing(data: bytes) -> Callable[[int], bytes]:
    raw = io.BytesIO(data)
    if data.startswith(b"\x1f\x8b"):
        return reader(gzip.GzipFile(fileobj=raw))  # type: ignore[arg-type]
    return reader(io.BufferedReader(_ZstdReader(raw), 1 << 10))


def body_from(fdp: atheris.FuzzedDataProvider, structured: bool) -> bytes:
    if not structured:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2048))
    return b"".join(fdp.PickValueInList(PIECES) if fdp.ConsumeIntInRange(0, 3) else
                    fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 6))
                    for _ in range(fdp.ConsumeIntInRange(0, 200)))


def check_result(result: Result, body: bytes, columns: list[str]) -> None:
    parser = result.parser
    numbers, scopes, masks = parser.numbers, parser.scopes, parser.masks
    expect(parser.length + parser.rejected == parser.rows,
           f"{parser.length} accepted + {parser.rejected} rejected != {parser.rows} rows")
    expect(len(result.rejects) == parser.rejected, "a reject not reported")
    ends = len(_LINE_END.findall(body))
    lines = ends + (1 if body and not body.endswith((b"\n", b"\r")) else 0)
    if b'"' not in body:
        expect(parser.rows + parser.blank_lines == lines,
               f"{parser.rows} rows + {parser.blank_lines} blank lines != {lines} lines")
        expect(parser.line == FIRST_LINE + lines, f"line {parser.line}, {lines} lines")
    else:
        expect(parser.rows + parser.blank_lines <= lines, "more records than lines")
        expect(FIRST_LINE <= parser.line <= FIRST_LINE + lines,
               f"line {parser.line} after {lines} lines")
    for line, column, reason, raw in result.rejects:
        expect(FIRST_LINE <= line < max(parser.line, FIRST_LINE + 1),
               f"reject at line {line} of {FIRST_LINE}..{parser.line}")
        expect(column in ("", *columns) and reason and len(raw) <= 256,
               f"reject {(line, column, reason, raw[:40])}")
    n_scopes = len(result.table.scopes)
    for number, scope, mask in zip(numbers.tolist(), scopes.tolist(), masks.tolist(),
                                   strict=True):
        expect(check_e164(number) == number, f"accepted {number}: not E.164")
        expect(0 <= scope < n_scopes, f"scope id {scope} of {n_scopes}")
        expect(mask != 0, "an accepted row with no category")


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    optional = [c for c in COLUMNS[2:] if fdp.ConsumeBool()]
    columns = ["number", "sender", *optional]
    order = fdp.ConsumeIntInRange(0, 5)
    columns = columns[order % len(columns):] + columns[: order % len(columns)]
    delimiter = "\t" if fdp.ConsumeBool() else ","
    compression = fdp.ConsumeIntInRange(0, 2)
    sizes = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(1, 4))]
    cut = fdp.ConsumeIntInRange(0, 8)
    body = body_from(fdp, fdp.ConsumeBool())

    whole = parse(io.BytesIO(body).read, [len(body) + 1], columns, delimiter)
    check_result(whole, body, columns)
    pieces = parse(io.BytesIO(body).read, sizes, columns, delimiter)
    expect(pieces.key == whole.key, f"chunks {sizes} parse otherwise than one chunk")
    if compression == 0:
        return
    packed = gzip.compress(body) if compression == 1 else zstandard.compress(body)
    unpacked = parse(decompressing(packed), sizes, columns, delimiter)
    expect(unpacked.key == whole.key, "decompressed, the bytes parse otherwise")
    if 0 < cut < len(packed) - 4:  # cut short, the magic left: an error, not fewer rows
        try:
            parse(decompressing(packed[: len(packed) - cut]), sizes, columns, delimiter)
        except OSError:
            return
        expect(False, f"a {'gzip' if compression == 1 else 'zstd'} file cut by {cut} bytes "
                      "parsed without an error")


if __name__ == "__main__":
    _harness.run(test_one_input)

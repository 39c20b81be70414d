"""The nightly snapshot load (SPEC §5): a garbage corpus with exact counts and rejects, over
every chunk boundary, in CSV, TSV, gzip and zstd, with entities; the rejects file of the
`anning load` command."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from anning import Scope, SuppressionIndex
from anning.load import SnapshotRefused
from anning.load import parse as loader_module
from anning.storage.layout import SNAPSHOT_NAME

AS_OF = "2026-11-01T00:00:00+08:00"
HEADER = ("number", "sender", "category", "at", "source")
BOM = b"\xef\xbb\xbf"
JD = "京东".encode()
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "13800000007")  # １３８００００００７
LONG = b"x" * (1 << 20)  # a 1 MiB field: its record is far past the 65536-byte limit

# The garbage corpus: (fields as they stand in the file, quotes included; line ending), one
# record an item; None is a blank line. Comments give each record's first physical line.
CORPUS = [
    ([b"13800000001", JD, b"", b"", b""], b"\r\n"),  # 2 ok
    ([b"13800000001", "【京东】".encode(), b"marketing", b"2026-11-01T08:00:00+08:00", b"reply"],
     b"\n"),  # 3 the same number and scope again (LF after CRLF: mixed endings)
    ([b"13800000002", JD, b"marketing", b"", b""], b"\r\n"),  # 4 ok
    ([b"13800000002", JD, b"notification", b"1762000000", b"api"], b"\r\n"),  # 5 folds into 4
    (None, b"\r\n"),  # 6 blank
    ([b'"13800000003"', '"淘宝, ""旗舰""店"'.encode(), b"all", b"", b"snapshot"], b"\n"),  # 7 ok
    ([b"13800000004", '"\n美团"'.encode(), b'"notification\r\n"', b"", b"customer_service"],
     b"\r\n"),  # 8-10 ok: newlines inside quotes, stripped as surrounding white space
    ([b'"1380000\n0005"', JD, b"", b"", b""], b"\n"),  # 11-12 a newline inside the number
    ([b"1380000000X", JD, b"", b"", b""], b"\n"),  # 13 not a digit
    ([b"", JD, b"", b"", b""], b"\n"),  # 14 empty number
    ([b"13800000006", b"", b"", b"", b""], b"\n"),  # 15 empty sender
    ([FULL_WIDTH.encode(), JD, b"", b"", b""], b"\n"),  # 16 ok: full-width digits
    ([b"13800000008", JD], b"\n"),  # 17 too few fields
    ([b"13800000009", JD, b"", b"", b"", b""], b"\n"),  # 18 a trailing delimiter
    ([b"13800000010", JD, b"", b"", b"", b"x", b"y"], b"\n"),  # 19 too many fields
    ([b"1380000\x000011", JD, b"", b"", b""], b"\n"),  # 20 NUL in the number
    ([b"13800000012", "京\x00东".encode(), b"", b"", b""], b"\n"),  # 21 NUL in the sender
    ([b"13800000013", b"\xe4\xba\xac\xff", b"", b"", b""], b"\n"),  # 22 sender not UTF-8
    ([b"1380000001\xff", JD, b"", b"", b""], b"\n"),  # 23 number not UTF-8
    ([b"13800000014", JD, b"spam", b"", b""], b"\n"),  # 24 unknown category
    ([b"13800000015", JD, b"", b"yesterday", b""], b"\n"),  # 25 not a time
    ([b"13800000016", JD, b"", b"", b"sms"], b"\n"),  # 26 unknown source
    ([b"13800000017", '"京东"x'.encode(), b"", b"", b""], b"\n"),  # 27 text after a quote
    ([b"13800000018", "entity:京东集团".encode(), b"all", b"", b""], b"\n"),  # 28 ok
    ([b"13800000019", b"*", b"marketing", b"", b"regulator"], b"\n"),  # 29 ok, global
    ([b"13800000020", JD, b"  ", b"   ", b"  "], b"\n"),  # 30 ok: blank optional fields
    ([b"+86 138-0000-0021", JD, b"", b"", b""], b"\n"),  # 31 ok
    ([b'"13800000022"', JD, b"", b"1700000000000", b"complaint_12321"], b"\r\n"),  # 32 ok
    ([b"13800000023", JD, b"", b"", LONG], b"\n"),  # 33 longer than 65536 bytes
    ([b"13800000024", JD, b"", b"", b""], b"\n"),  # 34 ok, after the long line
    (None, b"\n"),  # 35 blank
    ([b"13800000001", JD, b"notification", b"", b""], b"\r\n"),  # 36 folds into 2
    ([b"13800000001", b"*", b"notification", b"", b""], b"\n"),  # 37 ok: another scope
    ([b"13800000025", b"y" * 65, b"", b"", b""], b"\n"),  # 38 sender too long
    ([b"12", JD, b"", b"", b""], b"\n"),  # 39 number too short
    ([b'"13800000026', JD, b"", b"", b""], b"\n"),  # 40 a quote never closed: the rest ...
    ([b"13800000027", JD, b"", b"", b""], b"\n"),  # 41 ... is part of that one bad record
]

# Every reject: (line, column, a part of the reason)
REJECTS = [
    (11, "number", "has an invalid character '\\n'"),
    (13, "number", "has an invalid character 'X'"),
    (14, "number", "is empty"),
    (15, "sender", "is empty"),
    (17, "", "2 fields; the header has 5"),
    (18, "", "6 fields; the header has 5"),
    (19, "", "7 fields; the header has 5"),
    (20, "number", "a NUL byte"),
    (21, "sender", "a NUL byte"),
    (22, "sender", "is not valid UTF-8"),
    (23, "number", "is not valid UTF-8"),
    (24, "category", "'spam' is not one of marketing, notification"),
    (25, "at", "is not a time"),
    (26, "source", "'sms' is not one of snapshot, reply"),
    (27, "", "text after a closing quote"),
    (33, "", "record longer than 65536 bytes"),
    (38, "sender", "longer than 64 characters"),
    (39, "number", "is too short"),
    (40, "", "a quote is not closed"),
]
ROWS, LOADED, REJECTED, BLANK_LINES, DUPLICATES, ENTRIES = 34, 15, 19, 2, 3, 12
LOADED_NUMBERS = ["13800000001", "13800000002", "13800000003", "13800000004", FULL_WIDTH,
                  "13800000018", "13800000019", "13800000020", "13800000021", "13800000022",
                  "13800000024"]
REJECTED_NUMBERS = ["13800000005", "13800000006", "13800000008", "13800000009", "13800000010",
                    "13800000011", "13800000012", "13800000013", "13800000014", "13800000015",
                    "13800000016", "13800000017", "13800000023", "13800000025", "13800000026",
                    "13800000027"]


def corpus(delimiter: bytes = b",") -> bytes:
    out = [BOM, delimiter.join(h.encode() for h in HEADER), b"\r\n"]
    for fields, ending in CORPUS:
        if fields is not None:
            out.append(delimiter.join(fields))
        out.append(ending)
    return b"".join(out)


def assert_corpus_rejects(rejects: list[dict[str, str]], source: Path) -> None:
    assert [(int(r["line"]), r["column"]) for r in rejects] == [(li, co) for li, co, _ in REJECTS]
    for row, (_line, _column, reason) in zip(rejects, REJECTS, strict=True):
        assert reason in row["reason"], (row, reason)
        assert row["file"] == str(source)


# -- the garbage corpus ----------------------------------------------------------------------


def test_corpus_counts_rejects_and_answers(tmp_path, load, write, read_rejects):
    path = write(tmp_path / "corpus.csv", corpus())
    idx, report = load([path], tmp_path)
    assert (report.rows, report.loaded, report.rejected, report.blank_lines,
            report.duplicates, report.entries_after, len(idx)) == (
        ROWS, LOADED, REJECTED, BLANK_LINES, DUPLICATES, ENTRIES, ENTRIES)
    assert sum(report.rejected_by_reason.values()) == REJECTED
    assert report.as_of == "2026-10-31T16:00:00+00:00"
    assert report.newest_event == "2026-11-01T00:00:00+00:00"  # line 3
    assert report.refused is None
    assert report.rejects_file == str(tmp_path / "rejects.csv")

    rejects = read_rejects(tmp_path / "rejects.csv")
    assert_corpus_rejects(rejects, path)
    by_line = {int(r["line"]): r["raw"] for r in rejects}
    assert by_line[11] == '"1380000\n0005",京东,,,'  # the whole record, from its first line
    assert by_line[20] == "1380000\\x000011,京东,,,"  # NUL and bad bytes shown escaped
    assert by_line[22] == "13800000013,京\\xff,,,"
    assert by_line[33].startswith("13800000023,京东,,,xxx") and len(by_line[33]) < 300
    assert by_line[40] == '"13800000026,京东,,,\n13800000027,京东,,,'

    # the index answers as the good rows say, and knows nothing of the bad ones
    assert idx.mask("13800000001", "京东") == 0b11  # marketing (2, 3) + notification (36)
    assert idx.mask("13800000002", "京东") == 0b11  # 4 + 5: one entry, two categories
    assert idx.mask("13800000001", "*") == 0b10
    assert idx.mask('13800000003', '淘宝, "旗舰"店') == 0xFF
    assert idx.mask("13800000018", "entity:京东集团") == 0xFF
    assert idx.check("【京东】", "13800000001") is Scope.SENDER
    assert idx.check("京东", 8613800000001, "notification") is Scope.SENDER
    assert idx.check("淘宝", "13800000001", "notification") is Scope.GLOBAL
    assert idx.check("淘宝", "13800000001") is Scope.NONE
    assert idx.check('淘宝, "旗舰"店', "13800000003", "notification") is Scope.SENDER
    assert idx.check("美团", "13800000004", "notification") is Scope.SENDER
    assert idx.check("美团", "13800000004", "marketing") is Scope.NONE
    assert idx.check("京东", "13800000007") is Scope.SENDER
    assert idx.check("京东", FULL_WIDTH) is Scope.SENDER
    assert idx.check("anyone", "13800000019") is Scope.GLOBAL
    assert idx.check("anyone", "13800000019", "notification") is Scope.NONE
    assert idx.check("京东", "13800000018") is Scope.NONE  # no entities file: not linked
    for number in ("13800000020", "13800000021", "13800000022", "13800000024"):
        assert idx.check("京东", number) is Scope.SENDER, number
    for number in REJECTED_NUMBERS:
        assert idx.check("京东", number) is Scope.NONE, number
        assert idx.check("京东", number, "notification") is Scope.NONE, number
    assert sorted(idx.senders) == sorted(["京东", '淘宝, "旗舰"店', "美团"])


def test_corpus_is_refused_at_the_default_reject_ratio(tmp_path, load, write, read_rejects):
    path = write(tmp_path / "corpus.csv", corpus())
    with pytest.raises(SnapshotRefused) as info:
        load([path], tmp_path, max_reject_ratio=0.001)
    report = info.value.report
    assert (report.rows, report.rejected) == (ROWS, REJECTED)
    assert report.refused == (
        f"{REJECTED} of {ROWS} rows rejected ({REJECTED / ROWS:.4%}), more than the limit 0.1000%"
    )
    # the operator still gets the rejects to look at
    assert len(read_rejects(tmp_path / "rejects.csv")) == REJECTED


def entries_of(idx: SuppressionIndex) -> list[tuple[int, str, int]]:
    numbers, scopes, masks = idx.entries()
    return sorted(zip(numbers.tolist(), (idx.scopes[s] for s in scopes), masks.tolist(),
                      strict=True))


def zstd_streamed(data: bytes) -> bytes:
    """A zstd frame written in pieces, without its content size in the header."""
    z = zstandard.ZstdCompressor().compressobj()
    return z.compress(data[:1000]) + z.compress(data[1000:]) + z.flush()


def test_tsv_gzip_and_zstd_give_identical_results(tmp_path, load, write, read_rejects):
    data = corpus()
    paths = {
        "csv": write(tmp_path / "corpus.csv", data),
        "tsv": write(tmp_path / "corpus.tsv", corpus(b"\t")),
        "gz": write(tmp_path / "corpus.csv.gz", gzip.compress(data)),
        "zst": write(tmp_path / "corpus.csv.zst", zstandard.ZstdCompressor().compress(data)),
        # told by the first bytes, not by the name; a frame without its content size
        "gz-named-txt": write(tmp_path / "gz.txt", gzip.compress(data)),
        "zst-streamed": write(tmp_path / "zst.dat", zstd_streamed(data)),
    }
    results = {}
    for name, path in paths.items():
        rejects_file = tmp_path / f"rejects-{name}.csv"
        idx, report = load([path], tmp_path, rejects=rejects_file)
        rejects = read_rejects(rejects_file)
        assert_corpus_rejects(rejects, path)
        counts = (report.rows, report.loaded, report.rejected, report.blank_lines,
                  report.duplicates, report.entries_after)
        raws = [r["raw"].replace("\t", ",") for r in rejects]
        results[name] = (counts, report.rejected_by_reason, report.newest_event,
                         entries_of(idx), raws)
    assert results["csv"][0] == (ROWS, LOADED, REJECTED, BLANK_LINES, DUPLICATES, ENTRIES)
    for name, result in results.items():
        if name == "tsv":  # the same, but for the raw text of rows with a delimiter inside
            assert result[:4] == results["csv"][:4]
        else:
            assert result == results["csv"], name


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 64, 4099])
def test_chunk_boundaries_anywhere(tmp_path, monkeypatch, chunk, load, write, read_rejects):
    """Records, CRLFs, quotes and the BOM split across the reads: the same result."""
    short = [row for row in CORPUS if row[0] is None or LONG not in row[0]]
    out = [BOM, b",".join(h.encode() for h in HEADER), b"\r\n"]
    for fields, ending in short:
        out.append(b",".join(fields) if fields is not None else b"")
        out.append(ending)
    path = write(tmp_path / "short.csv", b"".join(out))
    idx_whole, _ = load([path], tmp_path, rejects=tmp_path / "whole.csv")
    monkeypatch.setattr(loader_module, "CHUNK", chunk)
    idx, report = load([path], tmp_path, rejects=tmp_path / "split.csv")
    assert (report.rows, report.loaded, report.rejected, report.blank_lines, report.duplicates) \
        == (ROWS - 1, LOADED, REJECTED - 1, BLANK_LINES, DUPLICATES)
    assert read_rejects(tmp_path / "split.csv") == read_rejects(tmp_path / "whole.csv")
    assert entries_of(idx) == entries_of(idx_whole)


def test_long_record_across_reads(tmp_path, monkeypatch, load, write, read_rejects):
    """The 1 MiB record split over many reads: rejected once, the lines after it counted."""
    monkeypatch.setattr(loader_module, "CHUNK", 65_537)
    path = write(tmp_path / "corpus.csv", corpus())
    _, report = load([path], tmp_path)
    assert (report.rows, report.loaded, report.rejected) == (ROWS, LOADED, REJECTED)
    assert_corpus_rejects(read_rejects(tmp_path / "rejects.csv"), path)


def test_record_length_limit_is_65536_bytes(tmp_path, load, write, read_rejects):
    """65536 bytes (without the line end) load, 65537 do not, quoted or not, with LF, CRLF or
    at the end of the file; the next line is read from its start either way."""
    head = b"number,sender,at\n"
    for size in (65535, 65536, 65537):
        plain = b"13800000001,jd," + b" " * (size - 15)
        quoted = b'13800000001,jd,"' + b" " * (size - 17) + b'"'
        stray = b'13800000001,"jd"' + b"x" * (size - 17) + b","  # text after a quote: bad
        for record in (plain, quoted, stray):
            assert len(record) == size
            if size > 65536:
                expected = [(2, "record longer than 65536 bytes")]
            elif record is stray:
                expected = [(2, "text after a closing quote")]
            else:
                expected = []
            expected.append((4, "'1' is too short"))  # the line after it is counted right
            for ending in (b"\n", b"\r\n"):
                path = write(tmp_path / "limit.csv",
                             head + record + ending + b"13800000002,jd,\n1,jd,\n")
                idx, report = load([path], tmp_path)
                rejects = read_rejects(tmp_path / "rejects.csv")
                assert [(int(r["line"]), r["reason"]) for r in rejects] == expected, (
                    size, record[:20], ending)
                assert (report.rows, report.loaded) == (3, 3 - len(expected))
                assert idx.check("jd", "13800000002") is Scope.SENDER
                assert idx.check("jd", "13800000001") is (
                    Scope.SENDER if len(expected) == 1 else Scope.NONE)
            path = write(tmp_path / "limit.csv", head + record)  # no line end at all
            idx, report = load([path], tmp_path)
            assert (report.rows, report.loaded) == (1, 2 - len(expected))


def test_nul_and_bad_bytes_in_optional_columns(tmp_path, load, write, read_rejects):
    data = (b"number,sender,category,source\n"
            b"13800000001,jd,market\x00ing,\n"
            b"13800000002,jd,,ap\xffi\n"
            b"13800000003,jd,notification,api\n")
    path = write(tmp_path / "a.csv", data)
    idx, report = load([path], tmp_path)
    assert (report.rows, report.loaded, report.rejected) == (3, 1, 2)
    rejects = read_rejects(tmp_path / "rejects.csv")
    assert [(r["line"], r["column"], r["reason"]) for r in rejects] == [
        ("2", "category", "a NUL byte"), ("3", "source", "is not valid UTF-8")]
    assert idx.check("jd", "13800000003", "notification") is Scope.SENDER


def test_rejected_row_times_are_not_the_newest_event(tmp_path, load, write):
    path = write(tmp_path / "a.csv", b"number,sender,at,source\n"
                 b"13800000001,jd,2030-01-01T00:00:00Z,sms\n"
                 b"13800000002,jd,2026-01-01T00:00:00Z,api\n"
                 b"13800000003,jd,2031-01-01T00:00:00Z,\n"
                 b"13800000004,,2032-01-01T00:00:00Z,\n")
    _, report = load([path], tmp_path)
    assert (report.loaded, report.rejected) == (2, 2)
    assert report.newest_event == "2031-01-01T00:00:00+00:00"


# -- compressed files, entities ---------------------------------------------------------------


def test_truncated_or_corrupt_compressed_files_are_refused(tmp_path, load, write):
    """A compressed file cut short is refused, never loaded as a shorter list."""
    rows = 200_000
    data = b"number,sender\n" + b"".join(b"%d,jd\n" % (13800000000 + i) for i in range(rows))
    gz, zs = gzip.compress(data, 1), zstandard.ZstdCompressor().compress(data)
    z = zstandard.ZstdCompressor()
    cases = {
        "cut.gz": gz[: len(gz) * 9 // 10],
        "one-byte-short.gz": gz[:-1],
        "magic-only.gz": gz[:2],
        "corrupt.gz": gz[:20] + bytes(64) + gz[84:],
        "garbage-after.gz": gz + b"garbage!",
        "cut.zst": zs[: len(zs) * 9 // 10],
        "one-byte-short.zst": zs[:-1],
        "magic-only.zst": zs[:4],
        "no-size-cut.zst": zstd_streamed(data)[:-3],
        "second-frame-cut.zst": z.compress(data[:1000]) + z.compress(data)[:100],
        "corrupt.zst": zs[:20] + bytes(64) + zs[84:],
        "garbage-after.zst": zs + b"garbage!",
    }
    for name, blob in cases.items():
        path = write(tmp_path / name, blob)
        with pytest.raises(SnapshotRefused) as info:
            load([path], tmp_path)
        assert info.value.report.refused.startswith(f"cannot read: {path}: "), name
    # the entities file too
    snapshot = write(tmp_path / "ok.csv", b"number,sender\n13800000001,jd\n")
    entities = b"sender,entity\n" + b"".join(b"s%d,e\n" % i for i in range(50_000))
    for name, blob in (("cut-entities.gz", gzip.compress(entities)[:-10]),
                       ("cut-entities.zst", zstandard.ZstdCompressor().compress(entities)[:-10])):
        with pytest.raises(SnapshotRefused, match="cannot read"):
            load([snapshot], tmp_path, entities=write(tmp_path / name, blob))
    _, report = load([snapshot], tmp_path, entities=write(
        tmp_path / "entities.zst", zstandard.ZstdCompressor().compress(entities)))
    assert report.entity_links == 50_000


def test_entities_make_entity_opt_outs_cover_senders(tmp_path, load, write, read_rejects):
    path = write(tmp_path / "corpus.csv", corpus())
    entities = write(tmp_path / "entities.csv", BOM + (
        "sender,entity\r\n"
        "京东,京东集团\r\n"
        "【京东超市】,京东集团\r\n"
        '"京东 ""金融""\n",京东集团\r\n'  # a quoted sender over two lines (4-5)
        "bad\udcff,京东集团\r\n"  # 6: not UTF-8
        ",京东集团\r\n"  # 7: no sender
        "a,b,c\r\n"  # 8
        "\r\n"
        "美团,\r\n"  # 10: no entity
        "淘宝网,淘宝\r\n"
    ).encode("utf-8", "surrogateescape"))
    idx, report = load([path], tmp_path, entities=entities)
    assert report.entity_links == 4
    assert (report.rows, report.loaded, report.rejected, report.entries_after) == (
        ROWS, LOADED, REJECTED, ENTRIES)
    rejects = read_rejects(tmp_path / "rejects.csv")
    entity_rejects = [(int(r["line"]), r["column"], r["reason"]) for r in rejects
                      if r["file"] == str(entities)]
    assert [r[:2] for r in entity_rejects] == [(6, "sender"), (7, "sender"), (8, ""),
                                              (10, "entity")]
    assert entity_rejects[0][2] == "is not valid UTF-8"
    assert "is empty" in entity_rejects[1][2] and "is empty" in entity_rejects[3][2]
    assert entity_rejects[2][2] == "3 fields; the header has 2"
    assert_corpus_rejects([r for r in rejects if r["file"] == str(path)], path)

    # number 18 is opted out of the entity 京东集团: every sender of it is covered
    for sender in ("京东", "【京东】", "京东超市", "【京东超市】", '京东 "金融"'):
        assert idx.check(sender, "13800000018") is Scope.ENTITY, sender
        assert idx.check(sender, "13800000018", "notification") is Scope.ENTITY, sender
    assert idx.check("淘宝网", "13800000018") is Scope.NONE
    assert idx.check("京东", "13800000001") is Scope.SENDER  # the most specific scope
    assert idx.check("京东超市", "13800000001") is Scope.NONE
    assert idx.check("京东超市", "13800000019") is Scope.GLOBAL
    assert idx.entities()["京东超市"] == "京东集团"


# -- the command --------------------------------------------------------------------------------


def anning(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anning.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_rejects_file_ratio_empty_input_and_bad_arguments(tmp_path, write, read_rejects):
    data = tmp_path / "data"
    corpus_path = write(tmp_path / "corpus.csv", corpus())
    done = anning("load", corpus_path, "--data", data, "--as-of", AS_OF, "--json")
    assert done.returncode == 4
    report = json.loads(done.stdout)
    assert (report["rows"], report["rejected"]) == (ROWS, REJECTED)
    assert report["refused"].startswith(f"{REJECTED} of {ROWS} rows rejected")
    assert report["rejects_file"] == str(data / "rejects.csv")
    assert_corpus_rejects(read_rejects(data / "rejects.csv"), corpus_path)
    assert not (data / SNAPSHOT_NAME).exists()

    rejects = tmp_path / "out" / "bad-rows.csv"
    done = anning("load", corpus_path, "--data", data, "--as-of", AS_OF, "--max-reject-ratio",
                  "0.6", "--rejects", rejects, "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"rows read: {ROWS}; loaded: {LOADED}; duplicates folded: {DUPLICATES}; " \
           f"rejected: {REJECTED}; blank lines: {BLANK_LINES}" in done.stdout
    assert f"entries before: none; after: {ENTRIES}" in done.stdout
    assert_corpus_rejects(read_rejects(rejects), corpus_path)
    before = (data / SNAPSHOT_NAME).read_bytes()

    for content, refusal in ((b"number,sender\r\n", "empty input: no data rows"),
                             (b"", "empty input (no header row)")):
        done = anning("load", write(tmp_path / "empty.csv", content), "--data", data,
                      "--as-of", AS_OF, "--quiet", "--allow-shrink")
        assert done.returncode == 4
        assert refusal in done.stderr
        assert (data / SNAPSHOT_NAME).read_bytes() == before

    done = anning("load", corpus_path, "--data", data, "--as-of", "yesterday", "--quiet")
    assert done.returncode == 4
    assert ("anning: load refused, the current snapshot is untouched: as_of: 'yesterday' is "
            "not a time") in done.stderr
    assert (data / SNAPSHOT_NAME).read_bytes() == before

    for args in (("--max-reject-ratio", "lots"), ("--categories", "marketing,all"), ()):
        done = anning("load", *((corpus_path,) if args else ()), "--data", data, *args)
        assert done.returncode == 2, (args, done.stderr)
    assert (data / SNAPSHOT_NAME).read_bytes() == before

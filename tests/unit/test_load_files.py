"""The nightly snapshot load (SPEC §5): headers and empty input, several files, and every guard
(reject ratio, as_of, shrink) through the library, the engine and the `anning load` command."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from anning import Scope, read_snapshot
from anning.engine import Engine
from anning.load import LoadOptions, SnapshotRefused, iso, parse_time, read_snapshot_files
from anning.storage.layout import SNAPSHOT_NAME

AS_OF = "2026-11-01T00:00:00+08:00"
BOM = b"\xef\xbb\xbf"


# -- headers and empty input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (b"", "empty input (no header row)"),
        (BOM, "empty input (no header row)"),
        (b"\r\n\n", "empty input (no header row)"),
        (b"number,sender\n", "empty input: no data rows"),
        (BOM + b"number,sender\r\n\r\n\n", "empty input: no data rows"),
        (b"number\tsender", "empty input: no data rows"),
        (b"number,sender,phone\n13800000001,jd,x\n", "unknown column 'phone'"),
        (b"number,sender,\n13800000001,jd,\n", "unknown column ''"),
        (b"number,category\n13800000001,all\n", "missing column 'sender'"),
        (b"sender,at\njd,\n", "missing column 'number'"),
        (b"number,sender,Number\n1,2,3\n", "a column is named twice"),
        (b"numb\xffer,sender\n1,2\n", "the header row is not UTF-8"),
        (b"number,sender\r13800000001,jd\r", "the header row cannot be read"),
    ],
)
def test_headers_and_empty_input_are_refused(tmp_path, data, refusal, load, write):
    path = write(tmp_path / "in.csv", data)
    with pytest.raises(SnapshotRefused) as info:
        load([path], tmp_path)
    assert refusal in info.value.report.refused
    assert info.value.report.refused == str(info.value)


def test_header_names_any_order_case_and_quotes(tmp_path, load, write):
    path = write(tmp_path / "a.tsv", BOM + b'"Source"\t SENDER \tnumber\r\napi\t*\t13800000001\r\n')
    idx, report = load([path], tmp_path)
    assert (report.rows, report.loaded) == (1, 1)
    assert idx.check("x", "13800000001") is Scope.GLOBAL


# -- several files, entities -----------------------------------------------------------------


def test_several_files_in_one_load(tmp_path, load, write, read_rejects):
    a = write(tmp_path / "a.csv", b"number,sender\n13800000001,jd\n13800000002,j\xffd\n")
    b = write(tmp_path / "b.tsv.gz", gzip.compress(
        "sender\tcategory\tnumber\r\njd\tnotification\t13800000001\r\n\r\n淘宝\t\t13800000003\r\n"
        "淘宝\tall\t13800000003\tx\r\n".encode()))
    c = write(tmp_path / "c.csv", BOM + b"number,sender\r\n")  # header only: nothing to add
    d = write(tmp_path / "d.zst", zstandard.ZstdCompressor().compress(
        b'number,sender,at\n"13800000004",*,1762000000\n13800000001,jd,\n'))
    idx, report = load([a, b, c, d], tmp_path)
    assert report.files == [str(p) for p in (a, b, c, d)]
    assert (report.rows, report.loaded, report.rejected, report.blank_lines,
            report.duplicates, report.entries_after) == (7, 5, 2, 1, 2, 3)
    rejects = read_rejects(tmp_path / "rejects.csv")
    assert [(r["file"], r["line"], r["column"]) for r in rejects] == [
        (str(a), "3", "sender"), (str(b), "5", "")]  # lines counted in each file
    assert "4 fields; the header has 3" in rejects[1]["reason"]
    assert idx.mask("13800000001", "jd") == 0b11
    assert idx.check("淘宝", "13800000003") is Scope.SENDER
    assert idx.check("anyone", "13800000004") is Scope.GLOBAL
    assert report.newest_event == iso(1762000000 * 1000)


def test_rows_parsed_with_python_keep_their_lines_past_the_parsers_batch(tmp_path, load, write,
                                                                        read_rejects):
    """The parser sets aside the rows it needs Python for (a sender seen for the first time,
    a bad row) and parses them after the others, SLOW_MAX (4,096) at a time: 10,000 senders
    each first seen, a bad number every seventh row and full-width digits every eleventh, in
    one chunk, load as a row at a time would."""
    lines = [b"number,sender"]
    bad = []
    for i in range(10_000):
        number = f"138{i:08d}"
        if i % 7 == 3:
            number = "13x" + number[3:]
            bad.append(i + 2)  # the line: after the header, counted from 1
        elif i % 11 == 5:
            number = number.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
        lines.append(f"{number},sender{i % 5000}".encode())
    path = write(tmp_path / "many.csv", b"\n".join(lines) + b"\n")
    idx, report = load([path], tmp_path)
    assert (report.rows, report.rejected, report.loaded) == (10_000, len(bad), 10_000 - len(bad))
    assert [int(r["line"]) for r in read_rejects(tmp_path / "rejects.csv")] == bad
    for i in range(0, 10_000, 97):
        want = Scope.NONE if i + 2 in bad else Scope.SENDER
        assert idx.check(f"sender{i % 5000}", f"138{i:08d}") is want, i
        assert idx.check(f"sender{(i + 1) % 5000}", f"138{i:08d}") is Scope.NONE


def test_compressed_files_in_pieces_load_whole(tmp_path, load, write):
    """Several zstd frames (pzstd, `cat a.zst b.zst`) or gzip members: every one is read."""
    rows = 30_000
    data = b"number,sender\n" + b"".join(b"%d,jd\n" % (13800000000 + i) for i in range(rows))
    cut = data.index(b"\n", len(data) // 3) + 1
    z = zstandard.ZstdCompressor()
    for name, blob in (
        ("frames.zst", z.compress(data[:cut]) + z.compress(data[cut:])),
        ("members.gz", gzip.compress(data[:cut]) + gzip.compress(data[cut:])),
    ):
        idx, report = load([write(tmp_path / name, blob)], tmp_path)
        assert (report.rows, report.loaded, len(idx)) == (rows, rows, rows), name
        assert idx.check("jd", str(13800000000 + rows - 1)) is Scope.SENDER


def test_one_empty_file_refuses_the_load_and_names_it(tmp_path, load, write):
    a = write(tmp_path / "a.csv", b"number,sender\n13800000001,jd\n")
    empty = write(tmp_path / "empty.csv", b"")
    with pytest.raises(SnapshotRefused, match=r"empty\.csv: empty input"):
        load([a, empty], tmp_path)


def test_entities_file_header_is_checked(tmp_path, load, write):
    path = write(tmp_path / "a.csv", b"number,sender\n13800000001,jd\n")
    entities = write(tmp_path / "e.csv", b"entity,sender\ngrp,jd\n")
    with pytest.raises(SnapshotRefused, match="the header must be `sender,entity`"):
        load([path], tmp_path, entities=entities)


# -- guards ----------------------------------------------------------------------------------


def numbers_file(path: Path, count: int, bad: int = 0, start: int = 13900000000) -> Path:
    lines = ["number,sender,category"]
    lines += [f"{start + i},shop{i % 7},{('marketing', 'all')[i % 2]}" for i in range(count)]
    lines += [f"bad{i},shop" for i in range(bad)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reject_ratio_just_under_and_just_over(tmp_path, load):
    # 2,000 rows at the default 0.1%: 2 rejects are at the limit, 3 are past it
    at_limit = numbers_file(tmp_path / "at.csv", 1998, bad=2)
    idx, report = load([at_limit], tmp_path, max_reject_ratio=0.001)
    assert (report.rows, report.rejected, len(idx)) == (2000, 2, 1998)
    over = numbers_file(tmp_path / "over.csv", 1997, bad=3)
    with pytest.raises(SnapshotRefused) as info:
        load([over], tmp_path, max_reject_ratio=0.001)
    assert info.value.report.refused == (
        "3 of 2,000 rows rejected (0.1500%), more than the limit 0.1000%")
    assert (info.value.report.rows, info.value.report.rejected) == (2000, 3)
    assert info.value.report.entries_after is None
    # another limit: 1% of 1,000 rows
    idx, report = load([numbers_file(tmp_path / "a.csv", 990, bad=10)], tmp_path,
                       max_reject_ratio=0.01)
    assert report.rejected == 10
    with pytest.raises(SnapshotRefused, match="11 of 1,000 rows rejected"):
        load([numbers_file(tmp_path / "b.csv", 989, bad=11)], tmp_path, max_reject_ratio=0.01)
    # no rejects allowed at all
    with pytest.raises(SnapshotRefused, match="1 of 1,000 rows rejected"):
        load([numbers_file(tmp_path / "c.csv", 999, bad=1)], tmp_path, max_reject_ratio=0)


def test_as_of_is_the_flag_else_the_newest_file_time(tmp_path):
    a = numbers_file(tmp_path / "a.csv", 3)
    b = numbers_file(tmp_path / "b.csv", 3, start=13700000000)
    os.utime(a, (1_763_000_000, 1_763_000_000))
    os.utime(b, (1_763_000_500, 1_763_000_500))
    idx, report = read_snapshot_files([a, b], LoadOptions())
    assert report.as_of == iso(1_763_000_500_000)
    assert idx.meta["as_of_ms"] == 1_763_000_500_000
    for text, ms in (("2026-11-01", parse_time("2026-11-01T00:00:00+08:00")),
                     ("1762000000", 1_762_000_000_000),
                     ("1762000000123", 1_762_000_000_123),
                     ("2026-11-01T00:00:00Z", 1_793_491_200_000)):
        idx, report = read_snapshot_files([a], LoadOptions(as_of=text))
        assert idx.meta["as_of_ms"] == ms, text
        assert report.as_of == iso(ms)


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "2026-11-01T25:00:00", " "])
def test_bad_as_of_is_refused(tmp_path, bad):
    a = numbers_file(tmp_path / "a.csv", 3)
    with pytest.raises(SnapshotRefused, match=r"as_of: .* is not a time"):
        read_snapshot_files([a], LoadOptions(as_of=bad))


def test_shrink_guard_against_the_snapshot_on_disk(tmp_path):
    data = tmp_path / "data"
    anx = data / SNAPSHOT_NAME
    report = Engine(data_dir=data).load_snapshot(
        [numbers_file(tmp_path / "100.csv", 100)], LoadOptions(as_of=AS_OF))
    assert (report.entries_before, report.entries_after) == (None, 100)
    before = anx.read_bytes()

    # a new engine (a restart) compares with the file: 79 of 100 is more than 20% less
    engine = Engine(data_dir=data)
    with pytest.raises(SnapshotRefused) as info:
        engine.load_snapshot([numbers_file(tmp_path / "79.csv", 79)], LoadOptions(as_of=AS_OF))
    refused = info.value.report
    assert (refused.entries_before, refused.entries_after) == (100, 79)
    assert refused.refused == ("the list would shrink from 100 to 79 entries (21.0%), more than "
                               "the limit 20% (--allow-shrink to force)")
    assert anx.read_bytes() == before
    assert not engine.ready
    assert [p.name for p in data.iterdir() if p.name.startswith(".")] == []  # no temporary

    # exactly at the limit loads
    report = Engine(data_dir=data).load_snapshot(
        [numbers_file(tmp_path / "80.csv", 80)], LoadOptions(as_of=AS_OF))
    assert (report.entries_before, report.entries_after) == (100, 80)
    assert len(read_snapshot(anx)) == 80

    # forced, or with a wider limit
    engine = Engine(data_dir=data)
    with pytest.raises(SnapshotRefused):
        engine.load_snapshot([numbers_file(tmp_path / "10.csv", 10)], LoadOptions(as_of=AS_OF))
    report = engine.load_snapshot([tmp_path / "10.csv"], LoadOptions(as_of=AS_OF,
                                                                     allow_shrink=True))
    assert (report.entries_before, report.entries_after) == (80, 10)
    assert len(read_snapshot(anx)) == 10
    report = engine.load_snapshot([numbers_file(tmp_path / "6.csv", 6)],
                                  LoadOptions(as_of=AS_OF, max_shrink=0.5))
    assert (report.entries_before, report.entries_after) == (10, 6)


def test_shrink_guard_against_the_serving_list(tmp_path):
    engine = Engine()
    engine.load_snapshot([numbers_file(tmp_path / "100.csv", 100)], LoadOptions(as_of=AS_OF))
    serving = engine.index
    with pytest.raises(SnapshotRefused, match="shrink from 100 to 50"):
        engine.load_snapshot([numbers_file(tmp_path / "50.csv", 50)], LoadOptions(as_of=AS_OF))
    assert engine.index is serving
    assert engine.check("shop1", "13900000099") is Scope.SENDER
    # duplicates folded do not count: the list is its entries, not its rows
    doubled = tmp_path / "doubled.csv"
    doubled.write_text("number,sender\n" + "13900000000,shop0\n" * 100, encoding="utf-8")
    with pytest.raises(SnapshotRefused, match="shrink from 100 to 1 entries"):
        engine.load_snapshot([doubled], LoadOptions(as_of=AS_OF))


def test_refusals_leave_the_serving_list_and_file_alone(tmp_path, write):
    data = tmp_path / "data"
    engine = Engine(data_dir=data)
    engine.load_snapshot([numbers_file(tmp_path / "100.csv", 100)], LoadOptions(as_of=AS_OF))
    before = (data / SNAPSHOT_NAME).read_bytes()
    serving = engine.index
    bad = [
        ([write(tmp_path / "header.csv", b"number,sender\n")], {}),
        ([numbers_file(tmp_path / "rejects.csv", 90, bad=10)], {}),
        ([tmp_path / "100.csv"], {"as_of": "not a time"}),
        ([tmp_path / "missing.csv"], {}),
    ]
    for paths, options in bad:
        with pytest.raises(SnapshotRefused):
            engine.load_snapshot(paths, LoadOptions(**{"as_of": AS_OF, **options}))
        assert engine.index is serving
        assert (data / SNAPSHOT_NAME).read_bytes() == before


# -- the command -----------------------------------------------------------------------------


def anning(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anning.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


REPORT_FIELDS = {"files", "rows", "loaded", "duplicates", "rejected", "rejected_by_reason",
                 "blank_lines", "senders", "entity_links", "entries_before", "entries_after",
                 "as_of", "newest_event", "seconds", "rejects_file", "refused",
                 "events_through", "events_folded"}


def test_cli_shrink_refusal_allow_shrink_and_json(tmp_path):
    data = tmp_path / "data"
    anx = data / SNAPSHOT_NAME
    done = anning("load", numbers_file(tmp_path / "100.csv", 100), "--data", data, "--as-of",
                  AS_OF, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == REPORT_FIELDS
    assert report["files"] == [str(tmp_path / "100.csv")]
    assert (report["rows"], report["loaded"], report["rejected"], report["duplicates"],
            report["entries_before"], report["entries_after"]) == (100, 100, 0, 0, None, 100)
    assert report["senders"] == 7
    assert report["as_of"] == "2026-10-31T16:00:00+00:00"
    assert report["refused"] is None and report["rejects_file"] is None
    before = anx.read_bytes()

    small = numbers_file(tmp_path / "79.csv", 79)
    done = anning("load", small, "--data", data, "--as-of", AS_OF, "--quiet")
    assert done.returncode == 4
    message = ("anning: load refused, the current snapshot is untouched: the list would shrink "
               "from 100 to 79 entries (21.0%), more than the limit 20% (--allow-shrink to "
               "force)")
    assert message in done.stderr
    assert "REFUSED: the list would shrink" in done.stderr
    assert done.stdout == ""
    assert anx.read_bytes() == before

    done = anning("load", small, "--data", data, "--as-of", AS_OF, "--json")
    assert done.returncode == 4
    report = json.loads(done.stdout)
    assert set(report) == REPORT_FIELDS
    assert (report["entries_before"], report["entries_after"]) == (100, 79)
    assert report["refused"].startswith("the list would shrink from 100 to 79")
    assert message in done.stderr
    assert anx.read_bytes() == before

    check = anning("check", "shop1", "13900000001", "--data", data, "--json")
    assert check.returncode == 1 and json.loads(check.stdout)["scope"] == "sender"

    done = anning("load", small, "--data", data, "--as-of", AS_OF, "--max-shrink", "0.25",
                  "--quiet")
    assert done.returncode == 0, done.stderr
    assert "entries before: 100; after: 79" in done.stdout
    done = anning("load", numbers_file(tmp_path / "5.csv", 5), "--data", data, "--as-of",
                  AS_OF, "--allow-shrink", "--json")
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["entries_before"], json.loads(done.stdout)["entries_after"]) \
        == (79, 5)
    assert len(read_snapshot(anx)) == 5
    check = anning("check", "shop1", "13900000078", "--data", data, "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["scope"] == "none"



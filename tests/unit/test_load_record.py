"""How the last snapshot load ended (anning.storage.loadrecord), recorded by every load, cron's
and the engine's alike, so that a server reports a refusal it did not make itself."""

from __future__ import annotations

from anning.engine import Engine
from anning.engine.offline import load_into_data_dir
from anning.load import LoadOptions, SnapshotRefused
from anning.storage.layout import DataDir
from anning.storage.loadrecord import read_load_record


def _csv(path, rows):
    path.write_text("number,sender\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    return path


def test_cron_loads_record_their_outcome_and_a_server_reports_it(tmp_path):
    data = DataDir(tmp_path / "data")
    good = _csv(tmp_path / "a.csv", [f"1380000{i:04d},shop" for i in range(100)])
    assert read_load_record(data) is None
    load_into_data_dir(data.path, [good], LoadOptions())
    record = read_load_record(data)
    assert record is not None and record.refused == "" and record.entries == 100

    engine = Engine(data_dir=data.path)
    assert engine.open_snapshot() and engine.status().last_refusal == ""

    small = _csv(tmp_path / "b.csv", ["13800000001,shop"])
    try:
        load_into_data_dir(data.path, [small], LoadOptions())
        raise AssertionError("a list 99% smaller was loaded")
    except SnapshotRefused as refused:
        reason = refused.report.refused
    record = read_load_record(data)
    assert record is not None and record.refused == reason and "shrink" in reason
    assert record.entries is None
    # the serving engine, which never saw that load, says so (read again as the file changed)
    assert engine.status().last_refusal == reason

    engine.load_snapshot([good], LoadOptions())  # a good load through the engine clears it
    assert engine.status().last_refusal == ""
    assert read_load_record(data).refused == ""  # type: ignore[union-attr]


def test_a_damaged_record_is_ignored(tmp_path):
    data = DataDir(tmp_path)
    for garbage in (b"", b"{", b"[]", b'{"version": 99, "at": 1, "refused": ""}',
                    b'{"version": 1, "at": "x", "refused": ""}', b"\xff\xfe"):
        data.last_load.write_bytes(garbage)
        assert read_load_record(data) is None, garbage

"""The change feed hands out only what is durable (anning.storage.wal.durable): a record whose
fsync failed is in the file, and readable, until a power loss takes it away and its sequence
goes to another event; upstream must never have been given the first one."""

from __future__ import annotations

import errno

import pytest

from anning.engine import Engine
from anning.errors import WritesStopped
from anning.model.events import OPT_IN, OPT_OUT, Event
from anning.storage.layout import DataDir
from anning.storage.local import LocalFeed
from anning.storage.wal.durable import DurableMark, read_durable
from anning.testing.crashio import CrashIO
from anning.testing.server import write_main_snapshot

AT = 1_796_525_401_335


def event(number: int, kind: int = OPT_OUT) -> list[Event]:
    return [Event(number, "京东", 1, kind, AT, "api")]


def feed_of(data: DataDir) -> list[tuple[int, int, int]]:
    got = LocalFeed(data, 0).read(100)
    return list(zip(got.sequence.tolist(), got.columns["number"].tolist(),
                    got.columns["kind"].tolist(), strict=True))


def test_an_event_whose_fsync_failed_is_never_handed_out(tmp_path):
    data = tmp_path / "data"
    write_main_snapshot(data)
    io = CrashIO()
    engine = Engine(data_dir=data, io=io)
    engine.open_snapshot()
    assert engine.apply(event(8613900000001)) == 1
    io.fail_fsync_next(1, errno.EIO)
    with pytest.raises(WritesStopped):
        engine.apply(event(8613900000002))
    # the record is in the file (its outcome unknown), the feed stops before it
    assert feed_of(DataDir(data)) == [(1, 8613900000001, OPT_OUT)]
    io.crash()  # ... and the power goes: it was never durable
    engine = Engine(data_dir=data, io=CrashIO())
    engine.open_snapshot()
    assert engine.apply(event(8613900000003, OPT_IN)) == 2  # its sequence, given again
    assert feed_of(DataDir(data)) == [(1, 8613900000001, OPT_OUT), (2, 8613900000003, OPT_IN)]


def test_what_a_killed_writer_left_is_handed_out_once_a_restart_has_synced_it(tmp_path):
    data = tmp_path / "data"
    write_main_snapshot(data)
    engine = Engine(data_dir=data)
    engine.open_snapshot()
    engine.apply(event(8613900000001))
    (DataDir(data).path / "events.durable").write_bytes(bytes(8))  # as if never marked
    assert feed_of(DataDir(data)) == []
    Engine(data_dir=data)  # a restart's recovery syncs the log and marks it
    assert feed_of(DataDir(data)) == [(1, 8613900000001, OPT_OUT)]


def test_the_mark_only_rises_whichever_worker_marks_last(tmp_path):
    """Two workers' fsyncs end in either order: the one that made less durable marking last
    must not pull the mark back below the other's (the feed stopped short forever; CI)."""
    ahead, behind = DurableMark(tmp_path), DurableMark(tmp_path)
    ahead.set(8641)
    behind.set(8601)
    assert read_durable(tmp_path) == 8641
    behind.set(8642)
    assert read_durable(tmp_path) == 8642
    ahead.close()
    behind.close()

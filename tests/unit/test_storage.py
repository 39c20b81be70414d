"""The storage layer's pieces: the one record codec and its version check, the data
directory's temporary files, a log reopened after a fork, and the offline tools that open only
what they need."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import zlib
from dataclasses import replace

import msgpack
import pytest

import anning.storage.snapshot as snapshot_module
from anning.engine import Engine
from anning.engine.offline import checkpoint_data_dir, load_into_data_dir
from anning.errors import CorruptLog
from anning.index import SuppressionIndex
from anning.load import LoadOptions
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.storage import records
from anning.storage.checkpoint import read_checkpoint
from anning.storage.layout import DataDir, segment_name, sweep_temporaries
from anning.storage.snapshot import snapshot_summary
from anning.storage.wal import EventLog
from anning.testing.scenario import AS_OF_MS, BASE, INDEX, at, engine_on, opt_outs

EVENTS = [Event(BASE + 1, "s1", 1, OPT_OUT, at(1), "api"),
          Event(BASE + 2, "entity:e", 0xFF, OPT_IN, at(2), "reply"),
          Event(BASE + 3, "", 0, REASSIGN, at(3), "regulator")]


def _payload(framed: bytes) -> object:
    return msgpack.unpackb(framed[records.FRAME.size:], raw=False, use_list=False)


@pytest.mark.parametrize("events", [EVENTS[:1], EVENTS[1:2], EVENTS])
def test_a_write_is_one_record_that_decodes_to_its_events(events):
    framed = records.stamp(records.encode_events(events), 41)
    write = records.decode(_payload(framed))
    assert write.first_sequence == 41
    assert [records.event_of(f) for f in write.events] == events


def test_a_stamp_changes_only_the_sequence_and_keeps_the_frame_whole():
    framed = records.encode_events(EVENTS)
    for sequence in (1, 2**32 + 5, 2**63):
        stamped = records.stamp(framed, sequence)
        assert len(stamped) == len(framed)
        length, crc = records.FRAME.unpack_from(stamped)
        assert length == len(stamped) - records.FRAME.size
        assert crc == zlib.crc32(stamped[records.FRAME.size:])
        assert records.decode(_payload(stamped)).first_sequence == sequence


def test_a_seal_and_a_header_decode_to_where_the_sequences_go_on():
    assert records.decode(_payload(records.encode_seal(7, 42))) == records.Seal(7, 42)
    assert records.decode(_payload(records.encode_header(43))) == records.Header(43)
    # what earlier versions wrote is still read: a seal without a sequence, one event, a batch
    legacy = records.decode(msgpack.unpackb(msgpack.packb([0, 7])))
    assert legacy == records.Seal(7, 0)
    one = records.decode([1, *records.fields_of(EVENTS[0])])
    assert one == records.Write(0, [records.fields_of(EVENTS[0])])
    batch = records.decode([2, [list(records.fields_of(e)) for e in EVENTS]])
    assert batch == records.Write(0, [records.fields_of(e) for e in EVENTS])


@pytest.mark.parametrize("value", [
    None, 5, "text", (), (9, 1, 2), (1, 1, 2, 3), (2, 5), (2, [(1, 2)]), (0, "next"),
    (3, 0, [(OPT_OUT, BASE, "s1", 1, 1, "api")]), (3, 5, []), (3, 5), (4, 0), (4, "x"),
    (1, OPT_OUT, BASE, "s1", 1, at(1), 7), (2, [(OPT_OUT, BASE, 3, 1, at(1), "api")]),
    ("1", OPT_OUT, BASE, "s1", 1, at(1), "api"),
])
def test_garbage_payloads_are_no_records(value):
    with pytest.raises(records.RecordError):
        records.decode(value)


def test_a_record_of_an_unknown_version_stops_start_up_naming_file_and_offset(tmp_path):
    """One codec reads the log, with one version check: a record this build does not know is
    corruption (start-up stops), never events guessed from its fields."""
    engine = engine_on(tmp_path)
    opt_outs(engine, [BASE + 2])
    offset = (tmp_path / segment_name(1)).stat().st_size
    strange = records.frame(msgpack.packb([9, OPT_OUT, BASE + 4, "s3", 1, at(5), "api"]))
    good = records.encode_events([Event(BASE + 6, "s3", 1, OPT_OUT, at(6), "api")])
    with open(tmp_path / segment_name(1), "ab") as f:
        f.write(strange + good)
    engine.source.close()
    with pytest.raises(CorruptLog, match=rf"{segment_name(1)}: record at offset {offset}: "
                                         "record version 9"):
        engine_on(tmp_path)


def _dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_temporaries_of_dead_writers_are_swept_by_a_checkpoint(tmp_path):
    """A checkpoint killed while writing leaves `.events.ckpt.tmpPID` (as big as the
    checkpoint): the next checkpoint removes it; a live writer's is left alone."""
    stale = tmp_path / f".events.ckpt.tmp{_dead_pid()}"
    stale.write_bytes(b"x" * 100)
    live = tmp_path / f".events.ckpt.tmp{os.getppid()}"
    live.write_bytes(b"y")
    engine = engine_on(tmp_path)
    opt_outs(engine, [BASE + 2])
    assert engine.checkpoint() is not None
    assert not stale.exists() and live.exists()
    assert sweep_temporaries(tmp_path) == []


def test_a_log_reopened_after_a_fork_is_built_whole(tmp_path):
    """A worker's log is made by the constructor from the parent's position, never field by
    field: every part a new log has, a reopened one has too, at the same position."""
    log = EventLog(tmp_path)
    log.append([records.encode_events(EVENTS[:1])], [1])
    log.tail()
    reopened = log.reopen()
    fresh = EventLog(tmp_path)
    for got, want in ((reopened, fresh), (reopened.writer, fresh.writer),
                      (reopened.reader, fresh.reader)):
        assert set(vars(got)) == set(vars(want)), type(got)
    assert reopened.position() == log.position()
    assert reopened.writer.segment.fd != log.writer.segment.fd  # descriptors of its own
    log.append([records.encode_events(EVENTS[1:2])], [1])
    assert reopened.tail() == [replace(EVENTS[1], sequence=2)]


def test_a_log_opened_while_another_process_starts_a_segment_waits_for_its_header(tmp_path):
    """Another process's checkpoint rotates: it creates the next segment and writes its header
    while holding the current one's lock. A log opened in between (`anning checkpoint` beside a
    server) meets the new segment still empty; it must begin from the older one and move on
    under that lock, not give up on a segment "without its header record" (seen in CI)."""
    first = EventLog(tmp_path)
    first.append([records.encode_events(EVENTS[:1])], [1])
    rotator = os.open(tmp_path / segment_name(1), os.O_RDWR | os.O_APPEND)
    fcntl.flock(rotator, fcntl.LOCK_EX)
    started = os.open(tmp_path / segment_name(2), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    outcome: list[object] = []

    def checkpoint_beside() -> None:
        try:
            log = EventLog(tmp_path)
            outcome.append(log.rotate())
            outcome.append(log.append([records.encode_events(EVENTS[1:2])], [1]))
        except Exception as exc:
            outcome.append(exc)

    beside = threading.Thread(target=checkpoint_beside)
    beside.start()
    beside.join(0.3)
    assert not outcome, outcome  # waiting for the rotation under way, not failing
    os.write(started, records.encode_header(2))
    os.write(rotator, records.encode_seal(2, 2))
    fcntl.flock(rotator, fcntl.LOCK_UN)
    beside.join(10)
    os.close(rotator)
    os.close(started)
    assert outcome == [2, [2]]  # it sealed the new segment; its event has the next sequence
    assert EventLog(tmp_path).append([records.encode_events(EVENTS[2:])], [1]) == [3]


@pytest.fixture
def never_maps(monkeypatch):
    """The offline tools must not map a whole snapshot (nor replay the log to serve)."""
    def refuse(*_args: object) -> None:
        raise AssertionError("a whole snapshot was mapped")

    monkeypatch.setattr(snapshot_module, "read_snapshot", refuse)
    monkeypatch.setattr("anning.engine.engine.read_snapshot", refuse)
    monkeypatch.setattr("anning.engine.follower.read_snapshot", refuse)


def test_a_load_from_cron_reads_no_log_and_maps_nothing(tmp_path, never_maps):
    """`anning load` learns the old entry count from the snapshot's header, writes the new
    file, and is done: a write log it cannot read (a server's business) does not stop it."""
    data = DataDir(tmp_path / "data")
    data.path.mkdir()
    snapshot_module.write_snapshot(INDEX, data.snapshot)
    with open(data.path / segment_name(1), "wb") as f:  # a bad record before good ones
        f.write(b"\x05\x00\x00\x00garbage!" + records.encode_events(EVENTS[:1]))
    csv = tmp_path / "list.csv"
    csv.write_text("number,sender\n" + "".join(f"{BASE + i},s1\n" for i in range(4000)))
    report = load_into_data_dir(data.path, [csv], LoadOptions(as_of="2026-11-01T00:00:00Z"))
    assert report.entries_before == len(INDEX) and report.entries_after == 4000
    assert snapshot_summary(data.snapshot).entries == 4000


def test_a_checkpoint_from_the_command_line_maps_nothing(tmp_path, never_maps):
    """`anning checkpoint` needs the snapshot's watermark only: it reads the header and meta,
    and keeps the events past it (upstream has the others)."""
    data = DataDir(tmp_path)
    writer = Engine(data_dir=tmp_path)  # serves nothing: only writes
    writer.apply([Event(BASE + 2, "s3", 1, OPT_OUT, at(5), "api")])
    writer.apply([Event(BASE + 4, "s3", 1, OPT_OUT, AS_OF_MS - 1, "api")])
    numbers, scopes, masks = INDEX.entries()
    snapshot_module.write_snapshot(SuppressionIndex.build(
        numbers, [INDEX.scopes[s] for s in scopes], masks,
        meta={"as_of_ms": AS_OF_MS, "events_through": 1}), data.snapshot)
    report = checkpoint_data_dir(tmp_path)
    assert report is not None and report.rows == 1  # the event upstream has is left out
    (kept,) = read_checkpoint(data.checkpoint).events.events()
    assert (kept.sequence, kept.number) == (2, BASE + 4)

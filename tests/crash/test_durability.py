"""Durability of the write side (SPEC §6): crashes at random points, a torn or corrupt log,
failed fsyncs, a full disk, garbage input and checkpoints, on real files with real fsyncs.

`CrashIO` (anning.testing.crashio) stands for the disk: what no fsync covered is lost at `crash()`.
Answers are compared with the reference model of SPEC §4 (anning.model.reference) fed only
the acknowledged writes."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import random
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from anning.errors import CorruptCheckpoint, CorruptLog, DiskFull, InvalidInput, WritesStopped
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.model.scopes import Scope
from anning.storage import records
from anning.testing.crashio import CrashIO
from anning.testing.scenario import (
    BASE,
    CATEGORIES,
    NOW_MS,
    SCOPES,
    SEG1,
    SOURCES,
    answers,
    at,
    engine_on,
    expected,
    opt_outs,
    seg_size,
)


@dataclass
class Group:
    """One thread's writes in one round, on numbers no other group touches."""
    numbers: list[int]
    acked: list[Event] = field(default_factory=list)
    unsure: list[Event] = field(default_factory=list)  # the write in flight at the crash
    seen: tuple[int, ...] | None = None  # the answers at the first recovery


def random_ops(rng: random.Random, numbers: list[int]) -> list[list[tuple]]:
    ops = []
    for _ in range(rng.randint(2, 10)):
        batch = []
        for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 4)):
            n = rng.choice(numbers)
            kind = rng.choices((OPT_OUT, OPT_IN, REASSIGN), (5, 3, 1))[0]
            batch.append((rng.choice((n, f"+{n}", str(n))), rng.choice(SCOPES),
                          rng.choice((*CATEGORIES, "all")), kind, at(rng.randint(1, 25)),
                          rng.choice(SOURCES)))
        ops.append(batch)
    return ops


def writer(engine, group: Group, ops: list[list[tuple]], errors: list) -> None:
    """Write until the power goes; every write that returned is acknowledged, and a check
    that starts after the acknowledgement sees it."""
    for op in ops:
        events = [engine.make_event(*args) for args in op]
        number, scope, category, kind, at_ms, source = op[0]
        group.unsure = events
        try:
            if len(op) > 1:
                engine.apply(events)
            elif kind == REASSIGN:
                engine.reassign(number, at_ms, source)
            else:
                write = engine.opt_out if kind == OPT_OUT else engine.opt_in
                write(number, scope, category, at_ms, source)
            group.acked, group.unsure = group.acked + events, []
            if answers(engine, group.numbers) != expected(group.acked, group.numbers):
                raise AssertionError(f"a check after the write: {group.acked}")
        except (OSError, WritesStopped):  # the power went
            return
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
            return


def verify(engine, groups: list[Group], rng: random.Random | None = None) -> None:
    """Every group; with `rng` the new ones and a sample of the others (a full pass each round
    would be most of the run time; every tenth round and the end do one)."""
    old = [g for g in groups if g.seen is not None]
    if rng is not None and len(old) > 24:
        old = rng.sample(old, 24)
    for g in [*old, *(g for g in groups if g.seen is None)]:
        got = answers(engine, g.numbers)
        if g.seen is None:  # each write in flight at the crash may or may not be there
            allowed = {expected(g.acked + [e for e, keep in zip(g.unsure, mask, strict=True)
                                           if keep], g.numbers)
                       for mask in itertools.product((False, True), repeat=len(g.unsure))}
            assert got in allowed, f"acked {g.acked}, in flight {g.unsure}"
            g.seen = got
        assert got == g.seen, f"changed since the first recovery: {g.acked}"


def test_no_acknowledged_write_is_lost_at_random_crashes(tmp_path):
    rng = random.Random(61)
    data = tmp_path / "data"
    rounds, threads = 200, 3
    numbers = iter(range(BASE, BASE + rounds * threads * 2))
    groups: list[Group] = []
    checkpoints = 0
    for round_ in range(rounds):
        io = CrashIO()
        engine = engine_on(data, io)
        verify(engine, groups, None if round_ % 10 == 0 else rng)
        mine = [Group([next(numbers), next(numbers)]) for _ in range(threads)]
        groups += mine
        errors: list[BaseException] = []
        crash_rng = random.Random(round_) if round_ % 2 else None  # odd: keep unsynced bits
        in_checkpoint = round_ % 5 == 4
        if not in_checkpoint:
            io.arm(after=rng.randint(0, 400), rng=crash_rng)
        workers = [threading.Thread(target=writer, args=(engine, g, random_ops(rng, g.numbers),
                                                         errors)) for g in mine]
        for t in workers:
            t.start()
        if rng.random() < 0.4:  # a checkpoint beside the writers
            time.sleep(rng.random() * 0.003)
            with contextlib.suppress(OSError, WritesStopped):
                checkpoints += engine.checkpoint() is not None
        for t in workers:
            t.join()
        assert not errors, errors[0]
        if in_checkpoint and not io.dead:  # the power goes in the middle of a checkpoint
            io.arm(after=rng.randint(0, 60), rng=crash_rng)
            with contextlib.suppress(OSError, WritesStopped):
                checkpoints += engine.checkpoint() is not None
        io.disarm()
        io.crash(crash_rng)
    verify(engine_on(data, CrashIO()), groups)
    assert checkpoints >= 20  # the rounds did fold the log (and crashed in folds)
    assert sum(len(g.acked) for g in groups) > 1000


def test_a_write_racing_a_checkpoint_is_not_cut_off(tmp_path):
    """A write of the same process while its checkpoint seals, folds and retires the log (the
    flock does not keep out a writer thread of the same process: same descriptor): its acked
    record is neither cut as "torn" nor folded away, and is there after a crash."""
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    acked = opt_outs(engine, [BASE + 2, BASE + 4])
    w = threading.Thread(target=lambda: acked.extend(opt_outs(engine, [BASE + 6])))
    seen: list[str] = []

    def hook(op: str) -> None:  # as the fold retires the sealed segment
        seen.append(op)
        if op == "unlink" and seen.count("unlink") == 1:
            fsyncs, deadline = io.counts["fsync"], time.monotonic() + 0.5
            w.start()  # (a log that keeps it out makes it wait: fine too)
            while io.counts["fsync"] == fsyncs and time.monotonic() < deadline:
                time.sleep(0.001)

    io.hook = hook
    engine.checkpoint()
    w.join(10)
    io.hook = None
    assert len(acked) == 3
    io.crash()
    numbers = [BASE + 2, BASE + 4, BASE + 6]
    assert answers(engine_on(tmp_path, CrashIO()), numbers) == expected(acked, numbers)


def _held_in_fsync(engine, io, first: int):
    """A write of `first` whose fsync is held until the returned event is set."""
    in_fsync, release = threading.Event(), threading.Event()
    acked: list[Event] = []
    u = threading.Thread(target=lambda: acked.extend(opt_outs(engine, [first])))

    def hook(op: str) -> None:
        if threading.current_thread() is u and op == "fsync-running":
            in_fsync.set()
            release.wait(5)

    io.hook = hook
    u.start()
    assert in_fsync.wait(5)
    return u, release, acked


def _queued_writers(engine, write, numbers: list[int]) -> list[threading.Thread]:
    """A thread running write(n) for each number, returned once all of them are queued for
    the next leader (behind the held fsync)."""
    writers = [threading.Thread(target=write, args=(n,)) for n in numbers]
    for t in writers:
        t.start()
    deadline = time.monotonic() + 5
    while len(engine.source.log.writer._queue) < len(writers) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(engine.source.log.writer._queue) == len(writers)
    return writers


def test_a_write_waiting_for_its_fsync_is_not_taken_as_synced_by_a_replay(tmp_path):
    """Group commit: u's fsync is slow (it covers u only), r queues behind it, and meanwhile
    a checkpoint of another worker is adopted (a replay of the live segment). r must still be
    written and fsync'd before it is acknowledged."""
    io = CrashIO()  # one machine, two workers
    a, b = engine_on(tmp_path, io), engine_on(tmp_path, io)
    acked = opt_outs(a, [BASE + 2])
    assert b.checkpoint() is not None  # a adopts it at its next check
    u, release, acked_u = _held_in_fsync(a, io, BASE + 4)
    (r,) = _queued_writers(a, lambda n: acked.extend(opt_outs(a, [n])), [BASE + 6])
    a.check("s3", BASE + 6)  # the adoption: a replay of the live segment
    release.set()
    for t in (u, r):
        t.join(5)
    acked += acked_u
    assert len(acked) == 3
    io.crash()
    numbers = [BASE + 2, BASE + 4, BASE + 6]
    assert answers(engine_on(tmp_path, CrashIO()), numbers) == expected(acked, numbers)


def test_writes_queued_behind_an_fsync_go_out_as_one_write_and_one_fsync(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    u, release, acked = _held_in_fsync(engine, io, BASE)
    numbers = [BASE + 2 * i for i in range(1, 9)]
    sequences: dict[int, int] = {}

    def write(n: int) -> None:
        sequences[n] = engine.apply([engine.make_event(n, "s3", "marketing", OPT_OUT, at(10),
                                                       "api")])

    writers = _queued_writers(engine, write, numbers)
    before = dict(io.counts)
    release.set()
    for t in [u, *writers]:
        t.join(5)
    # the queued eight: one write and one fsync (u's, held, was counted before)
    assert io.counts["write"] - before["write"] == 1
    assert io.counts["fsync"] - before["fsync"] == 1
    # each its own sequence, after u's (1), none skipped
    assert sorted(sequences.values()) == list(range(2, 2 + len(numbers)))
    io.crash()
    everything = [BASE, *numbers]
    acked += [Event(n, "s3", 1, OPT_OUT, at(10), "api") for n in numbers]
    assert answers(engine_on(tmp_path, CrashIO()), everything) == expected(acked, everything)


def test_a_full_disk_fails_every_write_queued_together(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    u, release, acked = _held_in_fsync(engine, io, BASE)
    numbers = [BASE + 2 * i for i in range(1, 5)]
    errors: dict[int, BaseException] = {}

    def write(n: int) -> None:
        try:
            engine.opt_out(n, "s3", at_ms=at(10))
        except DiskFull as exc:
            errors[n] = exc

    writers = _queued_writers(engine, write, numbers)
    size = seg_size(tmp_path)
    io.enospc_after(10)  # the queued records do not fit: cut back, each writer told
    release.set()
    for t in [u, *writers]:
        t.join(5)
    assert len(acked) == 1 and sorted(errors) == numbers
    assert seg_size(tmp_path) == size and engine.status().writes_ok is True
    io.space_back()
    acked += opt_outs(engine, [BASE + 20])  # writes go on once there is space
    everything = [BASE, *numbers, BASE + 20]
    assert answers(engine, everything) == expected(acked, everything)
    io.crash()
    assert answers(engine_on(tmp_path, CrashIO()), everything) == expected(acked, everything)


def test_a_batch_torn_by_a_crash_comes_back_all_or_none(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    acked = opt_outs(engine, [BASE])
    batch = [engine.make_event(BASE + 2 + 2 * i, "s3", "marketing", OPT_OUT, at(20), "api")
             for i in range(300)]
    # the disk wrote the batch's first dirty page, not the rest, before the power went
    io.arm(op="fsync", keep_unsynced=4096 - seg_size(tmp_path) % 4096)
    with pytest.raises(WritesStopped):
        engine.apply(batch)
    restarted = engine_on(tmp_path, CrashIO())
    assert answers(restarted, [BASE]) == expected(acked, [BASE])
    kept = sum(restarted.check("s3", e.number) == Scope.SENDER for e in batch)
    assert kept in (0, len(batch)), f"{kept} of the batch's {len(batch)} events came back"


@pytest.mark.parametrize("random_keep", [False, True])
def test_a_crash_at_every_call_of_a_checkpoint(tmp_path, random_keep):
    template = tmp_path / "template"
    first = engine_on(template)
    events = [*opt_outs(first, range(BASE, BASE + 6)), first.reassign(BASE + 1, at(12))]
    first.checkpoint()
    events += opt_outs(first, range(BASE + 6, BASE + 12), scope="*", seconds=13)
    numbers = list(range(BASE, BASE + 13))
    want = expected(events, numbers)
    for point in itertools.count():  # until the checkpoint ends before the power goes
        data = _copy(template, tmp_path / f"at-{point}")
        io = CrashIO()
        engine = engine_on(data, io)
        io.arm(after=point, rng=random.Random(point) if random_keep else None)
        with contextlib.suppress(OSError, WritesStopped):
            engine.checkpoint()
        done = not io.dead
        io.crash()
        io = CrashIO()
        restarted = engine_on(data, io)
        assert answers(restarted, numbers) == want, f"crash at call {point}"
        more = opt_outs(restarted, [BASE + 20], scope="s3", seconds=14)
        assert restarted.checkpoint() is not None
        io.crash()
        final = [*numbers, BASE + 20]
        assert answers(engine_on(data), final) == expected(events + more, final)
        if done:
            break
    assert point > 20  # the calls of one checkpoint


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- a torn or corrupt log -------------------------------------------------------------------
N_RECORDS = 8


@pytest.fixture
def logged(tmp_path):
    """A data directory with N_RECORDS opt-outs, one record each; their (start, end)s."""
    data = tmp_path / "template"
    engine = engine_on(data)
    first = seg_size(data)  # after the segment's header record
    ends, sequences = [], []
    for i in range(N_RECORDS):
        sequences.append(engine.apply([engine.make_event(BASE + 2 * i, "s3", "marketing",
                                                         OPT_OUT, at(10 + i), "api")]))
        ends.append(seg_size(data))
    assert sequences == list(range(1, N_RECORDS + 1))
    return data, list(zip([first, *ends[:-1]], ends, strict=True))


def test_a_torn_last_record_is_dropped_at_every_byte(tmp_path, logged, caplog):
    data, records = logged
    numbers = [BASE + 2 * i for i in range(N_RECORDS)]
    for cut in range(records[-3][0], records[-1][1]):
        copy = _copy(data, tmp_path / f"cut-{cut}")
        with open(copy / SEG1, "r+b") as f:
            f.truncate(cut)
        whole = sum(end <= cut for _, end in records)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="anning.storage"):
            engine = engine_on(copy)
        torn = [r.getMessage() for r in caplog.records if "torn" in r.getMessage()]
        if cut == records[whole - 1][1]:  # a cut between records tears nothing
            assert torn == []
        else:
            assert len(torn) == 1 and str(copy / SEG1) in torn[0]
            assert f"offset {records[whole][0]}" in torn[0], torn[0]
        assert seg_size(copy) == records[whole - 1][1]
        want = [Scope.SENDER] * whole + [Scope.NONE] * (N_RECORDS - whole)
        assert [engine.check("s3", n) for n in numbers] == want, cut
        engine.opt_out(BASE + 100, "s3", at_ms=at(30))  # writes go on, and last
        caplog.clear()
        again = engine_on(copy)
        assert [again.check("s3", n) for n in [*numbers, BASE + 100]] == [*want, Scope.SENDER]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("record", [0, N_RECORDS // 2, N_RECORDS - 2])
@pytest.mark.parametrize("byte", [0, 5, 11], ids=["length", "crc", "payload"])
def test_corruption_before_the_tail_stops_start_up(logged, record, byte):
    data, records = logged
    start = records[record][0]
    with open(data / SEG1, "r+b") as f:
        f.seek(start + byte)
        value = f.read(1)[0]
        f.seek(start + byte)
        f.write(bytes([value ^ 0x5A]))
    with pytest.raises(CorruptLog) as exc:
        engine_on(data)
    assert str(data / SEG1) in str(exc.value) and f"offset {start}" in str(exc.value)


# -- fsync failure and a full disk -----------------------------------------------------------
def test_workers_agree_on_a_write_whose_fsync_failed(tmp_path):
    """A write whose fsync failed has an unknown outcome: its bytes may be read back. Every
    worker then reads them alike - the one that wrote them too, which must not skip them as
    its own (it never took their events: the write failed)."""
    io = CrashIO()
    writer, other = engine_on(tmp_path, io), engine_on(tmp_path)
    io.fail_fsync_next(1, errno.EIO)
    with pytest.raises(WritesStopped):
        writer.opt_out(BASE + 6, "s3", at_ms=at(11))
    numbers = [BASE + 6]
    assert answers(writer, numbers) == answers(other, numbers)
    assert writer.check("s3", BASE + 6) != 0  # the bytes are in the file: both read them


def test_a_failed_fsync_stops_writes_until_a_restart(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    acked = opt_outs(engine, [BASE + 2, BASE + 4])
    io.fail_fsync_next(1, errno.EIO)
    with pytest.raises(WritesStopped):
        engine.opt_out(BASE + 6, "s3", at_ms=at(11))
    status = engine.status()
    assert not status.writes_ok and f"fsync of {tmp_path / SEG1}" in status.writes_error
    size, fsyncs = seg_size(tmp_path), io.counts["fsync"]
    for attempt in (lambda: engine.opt_in(BASE + 2, "s1", at_ms=at(12)),  # never retried
                    lambda: engine.reassign(BASE + 8, at(12)),
                    lambda: engine.apply([engine.make_event(BASE + 8, "*", "all", OPT_OUT,
                                                            at(12), "api")]),
                    engine.checkpoint):
        with pytest.raises(WritesStopped):
            attempt()
    assert seg_size(tmp_path) == size and io.counts["fsync"] == fsyncs  # no retry
    numbers = [BASE + 2, BASE + 4, BASE + 8, BASE + 9]
    assert answers(engine, numbers) == expected(acked, numbers)  # checks go on
    io.crash()  # nothing after the failure made the failed write durable
    restarted = engine_on(tmp_path, io := CrashIO())
    assert restarted.status().writes_ok is True
    numbers.append(BASE + 6)
    failed = Event(BASE + 6, "s3", 1, OPT_OUT, at(11), "api")
    assert answers(restarted, numbers) == expected(acked, numbers) != expected(
        [*acked, failed], numbers)
    acked += [restarted.reassign(BASE + 2, at(13))]
    io.crash()
    assert answers(engine_on(tmp_path), numbers) == expected(acked, numbers)


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("short", [False, True], ids=["enospc", "short-write"])
def test_a_full_disk_fails_the_write_and_keeps_the_log_whole(tmp_path, caplog, short, batch):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    acked = opt_outs(engine, [BASE + 2, BASE + 4])
    size = seg_size(tmp_path)
    lost = [engine.make_event(BASE + 6 + 2 * i, "s3", "all", OPT_OUT, at(11), "api")
            for i in range(3 if batch else 1)]
    first = len(records.encode_events([Event(lost[0].number, "s3", 0xFF, OPT_OUT, at(11), "api")]))
    # a short write cuts the batch just after its first whole record
    io.enospc_after(first if batch else 7, short=short)
    for _ in range(2):  # and again while the disk is still full
        with pytest.raises(DiskFull):
            engine.apply(lost)
        assert seg_size(tmp_path) == size
        assert engine.status().writes_ok is True
    numbers = [BASE + 2, BASE + 4] + [e.number for e in lost]
    assert answers(engine, numbers) == expected(acked, numbers) != expected(acked + lost, numbers)
    io.space_back()
    acked += opt_outs(engine, [BASE + 20], scope="*", seconds=12)
    numbers.append(BASE + 20)
    assert answers(engine, numbers) == expected(acked, numbers)
    io.crash()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anning.storage"):
        restarted = engine_on(tmp_path, CrashIO())
    assert answers(restarted, numbers) == expected(acked, numbers)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- garbage input ---------------------------------------------------------------------------
GOOD = {"number": BASE + 40, "scope": "s1", "category": "marketing", "at_ms": at(5),
        "source": "api"}
FAR = NOW_MS + 2 * 86_400_000  # later than tomorrow
GARBAGE = [
    *[("number", v) for v in ("abc", "", "+", "12", "1" * 20, None, True, -1, 1.5, "138\x00")],
    *[("scope", v) for v in ("", None, 5, "entity:", "x" * 65, "a\x01b", True)],
    *[("category", v) for v in ("spam", None, 3, True)],
    *[("at_ms", v) for v in ("1700000000000", -1, 0, "x", True, False, 1.5, FAR, 10**30)],
    *[("source", v) for v in ("snapshot", "foo", "", None, "API")],
]
NO_FIELD = {("reassign", "scope"), ("reassign", "category"), ("reply", "scope"),
            ("reply", "category"), ("reply", "source")}
CASES = [(w, f, v) for w in ("opt_out", "opt_in", "reassign", "reply", "make_event")
         for f, v in GARBAGE if (w, f) not in NO_FIELD]
CASES += [("make_event", "kind", v) for v in (0, 4, 9, "1", None)]
CASES += [("apply", f, v) for f, v in (("kind", 9), ("source", "foo"), ("at_ms", "x"),
                                       ("number", -1), ("scope", 5))]


def _write(engine, write: str, a: dict):
    if write in ("opt_out", "opt_in"):
        return getattr(engine, write)(a["number"], a["scope"], a["category"], a["at_ms"],
                                      a["source"])
    if write == "reassign":
        return engine.reassign(a["number"], a["at_ms"], a["source"])
    if write == "reply":
        return engine.reply("s1", a["number"], "TD", a["at_ms"])
    kind = a.get("kind", OPT_OUT)
    return engine.apply([engine.make_event(a["number"], a["scope"], a["category"], kind,
                                           a["at_ms"], a["source"])])


@pytest.mark.parametrize(("write", "name", "value"), CASES, ids=lambda x: repr(x)[:24])
def test_garbage_is_refused_and_nothing_accepted_is_lost(tmp_path, write, name, value):
    engine = engine_on(tmp_path)
    acked = [*opt_outs(engine, [BASE + 40, BASE + 41]), engine.reassign(BASE + 42, at(6))]
    numbers = [BASE + 40, BASE + 41, BASE + 42, BASE + 43]
    size = engine.source.size()
    with pytest.raises(InvalidInput) as exc:
        if write == "apply":  # an Event made by hand, past make_event's checks
            good = engine.make_event(BASE + 43, "s1", "marketing", OPT_OUT, at(7), "api")
            engine.apply([good, replace(good, **{name: value})])
        else:
            _write(engine, write, {**GOOD, name: value})
    assert str(exc.value).startswith(f"{name}: {value!r}"), str(exc.value)
    assert engine.source.size() == size
    assert answers(engine, numbers) == expected(acked, numbers) != expected([], numbers)
    assert answers(engine_on(tmp_path), numbers) == expected(acked, numbers)


# -- checkpoints -----------------------------------------------------------------------------
def segments(data: Path) -> list[str]:
    return sorted(p.name for p in data.glob("events-*.log"))


def test_a_checkpoint_folds_the_log_and_keeps_every_answer(tmp_path):
    engine = engine_on(tmp_path)
    numbers = list(range(BASE, BASE + 8))
    events = [*opt_outs(engine, numbers[:4]), engine.opt_in(numbers[0], "s1", at_ms=at(11)),
              engine.reassign(numbers[1], at(12))]
    before = answers(engine, numbers)
    assert before == expected(events, numbers) != expected([], numbers)
    report = engine.checkpoint()
    assert report is not None and report.covers == 1 and report.retired_bytes > 0
    assert segments(tmp_path) == ["events-000002.log"]  # the folded segment is gone
    assert answers(engine, numbers) == before
    events += opt_outs(engine, numbers[4:6], scope="entity:e")
    assert engine.checkpoint().covers == 2 and segments(tmp_path) == ["events-000003.log"]
    assert answers(engine, numbers) == expected(events, numbers)
    assert answers(engine_on(tmp_path), numbers) == expected(events, numbers)  # a restart


def test_another_worker_sees_every_acked_write_across_checkpoints(tmp_path):
    a, b = engine_on(tmp_path), engine_on(tmp_path)  # two workers on one data directory
    numbers = list(range(BASE, BASE + 8))
    events = opt_outs(a, numbers[:2])
    assert answers(b, numbers) == expected(events, numbers)  # b has read the log so far
    for n in numbers[2:4]:  # two checkpoints by a, each followed by a write, ...
        a.checkpoint()
        events += opt_outs(a, [n], scope="*", seconds=12)
    assert b.check("s3", numbers[3]) == Scope.GLOBAL  # ... then b's very next check
    assert answers(b, numbers) == expected(events, numbers)
    events += opt_outs(a, numbers[4:5])
    assert b.checkpoint() is not None  # a checkpoint by b, then a write by a
    events += opt_outs(a, numbers[5:6])
    assert answers(b, numbers) == answers(a, numbers) == expected(events, numbers)


def test_a_worker_writes_where_the_others_read_after_their_checkpoints(tmp_path):
    a, b = engine_on(tmp_path), engine_on(tmp_path)
    numbers = list(range(BASE, BASE + 6))
    events = opt_outs(b, numbers[:1])
    for n in numbers[1:3]:  # two checkpoints by a retire the segment b last wrote to
        events += opt_outs(a, [n])
        a.checkpoint()
    events += opt_outs(b, numbers[3:4])  # acknowledged: it must be in the live segment
    assert a.check("s3", numbers[3]) == Scope.SENDER
    assert answers(a, numbers) == expected(events, numbers)
    assert answers(engine_on(tmp_path), numbers) == expected(events, numbers)


def test_a_damaged_checkpoint_stops_start_up_naming_the_file(tmp_path):
    engine = engine_on(tmp_path)
    opt_outs(engine, [BASE, BASE + 1])
    engine.checkpoint()
    with open(tmp_path / "events.ckpt", "r+b") as f:
        f.seek(4096)
        f.write(b"\xff" * 8)
    with pytest.raises(CorruptCheckpoint, match=r"events\.ckpt"):
        engine_on(tmp_path)

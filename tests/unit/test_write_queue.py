"""The server's group commit: Engine.apply_each (several callers' writes, one append and one
fsync, a sequence or an error each) and the WriteQueue that feeds it from the event loop.
Real files and fsyncs through the crash-simulating I/O layer; a crash keeps only synced bytes."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from anning.engine import Engine
from anning.errors import DiskFull, InvalidInput, WritesStopped
from anning.model.events import OPT_OUT, Event
from anning.server.writes import WriteQueue
from anning.testing.crashio import CrashIO
from anning.testing.scenario import BASE, answers, at, engine_on, expected


def event(engine: Engine, number: int, seconds: int = 10) -> Event:
    return engine.make_event(number, "s3", "marketing", OPT_OUT, at(seconds), "api")


def garbage(number: int) -> Event:  # made by hand, past make_event: mask 0 is no category
    return Event(number, "s3", 0, OPT_OUT, at(10), "api")


def test_apply_each_gives_each_write_its_own_sequence_from_one_write_and_one_fsync(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    writes = [[event(engine, BASE + 2)], [event(engine, BASE + 4), event(engine, BASE + 6)],
              [garbage(BASE + 8)], [], [event(engine, BASE + 10)]]
    before = dict(io.counts)
    outcomes = engine.apply_each(writes)
    assert io.counts["write"] - before.get("write", 0) == 1
    assert io.counts["fsync"] - before.get("fsync", 0) == 1
    assert isinstance(outcomes[2], InvalidInput) and "mask" in str(outcomes[2])
    assert outcomes[3] == 0  # nothing to write: nothing written
    # dense sequences, each write's last: 1; 2 and 3; 4 (the refused and empty took none)
    assert [outcomes[i] for i in (0, 1, 4)] == [1, 3, 4]
    io.crash()
    kept = [e for i in (0, 1, 4) for e in writes[i]]
    numbers = [BASE + 2 * k for k in range(1, 6)]
    assert answers(engine_on(tmp_path, CrashIO()), numbers) == expected(kept, numbers)


def test_apply_is_apply_each_of_one_write(tmp_path):
    engine = engine_on(tmp_path)
    with pytest.raises(InvalidInput, match="mask"):
        engine.apply([event(engine, BASE + 2), garbage(BASE + 4)])
    assert engine.apply([]) == 0
    sequence = engine.apply([event(engine, BASE + 2), event(engine, BASE + 4)])
    assert sequence == 2  # of the write's last event: the log's first two events
    numbers = [BASE + 2, BASE + 4]
    kept = [event(engine, n) for n in numbers]
    assert answers(engine_on(tmp_path), numbers) == expected(kept, numbers)


def _hold_fsyncs_of_the_writer(io: CrashIO) -> tuple[threading.Event, threading.Event]:
    """The write queue's thread stops in its next fsync until `release` is set."""
    in_fsync, release = threading.Event(), threading.Event()

    def hook(op: str) -> None:
        if op == "fsync-running" and threading.current_thread().name == "writes":
            in_fsync.set()
            release.wait(5)

    io.hook = hook
    return in_fsync, release


async def _wait_for(event: threading.Event) -> None:
    deadline = time.monotonic() + 5
    while not event.is_set():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)


def test_writes_from_the_loop_queue_behind_an_fsync_and_go_out_together(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    in_fsync, release = _hold_fsyncs_of_the_writer(io)

    async def run() -> tuple[int, list]:
        queue = WriteQueue(engine, asyncio.get_running_loop())
        first = queue.submit([event(engine, BASE)])
        await _wait_for(in_fsync)
        fsyncs = io.counts["fsync"]
        rest = [queue.write([event(engine, BASE + 2 * i)]) for i in range(1, 9)]
        rest.append(queue.write([garbage(BASE + 20)]))  # refused alone
        io.hook = None
        release.set()
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        queue.close()
        return io.counts["fsync"] - fsyncs, outcomes

    fsyncs, outcomes = asyncio.run(run())
    assert fsyncs == 1  # the eight queued writes: one more fsync, not eight
    assert all(isinstance(s, int) for s in outcomes[:9])
    assert len(set(outcomes[:9])) == 9  # a sequence each
    assert isinstance(outcomes[9], InvalidInput)
    io.crash()
    numbers = [BASE + 2 * i for i in range(11)]
    kept = [event(engine, n) for n in numbers[:9]]
    assert answers(engine_on(tmp_path, CrashIO()), numbers) == expected(kept, numbers)


def test_a_full_disk_fails_every_write_of_its_batch_and_writes_resume(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)

    async def run() -> tuple[list, int]:
        queue = WriteQueue(engine, asyncio.get_running_loop())
        io.enospc_after(10)
        failed = await asyncio.gather(*(queue.write([event(engine, BASE + 2 * i)])
                                        for i in range(4)), return_exceptions=True)
        io.space_back()
        later = await queue.write([event(engine, BASE + 10)])
        queue.close()
        return failed, later

    failed, later = asyncio.run(run())
    assert all(isinstance(f, DiskFull) for f in failed), failed
    assert later == 1  # the writes the disk could not hold took no sequence
    io.crash()
    numbers = [BASE + 2 * i for i in range(6)]
    assert answers(engine_on(tmp_path, CrashIO()), numbers) == \
        expected([event(engine, BASE + 10)], numbers)


def test_a_failed_fsync_fails_the_batch_and_stops_writes(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)

    async def run() -> tuple[list, BaseException | None]:
        queue = WriteQueue(engine, asyncio.get_running_loop())
        io.fail_fsync_next()
        failed = await asyncio.gather(*(queue.write([event(engine, BASE + 2 * i)])
                                        for i in range(3)), return_exceptions=True)
        try:
            await queue.write([event(engine, BASE + 10)])
            after = None
        except WritesStopped as exc:
            after = exc
        queue.close()
        return failed, after

    acked = [engine.opt_out(BASE + 20, "s3", at_ms=at(5))]  # before the failure
    failed, after = asyncio.run(run())
    assert all(isinstance(f, WritesStopped | OSError) for f in failed), failed
    assert isinstance(after, WritesStopped)  # never retried into a success
    # the checks go on, from everything acknowledged before (the failed writes' bytes may
    # still be read back from the page cache: opt-outs shown that were never acknowledged,
    # the safe side; a write after the failure was never written)
    numbers = [BASE + 20, BASE + 12, BASE + 13]
    assert answers(engine, numbers) == expected(acked, numbers)
    assert engine.check("s3", BASE + 20) != 0 and engine.check("s1", BASE + 12) != 0


def test_a_cancelled_write_does_not_stop_the_queue_and_close_refuses_more(tmp_path):
    io = CrashIO()
    engine = engine_on(tmp_path, io)
    in_fsync, release = _hold_fsyncs_of_the_writer(io)

    async def run() -> int:
        queue = WriteQueue(engine, asyncio.get_running_loop())
        held = queue.submit([event(engine, BASE)])
        await _wait_for(in_fsync)
        gone = queue.submit([event(engine, BASE + 2)])
        gone.cancel()  # its caller's deadline passed: the write may still be kept
        io.hook = None
        release.set()
        await held
        sequence = await queue.write([event(engine, BASE + 4)])
        queue.close()
        with pytest.raises(RuntimeError, match="closed"):
            queue.submit([event(engine, BASE + 6)])
        return sequence

    assert asyncio.run(run()) == 3  # the held write's, the cancelled one's, then this one's
    assert engine.check("s3", BASE + 4) != 0

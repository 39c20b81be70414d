"""A server polls for new files in a thread of its own (Engine.poll_in_background): its checks
then take in the write log only, never load a snapshot or catch up from a checkpoint that
nothing forces, and still never answer without what an acknowledged write made durable. Real
files; two engines on one directory stand for two worker processes."""

from __future__ import annotations

import anning.engine.follower as follower_module
from anning.index import SuppressionIndex
from anning.storage.layout import SNAPSHOT_NAME
from anning.storage.snapshot import write_snapshot
from anning.testing.scenario import AS_OF_MS, BASE, answers, engine_on, expected, opt_outs


def background(engine):
    engine.poll_in_background = True
    return engine


def test_checks_take_the_log_and_leave_a_new_snapshot_to_poll(tmp_path, monkeypatch):
    # a foreground engine polls at every check
    monkeypatch.setattr(follower_module, "POLL_SECONDS", 0.0)
    a, b = background(engine_on(tmp_path)), engine_on(tmp_path)
    number = BASE + 5000  # in no list
    written = opt_outs(b, [number])
    assert answers(a, [number]) == expected(written, [number])  # the log: at once
    write_snapshot(SuppressionIndex.build([number + 2], ["s3"], ["marketing"],
                                          meta={"as_of_ms": AS_OF_MS}), tmp_path / SNAPSHOT_NAME)
    assert a.check("s3", number + 2) == 0  # the old list still: no load on a check's path
    a.poll()
    assert a.check("s3", number + 2) != 0
    assert a.check("s3", number) != 0  # the event is later than the new list's as_of


def test_a_check_behind_retired_segments_catches_up_from_the_checkpoint(tmp_path):
    a, b = background(engine_on(tmp_path)), engine_on(tmp_path)
    numbers = [BASE + 6000 + 2 * i for i in range(60)]
    written = opt_outs(b, numbers[:20])
    b.checkpoint()  # segment 1 sealed, folded, retired (`a` still holds it open)
    written += opt_outs(b, numbers[20:40], seconds=20)
    b.checkpoint()  # segment 2, which `a` never opened, retired too
    written += opt_outs(b, numbers[40:], seconds=30)
    # `a` never polled: its check finds the log retired under it and must catch up first
    assert answers(a, numbers) == expected(written, numbers)


def test_a_checkpoint_changes_nothing_a_process_serves(tmp_path):
    """The events a process took stay in its overlay: a checkpoint (its own or another's)
    only moves them on disk; nothing is taken up again unless its reader fell behind."""
    engine = background(engine_on(tmp_path))
    numbers = [BASE + 7000 + 2 * i for i in range(20)]
    written = opt_outs(engine, numbers)
    serving = engine.serving()
    engine.checkpoint()  # folds the log in this thread
    engine.poll()  # sees the new checkpoint file: nothing to do
    assert engine.serving().overlay is serving.overlay
    # a thread that was waiting to catch up while another did finds nothing left to do
    engine.follower.catch_up()
    assert engine.serving().overlay is serving.overlay
    assert answers(engine, numbers) == expected(written, numbers)

"""A load says which events its new list holds (`folded_through`): every event up to it must be
in the list, and it must know every event there is. Two ways that went wrong (issue 13):
`anning load` read the events, then looked at the checkpoint again for the last sequence, and a
server that wrote and checkpointed in between had its event counted as folded but not folded
(lost for good); and a worker asked to load with a watermark that another worker had just
written refused it as "past the last event there is"."""

from __future__ import annotations

import time
from pathlib import Path

import anning.storage.local as local
from anning import Scope
from anning.engine import Engine
from anning.engine.offline import load_into_data_dir
from anning.load import LoadOptions
from anning.testing.server import write_snapshot

NOW_MS = int(time.time() * 1000)


def test_an_event_written_and_checkpointed_while_a_load_reads_stays_in_force(tmp_path,
                                                                           monkeypatch):
    data = tmp_path / "data"
    write_snapshot(data, [8613500000001], ["*"], ["all"], None, NOW_MS - 3_600_000)
    server = Engine(data_dir=data)  # a running server of the directory
    assert server.open_snapshot()
    assert server.opt_out("13900000001", "shop").sequence == 1
    night = tmp_path / "night.csv"
    night.write_text("number,sender\n13500000001,*\n", encoding="utf-8")

    read = local._read_positioned
    calls = []

    def then_the_server_writes(*args, **kwargs):  # the load has just read the events
        got = read(*args, **kwargs)
        if not calls:
            calls.append(1)
            assert server.opt_out("13900000002", "shop").sequence == 2
            assert server.checkpoint() is not None
        return got

    monkeypatch.setattr(local, "_read_positioned", then_the_server_writes)
    report = load_into_data_dir(data, [night], LoadOptions(as_of=str(NOW_MS),
                                                           allow_shrink=True))
    monkeypatch.undo()
    assert calls and report.events_folded == 1
    time.sleep(0.6)  # the server looks for a new snapshot twice a second
    server.refresh()
    assert server.index.folded_through == 1
    assert [server.check("shop", n) for n in ("13900000001", "13900000002")] == \
        [Scope.SENDER, Scope.SENDER]
    server.source.close()
    restarted = Engine(data_dir=data)
    assert restarted.open_snapshot()
    assert [restarted.check("shop", n) for n in ("13900000001", "13900000002")] == \
        [Scope.SENDER, Scope.SENDER]
    restarted.source.close()


def test_a_watermark_another_process_just_wrote_is_not_past_the_last(tmp_path: Path):
    data = tmp_path / "data"
    write_snapshot(data, [8613500000001], ["*"], ["all"], None, NOW_MS - 3_600_000)
    loader, writer = Engine(data_dir=data), Engine(data_dir=data)  # two workers
    assert loader.open_snapshot() and writer.open_snapshot()
    loader.check("shop", "13900000001")  # it has read the log up to now
    last = writer.opt_out("13900000001", "shop").sequence  # upstream has it from the feed
    night = tmp_path / "night.csv"
    night.write_text("number,sender\n13500000001,*\n", encoding="utf-8")
    report = loader.load_snapshot([night], LoadOptions(as_of=str(NOW_MS), allow_shrink=True,
                                                       events_through=last))
    assert (report.events_through, report.events_folded) == (1, 0)
    assert loader.check("shop", "13900000001") is Scope.NONE  # upstream's to keep: it did not
    for engine in (loader, writer):
        engine.source.close()

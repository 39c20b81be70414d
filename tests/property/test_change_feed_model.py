"""The nightly cycle against a plain model (SPEC §4, §5, issue 13), with hypothesis: anning takes
events; an upstream system, written here in plain Python and sharing no code with anning,
exports the change feed (`anning.engine.export.export_csv`, the code of `anning events
export`), merges it into its own table by the SPEC's rules (per (number, sender, category) the
latest `at` wins, an opt-out at a tie; a reassignment drops what is older), adds changes of
its own, writes its next nightly file (with `at` and `action` columns, with or without its
tombstones and reassignments, sometimes without times) and declares the last sequence it
merged as the file's `events_through`, or none. The engine loads it as Admin.LoadSnapshot
does, or `anning load` writes it beside the engine, which takes the new file up. In between:
writes with times before and after the loads' as_of, batches, checkpoints, restarts, refused
watermarks. After every step the engine answers every check, one by one, in a batch and in
Explain, as anning.model.reference.ReferenceModel does, given the upstream's rows, the
declared watermark and every event with its sequence."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from anning.engine import Engine
from anning.engine.export import export_csv
from anning.engine.offline import load_into_data_dir
from anning.load import LoadOptions, SnapshotRefused
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.model.reference import ReferenceModel, Row
from anning.storage.layout import DataDir

LONG = os.environ.get("ANNING_HYPOTHESIS") == "long"
CATEGORIES = ("marketing", "notification")
NUMBERS = [8613800000001, 8613800000002, 8613900000003, 8613900000004]
FILLER = 8613600000001  # a row of every file (a list is never empty); never checked
SENDERS = ["s1", "s2", "s3"]  # s1 and s2 of entity e1; s3 of none
LINKS = {"s1": "e1", "s2": "e1"}
SCOPES = ["s1", "s2", "s3", "entity:e1", "*"]
BASE = (int(time.time()) - 3600) * 1000
TICK = 1000  # times are BASE + k * TICK: few values, so ties and crossings are common
PAIRS = [(s, n) for s in SENDERS for n in NUMBERS]

ticks = st.integers(-3, 6)
# (kind, number, scope, category, tick)
writes = st.tuples(st.sampled_from([OPT_OUT, OPT_OUT, OPT_IN, REASSIGN]),
                   st.sampled_from(NUMBERS), st.sampled_from(SCOPES),
                   st.sampled_from([*CATEGORIES, "all"]), ticks)


def mask_of(category: str) -> int:
    return 0xFF if category == "all" else 1 << CATEGORIES.index(category)


class Upstream:
    """The system upstream of anning, as a carrier's would be: a table of its own, the
    feed merged into it, a nightly file out of it. Plain Python: csv, dicts."""

    def __init__(self) -> None:
        self.said: dict[tuple[int, str, str], tuple[int, bool]] = {}  # -> (at, opted out)
        self.moved: dict[int, int] = {}  # number -> time of its latest reassignment
        self.merged = 0  # the last sequence of the feed merged

    def state(self, number: int, key: str, category: str, at: int, opted_out: bool) -> None:
        if at < self.moved.get(number, -1):
            return  # older than the number's reassignment
        for name in (CATEGORIES if category == "all" else (category,)):
            held = self.said.get((number, key, name))
            if held is None or (at, opted_out) > held:  # latest wins; an opt-out at a tie
                self.said[(number, key, name)] = (at, opted_out)

    def reassign(self, number: int, at: int) -> None:
        if at <= self.moved.get(number, -1):
            return
        self.moved[number] = at
        self.said = {k: v for k, v in self.said.items() if k[0] != number or v[0] >= at}

    def merge_feed(self, data: Path, until: int | None) -> int:
        """Export the feed past what was merged (up to `until`), merge it; the rows read."""
        out = io.BytesIO()
        export_csv(DataDir(data), self.merged, until, out)
        rows = list(csv.DictReader(io.StringIO(out.getvalue().decode("utf-8"))))
        for row in rows:
            sequence = int(row["seq"])
            assert sequence == self.merged + 1, (row, self.merged)  # in order, each once
            at = int(datetime.fromisoformat(row["at"]).timestamp() * 1000)
            if row["action"] == "reassign":
                assert (row["sender"], row["category"]) == ("*", ""), row
                self.reassign(int(row["number"]), at)
            else:
                assert row["action"] in ("opt_out", "opt_in"), row
                self.state(int(row["number"]), row["sender"], row["category"], at,
                           row["action"] == "opt_out")
            self.merged = sequence
        return len(rows)

    def nightly(self, tombstones: bool, moves: bool, times: bool) -> tuple[list[str], list[Row]]:
        """The next nightly file's lines, and its rows as the model takes them."""
        lines = ["number,sender,category,at,action", f"{FILLER},*,marketing,,"]
        rows = [Row(FILLER, "*", 1)]
        for (number, key, category), (at, opted_out) in sorted(self.said.items()):
            if opted_out or tombstones:
                action = "opt_out" if opted_out else "opt_in"
                lines.append(f"{number},{key},{category},{at if times else ''},{action}")
                rows.append(Row(number, key, mask_of(category), at if times else None,
                                OPT_OUT if opted_out else OPT_IN))
        for number, at in sorted(self.moved.items()) if moves else ():
            lines.append(f"{number},*,,{at if times else ''},reassign")
            rows.append(Row(number, "", 0, at if times else None, REASSIGN))
        return lines, rows


class ChangeFeedMachine(RuleBasedStateMachine):
    """anning, an upstream and the reference model through nightly cycles."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.data = self.dir / "data"
        self.upstream = Upstream()
        self.model = ReferenceModel()
        self.engine: Engine | None = None
        self.last = 0  # the last sequence taken
        self.watermark = 0
        self.nights = 0
        (self.dir / "entities.csv").write_text(
            "sender,entity\n" + "".join(f"{s},{e}\n" for s, e in LINKS.items()),
            encoding="utf-8")

    def _load(self, lines: list[str], as_of: int, through: int | None,
              offline: bool = False) -> None:
        """Into the engine (Admin.LoadSnapshot's way), or `offline` by the code of `anning
        load` into its data directory, the engine taking the new file up as a server does."""
        self.nights += 1
        path = self.dir / f"night-{self.nights}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        engine = self.engine
        assert engine is not None
        options = LoadOptions(entities=self.dir / "entities.csv", as_of=str(as_of),
                              allow_shrink=True, categories=CATEGORIES, events_through=through)
        if offline:
            load_into_data_dir(self.data, [path], options)
            engine.poll()
        else:
            engine.load_snapshot([path], options)

    @initialize(as_of=ticks)
    def first_list(self, as_of: int) -> None:
        self.engine = Engine(data_dir=self.data)
        lines, rows = self.upstream.nightly(False, False, True)
        self._load(lines, BASE + as_of * TICK, None)
        self.model.load(rows, LINKS, BASE + as_of * TICK)

    def _taken(self, events: list[tuple], last: int) -> None:
        assert last == self.last + len(events), "sequences are not dense"
        for i, (kind, number, scope, category, tick) in enumerate(events):
            sequence = self.last + i + 1
            if kind == REASSIGN:
                event = Event(number, "", 0, kind, BASE + tick * TICK, "api", sequence)
            else:
                event = Event(number, scope, mask_of(category), kind, BASE + tick * TICK,
                              "api", sequence)
            self.model.add(event)
        self.last = last

    @rule(write=writes)
    def write(self, write: tuple) -> None:
        kind, number, scope, category, tick = write
        engine, at = self.engine, BASE + tick * TICK
        assert engine is not None
        if kind == REASSIGN:
            event = engine.reassign(number, at)
        else:
            event = (engine.opt_out if kind == OPT_OUT else engine.opt_in)(
                number, scope, category, at)
        self._taken([write], event.sequence)

    @rule(batch=st.lists(writes, min_size=1, max_size=4))
    def write_batch(self, batch: list[tuple]) -> None:
        engine = self.engine
        assert engine is not None
        last = engine.apply([engine.make_event(n, s, c, k, BASE + t * TICK, "api")
                             for k, n, s, c, t in batch])
        self._taken(batch, last)

    @rule()
    def checkpoint(self) -> None:
        assert self.engine is not None
        self.engine.checkpoint()

    @rule()
    def restart(self) -> None:
        assert self.engine is not None and self.engine.source is not None
        self.engine.source.close()
        self.engine = Engine(data_dir=self.data)
        assert self.engine.open_snapshot()

    @rule(own=st.lists(st.tuples(st.sampled_from([OPT_OUT, OPT_OUT, OPT_IN, REASSIGN]),
                                 st.sampled_from(NUMBERS), st.sampled_from(SCOPES),
                                 st.sampled_from([*CATEGORIES, "all"]), ticks), max_size=3),
          partial=st.booleans(), declare=st.sampled_from([True, True, True, False]),
          tombstones=st.booleans(), moves=st.booleans(),
          times=st.sampled_from([True, True, True, False]), as_of=ticks,
          offline=st.booleans(), data=st.data())
    def nightly_cycle(self, own, partial, declare, tombstones, moves, times, as_of, offline,
                      data) -> None:
        """Export, merge (all of the feed, or up to a sequence), upstream's own changes, the
        next file, loaded with the watermark of what was merged, or none."""
        upstream = self.upstream
        until = data.draw(st.integers(upstream.merged, self.last), "until") if partial else None
        upstream.merge_feed(self.data, until)
        assert upstream.merged == (until if until is not None else self.last)
        for kind, number, scope, category, tick in own:
            if kind == REASSIGN:
                upstream.reassign(number, BASE + tick * TICK)
            else:
                upstream.state(number, scope, category, BASE + tick * TICK, kind == OPT_OUT)
        lines, rows = upstream.nightly(tombstones, moves, times)
        through = upstream.merged if declare else None
        self._load(lines, BASE + as_of * TICK, through, offline)
        self.model.load(rows, LINKS, BASE + as_of * TICK, through)
        self.watermark = through if through is not None else self.watermark
        assert self.engine is not None
        assert self.engine.index.events_through == self.watermark

    @rule(past=st.integers(1, 3), back=st.booleans(), offline=st.booleans())
    def refused_watermark(self, past: int, back: bool, offline: bool) -> None:
        """A watermark past the last sequence, or back past the serving one: refused, the
        list and its file untouched."""
        if back and self.watermark == 0:
            return
        through = self.watermark - past if back else self.last + past
        snapshot = (self.data / "index.anx").read_bytes()
        with pytest.raises(SnapshotRefused, match=f"events_through {max(through, 0)}"):
            self._load(self.upstream.nightly(True, True, True)[0], BASE, max(through, 0),
                       offline)
        assert (self.data / "index.anx").read_bytes() == snapshot

    @invariant()
    def answers_agree(self) -> None:
        engine = self.engine
        if engine is None:
            return
        state = engine.serving()
        ids = engine.sender_ids([s for s, _ in PAIRS], state)
        numbers = np.array([n for _, n in PAIRS], np.uint64)
        for bit, category in enumerate(CATEGORIES):
            want = [self.model.decide(s, n, bit) for s, n in PAIRS]
            got = engine.check_ids(ids, numbers, category, state)
            assert got.tolist() == [int(w.scope) for w in want], (category, got, want)
            for (sender, number), decision in zip(PAIRS, want, strict=True):
                assert engine.check(sender, number, category) is decision.scope, \
                    (sender, number, category, decision)
                why = engine.explain(sender, number, category)
                assert (why.scope, why.matched) == (decision.scope, decision.key), \
                    (sender, number, category, why, decision)
        assert engine.status().last_sequence == self.last

    def teardown(self) -> None:
        if self.engine is not None and self.engine.source is not None:
            self.engine.source.close()
        self.tmp.cleanup()


ChangeFeedMachine.TestCase.settings = settings(max_examples=500 if LONG else 45,
                                               stateful_step_count=30, deadline=None)
TestChangeFeedMachine = ChangeFeedMachine.TestCase

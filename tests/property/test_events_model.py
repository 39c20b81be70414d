"""Real-time events and loads (SPEC §4, §5) against the reference model
(anning.model.reference), with hypothesis.

The model keeps every statement as made and decides each check from scratch: the rows of the
last snapshot (each at its `at`, or as of the snapshot's as_of) and every event past the
snapshot's watermark; per (number, scope, category) the latest wins, an opt-out over an opt-in
at the same time, nothing older than the number's latest reassignment counts. It shares no code
with the engine, and knows nothing of arrival order, folding at loads, checkpoints or restarts,
which must change no answer. Explanations are compared too: the level, the key, what decided
(an event, with its time and source, or the snapshot), and the exact categories."""

from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from anning import Scope, SuppressionIndex, write_snapshot
from anning.engine import Engine
from anning.load import LoadOptions
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.model.reference import ReferenceModel, Row
from anning.model.scopes import SOURCES
from anning.storage.layout import SNAPSHOT_NAME

CATEGORIES = ("marketing", "notification", "otp")
NUMBERS = [8613800000001, 8613800000002, 8613900000003]
ABSENT = 8613700000009  # in no snapshot and no event
FILLER = 8613600000001  # a row of every loaded list (a list is never empty)
SENDERS = ["s1", "s2", "s3", "s4"]  # s4 never has an entity; any may be unknown to the index
# as callers may write them -> canonical key (the engine normalises; the model just looks up)
SENDER_KEY = {**{s: s for s in SENDERS}, "【S1】": "s1"}
SCOPE_KEY = {**{s: s for s in SENDERS}, "【S2】": "s2", "entity:e1": "entity:e1",
             "Entity:E1": "entity:e1", "entity:e2": "entity:e2", "*": "*"}
AS_OF = (int(time.time()) - 3600) * 1000
TICK = 1000  # times are AS_OF + k * TICK: few values, so ties are common
PAIRS = [(s, n) for s in SENDER_KEY for n in [*NUMBERS, ABSENT]]

masks = st.one_of(st.integers(1, 7), st.just(0xFF))
snapshots = st.tuples(
    st.lists(st.tuples(st.sampled_from(NUMBERS), st.sampled_from(list(SCOPE_KEY)), masks),
             max_size=12),
    st.dictionaries(st.sampled_from(SENDERS[:3]), st.sampled_from(["e1", "e2"]), max_size=3),
)
# (kind, number, scope, category, tick, source)
events = st.tuples(
    st.sampled_from([OPT_OUT, OPT_OUT, OPT_IN, OPT_IN, REASSIGN]), st.sampled_from(NUMBERS),
    st.sampled_from(list(SCOPE_KEY)), st.sampled_from([*CATEGORIES, "all"]),
    st.integers(-2, 5), st.sampled_from(SOURCES[1:]),
)
# an opt-out and an opt-in of the same key at the same time, or an event at a reassignment's
# time: random draws alone rarely meet the tie rules
ties = events.map(lambda e: [e, (OPT_IN if e[0] == OPT_OUT else OPT_OUT, *e[1:])]
                  if e[0] != REASSIGN else [e, (OPT_OUT, e[1], "*", "all", e[4], "api")])
groups = st.one_of(events.map(lambda e: [e]), ties)
# rows of a nightly file: (number, scope, category, tick or None, action)
rows = st.tuples(st.sampled_from(NUMBERS), st.sampled_from(list(SCOPE_KEY)),
                 st.sampled_from([*CATEGORIES, "all"]), st.one_of(st.none(), st.integers(-3, 6)),
                 st.sampled_from(["opt_out", "opt_out", "opt_out", "opt_in", "reassign"]))


def event_lists(max_groups: int, min_groups: int = 0):
    return st.lists(groups, min_size=min_groups, max_size=max_groups).map(
        lambda gs: [e for g in gs for e in g])


def build(entries, links, as_of: int) -> SuppressionIndex:
    return SuppressionIndex.build(
        np.array([n for n, _, _ in entries], np.uint64), [s for _, s, _ in entries],
        np.array([m for _, _, m in entries], np.uint8), entities=links,
        category_names=CATEGORIES, meta={"as_of_ms": as_of, "as_of": str(as_of)},
    )


def mask_of(category: str) -> int:
    return 0xFF if category == "all" else 1 << CATEGORIES.index(category)


class Model:
    """The scenario's statements, as the reference model takes them (one model for every test:
    anning.model.reference). Events are added in the order the engine took them."""

    def __init__(self, entries, links) -> None:
        self.reference = ReferenceModel()
        self.reference.load([(n, SCOPE_KEY[spec], mask) for n, spec, mask in entries], links,
                            AS_OF)

    def add(self, kind, number, spec, category, tick, source) -> None:
        at = AS_OF + tick * TICK
        if kind == REASSIGN:
            self.reference.add(Event(number, "", 0, kind, at, source))
        else:
            self.reference.add(Event(number, SCOPE_KEY[spec], mask_of(category), kind, at,
                                     source))

    def load(self, file_rows, links, as_of_tick: int, events_through: int | None) -> None:
        self.reference.load([_row(*r) for r in file_rows] + [Row(FILLER, "*", 1)], links,
                            AS_OF + as_of_tick * TICK, events_through)

    def decide(self, sender: str, number: int, category: str):
        return self.reference.decide(SENDER_KEY[sender], number, CATEGORIES.index(category))


def _row(number, spec, category, tick, action) -> Row:
    kind = {"opt_out": OPT_OUT, "opt_in": OPT_IN, "reassign": REASSIGN}[action]
    at = None if tick is None else AS_OF + tick * TICK
    if kind == REASSIGN:
        return Row(number, "", 0, at, kind)
    return Row(number, SCOPE_KEY[spec], mask_of(category), at, kind)


def write(engine: Engine, event) -> None:
    kind, number, spec, category, tick, source = event
    at = AS_OF + tick * TICK
    if kind == REASSIGN:
        engine.reassign(number, at, source)
    else:
        (engine.opt_out if kind == OPT_OUT else engine.opt_in)(number, spec, category, at, source)


def write_batch(engine: Engine, batch) -> None:
    """All or none, one fsync: the other way in."""
    engine.apply([engine.make_event(n, s, c, k, AS_OF + t * TICK, src)
                  for k, n, s, c, t, src in batch])


def load(engine: Engine, directory: Path, file_rows, links, as_of_tick: int,
         events_through: int | None) -> None:
    """The nightly load of a file of these rows (and a filler row), through the parser."""
    lines = ["number,sender,category,at,action", f"{FILLER},*,marketing,,"]
    for number, spec, category, tick, action in file_rows:
        at = "" if tick is None else str(AS_OF + tick * TICK)
        sender = "*" if action == "reassign" else f'"{spec}"'
        lines.append(f"{number},{sender},{category},{at},{action}")
    path = directory / "list.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    entities = directory / "entities.csv"
    entities.write_text("sender,entity\n" + "".join(f"{s},{e}\n" for s, e in links.items()),
                        encoding="utf-8")
    engine.load_snapshot([path], LoadOptions(
        entities=entities, as_of=str(AS_OF + as_of_tick * TICK), allow_shrink=True,
        categories=CATEGORIES, events_through=events_through))


def open_engine(data_dir: Path) -> Engine:
    engine = Engine(data_dir=data_dir)
    assert engine.open_snapshot()
    return engine


def assert_agrees(engine: Engine, model: Model, pairs=PAIRS, sources: bool = True) -> None:
    """Every check of `pairs` in every category, one by one and in a batch, and every
    explanation, as the model says."""
    senders = [s for s, _ in pairs]
    numbers = np.array([n for _, n in pairs], np.uint64)
    state = engine.serving()
    sender_ids = engine.sender_ids(senders, state)
    for category in CATEGORIES:
        want = [model.decide(s, n, category) for s, n in pairs]
        got = engine.check_ids(sender_ids, numbers, category, state)
        assert got.tolist() == [int(w.scope) for w in want], category
        for (sender, number), decision in zip(pairs, want, strict=True):
            where = (sender, number, category)
            assert engine.check(sender, number, category) is decision.scope, where
            info = engine.explain(sender, number, category)
            assert (info.suppressed, info.scope, info.matched) == \
                (decision.scope != Scope.NONE, decision.scope, decision.key), (where, info)
            assert (info.origin, info.at_ms) == (decision.origin, decision.at_ms), \
                (where, info, decision)
            if sources:
                assert info.source == decision.source, (where, info, decision)
            opted = [c for b, c in enumerate(CATEGORIES) if decision.categories >> b & 1]
            assert info.categories == opted, (where, info, decision)


# -- 1. arrival order -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(snapshots, event_lists(14), st.data())
def test_any_arrival_order_gives_the_models_answers(snapshot, evs, data):
    one, one_model = Engine(build(*snapshot, AS_OF)), Model(*snapshot)
    for event in data.draw(st.permutations(evs), "order one"):
        write(one, event)
        one_model.add(*event)
    two, two_model = Engine(build(*snapshot, AS_OF)), Model(*snapshot)
    order = data.draw(st.permutations(evs), "order two")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(evs)), max_size=4), "batch cuts"))
    for lo, hi in zip([0, *cuts], [*cuts, len(evs)], strict=True):
        write_batch(two, order[lo:hi])
        for event in order[lo:hi]:
            two_model.add(*event)
    assert_agrees(one, one_model)
    assert_agrees(two, two_model)
    # the answers themselves do not depend on the order (only a full tie's source may)
    assert_agrees(one, two_model, sources=False)


# -- 2. checkpoints and a restart -------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(snapshots, event_lists(10), st.data())
def test_checkpoints_and_a_restart_change_no_answer(snapshot, evs, data):
    model = Model(*snapshot)
    order = data.draw(st.permutations(evs), "order")
    points = data.draw(st.lists(st.booleans(), min_size=len(evs) + 1, max_size=len(evs) + 1),
                       "checkpoint before event i")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        write_snapshot(build(*snapshot, AS_OF), data_dir / SNAPSHOT_NAME)
        engine = open_engine(data_dir)
        for event, point in zip(order, points, strict=False):
            if point:
                engine.checkpoint()
            write(engine, event)
            model.add(*event)
        if points[-1]:
            engine.checkpoint()
        assert_agrees(engine, model)
        engine.source.close()
        engine = open_engine(data_dir)  # checkpoint file + log replay + snapshot
        assert_agrees(engine, model)
        engine.source.close()


# -- 3. a state machine -----------------------------------------------------------------------


class EventsMachine(RuleBasedStateMachine):
    """Writes in any time order, checkpoints, restarts and nightly loads (rows with and without
    `at`, opt-in and reassignment rows, with and without a watermark), in any sequence: the
    engine always answers and explains as the model does."""

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.engine: Engine | None = None
        self.written = 0  # events taken so far: the last sequence

    @initialize(snapshot=snapshots)
    def start(self, snapshot):
        self.model = Model(*snapshot)
        self.links = snapshot[1]
        write_snapshot(build(*snapshot, AS_OF), self.dir / SNAPSHOT_NAME)
        self.engine = open_engine(self.dir)

    def _write(self, event):
        write(self.engine, event)
        self.model.add(*event)
        self.written += 1

    @rule(event=events.map(lambda e: (OPT_OUT, *e[1:])))
    def opt_out(self, event):
        self._write(event)

    @rule(event=events.map(lambda e: (OPT_IN, *e[1:])))
    def opt_in(self, event):
        self._write(event)

    @rule(number=st.sampled_from(NUMBERS), tick=st.integers(-2, 5))
    def reassign(self, number, tick):
        self._write((REASSIGN, number, "", "", tick, "api"))

    @rule(batch=event_lists(3, 1))
    def write_batch(self, batch):
        write_batch(self.engine, batch)
        for event in batch:
            self.model.add(*event)
        self.written += len(batch)

    @rule()
    def checkpoint(self):
        self.engine.checkpoint()

    @rule()
    def rebuild(self):
        # every event resolved again in bulk (as a restart does): no answer changes
        self.engine.rebuild_events()
        assert self.engine.serving().overlay.live_count == 0

    @rule()
    def restart(self):
        self.engine.source.close()
        self.engine = open_engine(self.dir)

    @precondition(lambda self: self.engine is not None)
    @rule(file_rows=st.lists(rows, max_size=8), as_of_tick=st.integers(-1, 6), data=st.data())
    def nightly_load(self, file_rows, as_of_tick, data):
        # a watermark anywhere from the current one to the last sequence, or none declared
        current = self.engine.index.events_through
        through = data.draw(st.one_of(st.none(), st.integers(current, self.written)),
                            "events_through")
        load(self.engine, self.dir, file_rows, self.links, as_of_tick, through)
        self.model.load(file_rows, self.links, as_of_tick, through)

    @invariant()
    def answers_agree(self):
        if self.engine is not None:
            assert_agrees(self.engine, self.model)

    def teardown(self):
        if self.engine is not None and self.engine.source is not None:
            self.engine.source.close()
        self.tmp.cleanup()


EventsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                           deadline=None)
TestEventsMachine = EventsMachine.TestCase


# -- 4. threads -------------------------------------------------------------------------------


def test_writers_checkers_and_checkpoints_share_one_engine(tmp_path):
    own = {k: [8615000000000 + k * 1000 + i for i in range(120)] for k in range(2)}
    control = [8616000000000 + i for i in range(40)]  # written before the threads start
    everything = [*control, *own[0], *own[1]]
    rng = random.Random(11)
    entries = [(n, rng.choice(list(SCOPE_KEY)), rng.randrange(1, 8))
               for n in rng.sample(everything, 100)]
    links = {"s1": "e1", "s2": "e1", "s3": "e2"}

    def random_event(numbers: list[int]):
        kind = rng.choice([OPT_OUT, OPT_OUT, OPT_IN, REASSIGN])
        return (kind, rng.choice(numbers), rng.choice(list(SCOPE_KEY)),
                rng.choice([*CATEGORIES, "all"]), rng.randint(1, 6), "api")

    before = [random_event(control) for _ in range(80)]
    planned = {k: [random_event(own[k]) for _ in range(240)] for k in own}
    write_snapshot(build(entries, links, AS_OF), tmp_path / SNAPSHOT_NAME)
    engine = open_engine(tmp_path)
    model = Model(entries, links)
    for event in before:
        write(engine, event)
        model.add(*event)
    pairs = [(s, n) for s in SENDER_KEY for n in everything]
    senders = [s for s, _ in pairs]
    numbers = np.array([n for _, n in pairs], np.uint64)
    fixed = np.array([n in set(control) for _, n in pairs])
    expected = {c: np.array([model.decide(s, n, c).scope for s, n in pairs], np.uint8)
                for c in CATEGORIES}
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        mine = Model(entries, links)  # no other thread writes these numbers
        for event in planned[k]:
            write(engine, event)
            mine.add(*event)
            for s, c in [(s, c) for s in SENDER_KEY for c in CATEGORIES]:
                # every check that starts after the acknowledgement sees the write
                assert engine.check(s, event[1], c) is mine.decide(s, event[1], c).scope, event

    def checker(k: int) -> None:
        while not stop.is_set():
            c = CATEGORIES[k % 3]
            state = engine.serving()
            got = engine.check_ids(engine.sender_ids(senders, state), numbers, c, state)
            assert np.array_equal(got[fixed], expected[c][fixed]), c
            k += 1

    def checkpointer(_: int) -> None:
        while not stop.is_set():
            engine.checkpoint()
            time.sleep(0.002)

    def guarded(body, k: int) -> None:
        try:
            body(k)
        except BaseException as exc:  # raised again in the main thread
            errors.append(exc)

    writers = [threading.Thread(target=guarded, args=(writer, k)) for k in own]
    others = [threading.Thread(target=guarded, args=(body, k))
              for body, k in ((checker, 0), (checker, 1), (checkpointer, 0))]
    for t in writers + others:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in others:
        t.join()
    if errors:  # the first with its thread's traceback, all of them named
        raise AssertionError(f"{len(errors)} thread(s) failed: {errors!r}") from errors[0]
    # the writers' events in the engine's order (their sequences), for the sources of ties
    for event in sorted(engine._held_events().events(), key=lambda e: e.sequence):
        if event.sequence > len(before):
            model.reference.add(event)
    assert_agrees(engine, model, pairs)
    engine.checkpoint()
    engine.source.close()
    engine = open_engine(tmp_path)  # every acknowledged write is on disk
    assert_agrees(engine, model, pairs)
    engine.source.close()


@pytest.mark.parametrize("order", ["kept", "reordered", "extended"])
def test_a_load_with_other_categories_maps_the_events_by_name(tmp_path, order):
    """Events hold category bits in the data directory's order; a load whose list names the
    categories in another order (or adds one) keeps that order, the new ones after it, so an
    event's bits keep their meaning. A list built by hand that would renumber them is
    refused."""
    engine = Engine(data_dir=tmp_path)
    names = {"kept": ("marketing", "notification"), "reordered": ("notification", "marketing"),
             "extended": ("otp", "notification", "marketing")}[order]
    first = tmp_path / "first.csv"
    first.write_text("number,sender,category\n13800000001,shop,notification\n", "utf-8")
    engine.load_snapshot([first], LoadOptions(as_of=str(AS_OF),
                                              categories=("marketing", "notification")))
    engine.opt_out("13800000002", "shop", "notification", at_ms=AS_OF + TICK)
    engine.opt_out("13800000003", "shop", "marketing", at_ms=AS_OF + TICK)
    second = tmp_path / "second.csv"
    second.write_text("number,sender,category\n13800000004,shop,marketing\n", "utf-8")
    engine.load_snapshot([second], LoadOptions(as_of=str(AS_OF + 2 * TICK), categories=names,
                                               allow_shrink=True))
    assert engine.index.categories[:2] == ("marketing", "notification")
    want = {("13800000002", "notification"): Scope.SENDER,
            ("13800000002", "marketing"): Scope.NONE,
            ("13800000003", "marketing"): Scope.SENDER,
            ("13800000003", "notification"): Scope.NONE,
            ("13800000004", "marketing"): Scope.SENDER}
    for restarted in (False, True):
        if restarted:
            engine.source.close()
            engine = open_engine(tmp_path)
        for (number, category), scope in want.items():
            assert engine.check("shop", number, category) is scope, (number, category)
    with pytest.raises(Exception, match="categories"):
        engine.swap(SuppressionIndex.build(["13800000009"], ["shop"],
                                           category_names=("notification", "marketing")))

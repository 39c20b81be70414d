"""Real-time events (SPEC §4) against the reference model (anning.model.reference), with
hypothesis.

The model keeps every event as written and decides each check from scratch: at each level
(sender, entity of the sender, global) the latest statement about (number, scope, category)
wins - a snapshot entry counts as said at as_of, an event only when later than as_of, an
opt-out beats an opt-in at the same time - after dropping whatever is older than the number's
latest reassignment. It shares no code with anning.model.events, and knows nothing of arrival
order, checkpoints or restarts, which must change no answer."""

import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from anning import Scope, SuppressionIndex, write_snapshot
from anning._events import NumberSet
from anning.engine import Engine
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, REASSIGN_SCOPE, Event, EventTable
from anning.model.reference import ReferenceModel
from anning.model.scopes import SOURCES
from anning.storage.layout import SNAPSHOT_NAME

CATEGORIES = ("marketing", "notification", "otp")
NUMBERS = [8613800000001, 8613800000002, 8613900000003]
ABSENT = 8613700000009  # in no snapshot and no event
SENDERS = ["s1", "s2", "s3", "s4"]  # s4 never has an entity; any may be unknown to the index
# as callers may write them -> canonical key (the engine normalises; the model just looks up)
SENDER_KEY = {**{s: s for s in SENDERS}, "【S1】": "s1"}
SCOPE_KEY = {**{s: s for s in SENDERS}, "【S2】": "s2", "entity:e1": "entity:e1",
             "Entity:E1": "entity:e1", "entity:e2": "entity:e2", "*": "*"}
AS_OF = (int(time.time()) - 3600) * 1000
TICK = 1000  # event times are AS_OF + k * TICK: few values, so ties are common
PAIRS = [(s, n) for s in SENDER_KEY for n in [*NUMBERS, ABSENT]]

HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

masks = st.integers(1, 0xFF)
snapshots = st.tuples(
    st.lists(st.tuples(st.sampled_from(NUMBERS), st.sampled_from(list(SCOPE_KEY)), masks),
             max_size=12),
    st.dictionaries(st.sampled_from(SENDERS[:3]), st.sampled_from(["e1", "e2"]), max_size=3),
)
# (kind, number, scope, category, tick, source); tick 0 is as_of itself: superseded, ignored
events = st.tuples(
    st.sampled_from([OPT_OUT, OPT_OUT, OPT_IN, OPT_IN, REASSIGN]), st.sampled_from(NUMBERS),
    st.sampled_from(list(SCOPE_KEY)), st.sampled_from([*CATEGORIES, "all"]),
    st.integers(0, 5), st.sampled_from(SOURCES[1:]),
)
# an opt-out and an opt-in of the same key at the same time, or an event at a reassignment's
# time: random draws alone rarely meet the tie rules
ties = events.map(lambda e: [e, (OPT_IN if e[0] == OPT_OUT else OPT_OUT, *e[1:])]
                  if e[0] != REASSIGN else [e, (OPT_OUT, e[1], "*", "all", e[4], "api")])
groups = st.one_of(events.map(lambda e: [e]), ties)


def event_lists(max_groups: int, min_groups: int = 0):
    return st.lists(groups, min_size=min_groups, max_size=max_groups).map(
        lambda gs: [e for g in gs for e in g])


def build(entries, links, as_of: int) -> SuppressionIndex:
    return SuppressionIndex.build(
        np.array([n for n, _, _ in entries], np.uint64), [s for _, s, _ in entries],
        np.array([m for _, _, m in entries], np.uint8), entities=links,
        category_names=CATEGORIES, meta={"as_of_ms": as_of, "as_of": str(as_of)},
    )


class Model:
    """The scenario's statements, as the reference model of SPEC §4 takes them (one model for
    every test: anning.model.reference)."""

    def __init__(self, entries, links, evs=()) -> None:
        self.reference = ReferenceModel()
        self.load(entries, links, AS_OF)
        for event in evs:
            self.add(*event)

    def load(self, entries, links, as_of: int) -> None:
        """A snapshot: it replaces every event up to its as_of (kept, no longer counted)."""
        self.as_of = as_of
        self.reference.load(((n, SCOPE_KEY[spec], mask) for n, spec, mask in entries), links,
                            as_of)

    def add(self, kind, number, spec, category, tick, source) -> None:
        at = AS_OF + tick * TICK
        if kind == REASSIGN:
            self.reference.add(Event(number, "", 0, kind, at, source))
            return
        mask = 0xFF if category == "all" else 1 << CATEGORIES.index(category)
        self.reference.add(Event(number, SCOPE_KEY[spec], mask, kind, at, source))

    def decide(self, sender: str, number: int, category: str) -> tuple[Scope, str, int]:
        """(level, matched key, time of the deciding event; 0 when the snapshot decided)."""
        decision = self.reference.decide(SENDER_KEY[sender], number,
                                          CATEGORIES.index(category))
        if decision.scope == Scope.NONE:
            return Scope.NONE, "", 0
        return decision.scope, decision.key, decision.at_ms


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


def open_engine(data_dir: Path) -> Engine:
    engine = Engine(data_dir=data_dir)
    assert engine.open_snapshot()
    return engine


def assert_agrees(engine: Engine, model: Model, pairs=PAIRS) -> None:
    senders = [s for s, _ in pairs]
    numbers = np.array([n for _, n in pairs], np.uint64)
    sender_ids = engine.index.sender_ids(senders)
    for category in CATEGORIES:
        want = [model.decide(s, n, category) for s, n in pairs]
        # the batch path; sender_of lets a sender unknown to the index find its own events
        got = engine.check_ids(sender_ids, numbers, category, sender_of=senders.__getitem__)
        assert got.tolist() == [int(w[0]) for w in want], category
        for (sender, number), (level, key, at) in zip(pairs, want, strict=True):
            where = (sender, number, category)
            assert engine.check(sender, number, category) is level, where
            info = engine.explain(sender, number, category)
            assert (info.suppressed, info.scope, info.matched) == \
                (level != Scope.NONE, level, key), (where, info)
            if level != Scope.NONE:
                assert (info.origin, info.at_ms) == \
                    ("event" if at else "snapshot", at), (where, info)
                assert category in info.categories, (where, info)


# -- 1. arrival order -------------------------------------------------------------------------


@settings(max_examples=300, **HYP)
@given(snapshots, event_lists(14), st.data())
def test_any_arrival_order_gives_the_models_answers(snapshot, evs, data):
    model = Model(*snapshot, evs)
    one = Engine(build(*snapshot, AS_OF))
    for event in data.draw(st.permutations(evs), "order one"):
        write(one, event)
    two = Engine(build(*snapshot, AS_OF))
    order = data.draw(st.permutations(evs), "order two")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(evs)), max_size=4), "batch cuts"))
    for lo, hi in zip([0, *cuts], [*cuts, len(evs)], strict=True):
        write_batch(two, order[lo:hi])
    assert_agrees(one, model)
    assert_agrees(two, model)


# -- 2. checkpoints and a restart -------------------------------------------------------------


@settings(max_examples=60, **HYP)
@given(snapshots, event_lists(10), st.data())
def test_checkpoints_and_a_restart_change_no_answer(snapshot, evs, data):
    model = Model(*snapshot, evs)
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
        if points[-1]:
            engine.checkpoint()
        assert_agrees(engine, model)
        engine.source.close()
        engine = open_engine(data_dir)  # checkpoint file + log replay + snapshot swap
        assert_agrees(engine, model)
        engine.source.close()


# -- 3. a state machine -----------------------------------------------------------------------


class EventsMachine(RuleBasedStateMachine):
    """Writes in any time order, checkpoints, restarts and newer snapshots, in any sequence:
    the engine always answers as the model does."""

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.engine: Engine | None = None

    @initialize(snapshot=snapshots)
    def start(self, snapshot):
        self.model = Model(*snapshot)
        write_snapshot(build(*snapshot, AS_OF), self.dir / SNAPSHOT_NAME)
        self.engine = open_engine(self.dir)

    def _write(self, event):
        write(self.engine, event)
        self.model.add(*event)

    @rule(event=events.map(lambda e: (OPT_OUT, *e[1:])))
    def opt_out(self, event):
        self._write(event)

    @rule(event=events.map(lambda e: (OPT_IN, *e[1:])))
    def opt_in(self, event):
        self._write(event)

    @rule(number=st.sampled_from(NUMBERS), tick=st.integers(0, 5))
    def reassign(self, number, tick):
        self._write((REASSIGN, number, "", "", tick, "api"))

    @rule(batch=event_lists(3, 1))
    def write_batch(self, batch):
        write_batch(self.engine, batch)
        for event in batch:
            self.model.add(*event)

    @rule()
    def checkpoint(self):
        self.engine.checkpoint()

    @rule()
    def restart(self):
        self.engine.source.close()
        self.engine = open_engine(self.dir)

    @precondition(lambda self: self.model.as_of < AS_OF + 4 * TICK)
    @rule(snapshot=snapshots, later=st.integers(1, 2))
    def newer_snapshot(self, snapshot, later):
        # the nightly load: its list replaces every event up to its as_of, later ones stay
        as_of = self.model.as_of + later * TICK
        write_snapshot(build(*snapshot, as_of), self.dir / SNAPSHOT_NAME)
        assert self.engine.open_snapshot()
        self.model.load(*snapshot, as_of)

    @invariant()
    def answers_agree(self):
        assert_agrees(self.engine, self.model)

    def teardown(self):
        if self.engine is not None and self.engine.source is not None:
            self.engine.source.close()
        self.tmp.cleanup()


EventsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, **HYP)
TestEventsMachine = EventsMachine.TestCase


# -- 4. the parts: NumberSet, EventTable ------------------------------------------------------

C = 0x9E3779B97F4A7C15  # NumberSet's multiplier: numbers made from its inverse share a slot
SAME_SLOT = [((63 << 58) + j) * pow(C, -1, 1 << 64) % (1 << 64) for j in range(1, 40)]
uint64s = st.one_of(st.integers(1, (1 << 64) - 1), st.integers(1, 50),
                    st.sampled_from([1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, *SAME_SLOT]))


@settings(max_examples=300, **HYP)
@given(st.lists(st.lists(uint64s, max_size=40), max_size=6), st.lists(uint64s, max_size=40),
       st.booleans())
def test_number_set_is_a_set(batches, queries, as_arrays):
    numbers, model = NumberSet(), set()
    for batch in batches:
        numbers.add_many(np.array(batch, np.uint64) if as_arrays else batch)
        model.update(batch)
        assert len(numbers) == len(model)
    asked = [*queries, *model]
    assert numbers.contains(np.array(asked, np.uint64)).tolist() == [q in model for q in asked]
    assert all((q in numbers) == (q in model) for q in queries)
    assert numbers.to_array().tolist() == sorted(model)
    assert numbers.nbytes >= 4 * 8 * len(model)  # at most a quarter full


def test_number_set_grows_one_by_one_and_in_bulk():
    rng = np.random.default_rng(7)
    numbers, model = NumberSet(), []
    for x in rng.integers(1, 1 << 63, 3000, dtype=np.uint64).tolist():
        numbers.add(x)
        model.append(x)
    numbers.add_many(np.array([*SAME_SLOT, *model[:500]], np.uint64))  # duplicates change nothing
    model = set(model) | set(SAME_SLOT)
    assert len(numbers) == len(model)
    assert numbers.contains(np.array(sorted(model), np.uint64)).all()
    absent = rng.integers(1 << 63, (1 << 64) - 1, 3000, dtype=np.uint64)
    assert not numbers.contains(absent).any()
    assert NumberSet(np.array(sorted(model), np.uint64)).to_array().tolist() == sorted(model)


def test_number_set_refuses_zero():
    numbers = NumberSet([5, 7])
    for bad in ([0], [9, 0, 11], np.zeros(3, np.uint64)):
        with pytest.raises(ValueError):
            numbers.add_many(bad)
        assert numbers.to_array().tolist() == [5, 7]  # nothing of a refused batch is kept
    with pytest.raises(ValueError):
        numbers.add(0)
    with pytest.raises(ValueError):
        NumberSet([3, 0])
    assert 0 not in numbers
    assert NumberSet().contains(np.array([0, 1], np.uint64)).tolist() == [0, 0]  # empty


def table_event(kind, number, scope, mask, at, source) -> Event:
    if kind == REASSIGN:
        return Event(number, "", 0, kind, at, source)
    return Event(number, scope, mask, kind, at, source)


table_events = st.builds(
    table_event, st.sampled_from([OPT_OUT, OPT_IN, REASSIGN]), st.sampled_from(NUMBERS),
    st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 0xFF), st.integers(1, 8),
    st.sampled_from(SOURCES),
)


def table_model(rows: dict, events_, after: int) -> dict:
    """rows: (number, scope, bit) -> every (at, opt-out?, source) said; bit -1: reassignment.
    Folding keeps rows later than `after` only, the old as well as the new."""
    rows = {k: list(v) for k, v in rows.items()}
    for e in events_:
        bits = [-1] if e.kind == REASSIGN else [b for b in range(8) if e.mask >> b & 1]
        for bit in bits:
            rows.setdefault((e.number, e.scope, bit), []).append(
                (e.at_ms, e.kind == OPT_OUT, e.source))
    rows = {k: [r for r in v if r[0] > after] for k, v in rows.items()}
    return {k: v for k, v in rows.items() if v}


def assert_table_is(table: EventTable, rows: dict) -> None:
    winners = {k: max((at, out) for at, out, _ in v) for k, v in rows.items()}
    got = {}
    for e in table.events():
        key = (e.number, e.scope, -1 if e.kind == REASSIGN else e.mask.bit_length() - 1)
        assert key not in got, f"two rows for {key}"
        got[key] = (e.at_ms, e.kind == OPT_OUT)
        # of events tied on (time, kind), any one's source will do
        assert e.source in {s for at, out, s in rows[key] if (at, out) == got[key]}
    assert got == winners
    assert sorted(table.scopes) == sorted({s for _, s, b in rows if b >= 0})  # compacted
    c = table.columns
    keys = list(zip(c["number"].tolist(), c["scope"].tolist(), c["bit"].tolist(), strict=True))
    assert keys == sorted(set(keys))  # sorted and unique: searchsorted finds them
    assert all(s == REASSIGN_SCOPE or s < len(table.scopes) for _, s, _ in keys)
    assert table.unique_numbers().tolist() == sorted({n for n, _, _ in rows})
    for number in [*NUMBERS, ABSENT]:
        r = table.reassignment(number)
        assert (r and r.at_ms) == (winners.get((number, "", -1), (None,))[0])
        for scope in "abcde":
            for bit in range(8):
                e = table.latest(number, scope, bit)
                assert (e and (e.at_ms, e.opt_out)) == winners.get((number, scope, bit))


@settings(max_examples=300, **HYP)
@given(st.lists(st.tuples(st.lists(table_events, max_size=15), st.integers(0, 6)), max_size=4),
       st.integers(0, 9))
def test_event_table_fold_and_after(folds, as_of):
    table, rows = EventTable.empty(), {}
    for batch, after in folds:
        table = table.fold(batch, after)
        rows = table_model(rows, batch, after)
        assert_table_is(table, rows)
    assert_table_is(table.after(as_of), table_model(rows, [], as_of))


def test_event_table_fold_of_more_than_a_chunk():
    rng = random.Random(5)
    evs = [table_event(rng.choice([OPT_OUT, OPT_IN, REASSIGN]), rng.choice(NUMBERS),
                       rng.choice("abcd"), rng.randrange(256), rng.randrange(1, 60),
                       rng.choice(SOURCES)) for _ in range(25_000)]
    # ~75,000 rows: the fold takes them in several chunks
    table = EventTable.empty().fold(evs[:5000]).fold(evs[5000:], 10)
    assert_table_is(table, table_model(table_model({}, evs[:5000], 0), evs[5000:], 10))


# -- 5. threads -------------------------------------------------------------------------------


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
    model = Model(entries, links, before)
    write_snapshot(build(entries, links, AS_OF), tmp_path / SNAPSHOT_NAME)
    engine = open_engine(tmp_path)
    for event in before:
        write(engine, event)
    pairs = [(s, n) for s in SENDER_KEY for n in everything]
    senders = [s for s, _ in pairs]
    numbers = np.array([n for _, n in pairs], np.uint64)
    fixed = np.array([n in set(control) for _, n in pairs])
    expected = {c: np.array([model.decide(s, n, c)[0] for s, n in pairs], np.uint8)
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
                assert engine.check(s, event[1], c) is mine.decide(s, event[1], c)[0], event

    def checker(k: int) -> None:
        sender_ids = engine.index.sender_ids(senders)
        while not stop.is_set():
            c = CATEGORIES[k % 3]
            got = engine.check_ids(sender_ids, numbers, c, sender_of=senders.__getitem__)
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
    for event in planned[0] + planned[1]:
        model.add(*event)
    assert_agrees(engine, model, pairs)
    engine.checkpoint()
    engine.source.close()
    engine = open_engine(tmp_path)  # every acknowledged write is on disk
    assert_agrees(engine, model, pairs)
    engine.source.close()

"""The compiled check with events over long batches: checks of numbers with real-time events
are decided in the list's pipeline, their keys fetched groups ahead of use and a check the
events decide alone answered without the list, so a batch of thousands (many groups, numbers
with and without events mixed, repeated, in any order) must answer each check as
anning.model.reference does and as the same check alone does."""

import random

import numpy as np
import pytest

from anning import InvalidInput, SuppressionIndex
from anning.engine import Engine
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.model.reference import ReferenceModel
from anning.model.scopes import ENTITY_PREFIX, GLOBAL

AS_OF = 1_790_000_000_000
SENDERS = [f"shop{i}" for i in range(12)] + ["only-events"]  # the last one no row has
ENTITIES = {f"shop{i}": f"grp{i % 3}" for i in range(9)}
CATEGORIES = ("marketing", "notification")


def test_long_batches_answer_as_the_reference_and_as_single_checks():
    rng = random.Random(13)
    numbers = [8613800000000 + i for i in range(3000)]
    rows = []
    for n in rng.sample(numbers, 1500):
        key = rng.choice([*SENDERS[:12], *(ENTITY_PREFIX + e for e in ("grp0", "grp1")),
                          GLOBAL])
        rows.append((n, key, rng.choice([1, 2, 3])))
    index = SuppressionIndex.build(
        [r[0] for r in rows], [r[1] for r in rows],
        [["marketing", "notification", "all"][r[2] - 1] for r in rows],
        {s: e for s, e in ENTITIES.items()}, meta={"as_of_ms": AS_OF})
    engine = Engine(index, write_log=False)
    model = ReferenceModel()
    model.load(rows, ENTITIES, AS_OF)
    # events on 1,200 of the numbers (listed or not), later and earlier than the list
    for k in range(2500):
        number = rng.choice(numbers[:1200])
        kind = rng.choices([OPT_OUT, OPT_IN, REASSIGN], [80, 17, 3])[0]
        at = AS_OF + rng.randint(-3_600_000, 3_600_000)
        scope = "" if kind == REASSIGN else rng.choice(
            [*SENDERS, ENTITY_PREFIX + "grp1", ENTITY_PREFIX + "grp2", GLOBAL])
        mask = 0 if kind == REASSIGN else rng.choice([1, 2, 3])
        event = engine.make_event(number, scope, ["", "marketing", "notification", "all"][mask],
                                  kind, at, "api")
        sequence = engine.apply([event])
        model.add(Event(number, scope, mask, kind, at, "api", sequence))
        if k == 1200:
            engine.rebuild_events()  # some in the compact table, the rest taken one by one

    checks = [(rng.choice(SENDERS), rng.choice(numbers)) for _ in range(9000)]
    checks += [(s, n) for s, n in checks[:500]]  # repeated numbers within a batch
    rng.shuffle(checks)
    state = engine.serving()
    ids = engine.sender_ids([s for s, _ in checks], state)
    nums = np.array([n for _, n in checks], np.uint64)
    assert state.overlay.decisions.contains(nums).mean() > 0.3  # many chunks' worth
    for bit, category in enumerate(CATEGORIES):
        want = [int(model.decide(s, n, bit).scope) for s, n in checks]
        got = engine.check_ids(ids, nums, category, state)
        assert got.tolist() == want, category
        alone = [int(engine.check_ids(ids[i:i + 1], nums[i:i + 1], category, state)[0])
                 for i in range(0, len(checks), 7)]
        assert alone == want[::7], category
        assert int(want.count(0)) not in (0, len(want))  # both answers are asked


def _engine_with_events(numbers: list[int], scopes: list[str]) -> Engine:
    index = SuppressionIndex.build([8613900000000], ["shop0"], ["marketing"], ENTITIES,
                                   meta={"as_of_ms": AS_OF})
    engine = Engine(index, write_log=False)
    engine.apply([engine.make_event(n, s, "marketing", OPT_OUT, AS_OF + 1, "api")
                  for n in numbers for s in scopes])
    return engine


def test_checks_with_events_refuse_bad_numbers_and_sender_ids_at_their_position():
    """The kernel with events checks its input as the list's does, and names the item, deep
    in a batch as well as first."""
    engine = _engine_with_events([8613800000001], ["shop1"])
    state = engine.serving()
    ids = engine.sender_ids(["shop1"] * 300, state)
    nums = np.full(300, 8613800000001, np.uint64)
    assert engine.check_ids(ids, nums, "marketing", state).tolist() == [1] * 300
    bad = nums.copy()
    bad[217] = 0
    with pytest.raises(InvalidInput, match=r"numbers\[217\]: 0 is not an E.164 number"):
        engine.check_ids(ids, bad, "marketing", state)
    bad_ids = ids.copy()
    bad_ids[250] = 99999
    with pytest.raises(InvalidInput, match=r"sender_ids\[250\]: 99999 is not a sender id"):
        engine.check_ids(bad_ids, nums, "marketing", state)


def test_a_number_with_more_keys_than_a_line_holds_is_decided_by_each():
    """A number's keys run on past its home line (4 slots) when it has many scopes: a check
    must read on to the key of its own scope, and the filter must pass every number that has
    keys, however many numbers the table grew through."""
    senders = [f"shop{i}" for i in range(12)]
    many = [8613700000000 + i for i in range(3)]
    engine = _engine_with_events(many, senders)  # 12 keys a number
    others = [8613600000000 + 7 * i for i in range(5000)]  # the table and its filter grow
    engine.apply([engine.make_event(n, "shop0", "marketing", OPT_OUT, AS_OF + 1, "api")
                  for n in others])
    state = engine.serving()
    checks = [(s, n) for n in many for s in senders] + [("shop0", n) for n in others]
    ids = engine.sender_ids([s for s, _ in checks], state)
    nums = np.array([n for _, n in checks], np.uint64)
    assert engine.check_ids(ids, nums, "marketing", state).tolist() == [1] * len(checks)
    # and numbers without events pass by: not suppressed, whatever the filter says of them
    free = np.array([8613500000000 + i for i in range(5000)], np.uint64)
    ids = engine.sender_ids(["shop0"] * len(free), state)
    assert engine.check_ids(ids, free, "marketing", state).tolist() == [0] * len(free)

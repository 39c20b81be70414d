"""Fuzz target: the compiled check with real-time events (anning._index.IndexCore.check_ids
with a DecisionTable: `check_with_events`, its filter of numbers with events and its table of
keys), driven through Engine as a server drives it.

An input is a program: events (opt-outs, opt-ins, reassignments) about a small pool of numbers
and scopes (so that one number has many keys and their run of slots goes on past its home
line), taken a write at a time or resolved again in bulk, with filler opt-outs of other
numbers that make the tables and the filter grow; then every (sender, number) of the pool,
numbers of the filler and numbers nobody named, in both categories, in one batch. Properties:
- every answer of the batch is what anning.model.reference says (SPEC §2, §4, §5), and what
  the same check alone answers;
- a batch with a bad number or sender id anywhere in it is refused with InvalidInput naming
  that position; nothing else is raised.
Run: python fuzz/fuzz_checks.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    import numpy as np

    from anning import InvalidInput, SuppressionIndex
    from anning.engine import Engine
    from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
    from anning.model.reference import ReferenceModel

AS_OF = 1_790_000_000_000
POOL = [8613800000000 + 7 * k for k in range(12)]
SENDERS = ["s0", "s1", "s2", "s3", "s4", "only-events"]  # the last: no row names it
ENTITIES = {"s0": "e0", "s1": "e0", "s2": "e1", "s3": "e1"}
SCOPES = [*SENDERS, "entity:e0", "entity:e1", "entity:e9", "*"]
CATEGORIES = ("marketing", "notification")
MASKS = ("", "marketing", "notification", "all")
KINDS = (OPT_OUT, OPT_IN, REASSIGN)
ROWS = [(POOL[k], SCOPES[(3 * k) % 10 if (3 * k) % 10 != 5 else 9], 1 + k % 3)
        for k in range(len(POOL))] + [(POOL[k], "s0", 2) for k in range(0, 12, 4)]
ABSENT = [8613900000000 + k for k in range(4)]


def build() -> tuple[Engine, ReferenceModel]:
    index = SuppressionIndex.build(
        [r[0] for r in ROWS], [r[1] for r in ROWS],
        [["marketing", "notification", "all"][r[2] - 1] for r in ROWS], ENTITIES,
        meta={"as_of_ms": AS_OF})
    model = ReferenceModel()
    model.load(ROWS, ENTITIES, AS_OF)
    return Engine(index, write_log=False), model


def take(engine: Engine, model: ReferenceModel, events: list[tuple]) -> None:
    made = [engine.make_event(n, s, c, k, at, "api") for n, s, c, k, at in events]
    last = engine.apply(made)
    for i, e in enumerate(made):
        model.add(Event(e.number, e.scope, e.mask, e.kind, e.at_ms, e.source,
                        last - len(made) + 1 + i))


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    engine, model = build()
    filler: list[int] = []
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        action = fdp.ConsumeIntInRange(0, 9)
        if action == 0:
            engine.rebuild_events()  # the keys again in one bulk pass, as after a restart
            continue
        if action == 1:  # other numbers' opt-outs: the tables and their filter grow
            start = 8613600000000 + 11 * len(filler)
            more = [start + 11 * i for i in range(fdp.ConsumeIntInRange(1, 150))]
            filler += more
            take(engine, model, [(n, "s1", "marketing", OPT_OUT, AS_OF + 5) for n in more])
            continue
        write = []
        for _ in range(fdp.ConsumeIntInRange(1, 8)):
            kind = KINDS[fdp.ConsumeIntInRange(0, 2)]
            number = POOL[fdp.ConsumeIntInRange(0, len(POOL) - 1)]
            at = AS_OF + 1000 * fdp.ConsumeIntInRange(-5, 5)
            if kind == REASSIGN:
                write.append((number, "", "", kind, at))
            else:
                write.append((number, SCOPES[fdp.ConsumeIntInRange(0, len(SCOPES) - 1)],
                              MASKS[fdp.ConsumeIntInRange(1, 3)], kind, at))
        take(engine, model, write)

    numbers = POOL + ABSENT + filler[:: max(1, len(filler) // 50)]
    checks = [(s, n) for n in numbers for s in [*SENDERS, "never-seen"]]
    state = engine.serving()
    ids = engine.sender_ids([s for s, _ in checks], state)
    nums = np.array([n for _, n in checks], np.uint64)
    for bit, category in enumerate(CATEGORIES):
        got = engine.check_ids(ids, nums, category, state).tolist()
        want = [int(model.decide(s, n, bit).scope) for s, n in checks]
        wrong = [(checks[i], got[i], want[i]) for i in range(len(got)) if got[i] != want[i]]
        expect(not wrong, f"{category}: {len(wrong)} answers differ from the reference, "
               f"first (check, anning, reference): {wrong[:1]}")
        one = fdp.ConsumeIntInRange(0, len(checks) - 1)
        alone = int(engine.check_ids(ids[one:one + 1], nums[one:one + 1], category, state)[0])
        expect(alone == want[one], f"{checks[one]} alone: {alone}, in the batch {want[one]}")

    at = fdp.ConsumeIntInRange(0, len(checks) - 1)
    bad_nums, bad_ids = nums.copy(), ids.copy()
    if fdp.ConsumeBool():
        bad_nums[at] = fdp.PickValueInList([0, 10**15, 2**64 - 1])
        field = "numbers"
    else:
        bad_ids[at] = fdp.PickValueInList([len(SENDERS) + 50, 2**31, 0xFFFFFFFE])
        field = "sender_ids"
    try:
        engine.check_ids(bad_ids, bad_nums, CATEGORIES[0], state)
    except InvalidInput as exc:
        expect(f"{field}[{at}]" in str(exc), f"refused, but not naming {field}[{at}]: {exc}")
    else:
        expect(False, f"a bad {field}[{at}] was not refused")


if __name__ == "__main__":
    _harness.run(test_one_input)

"""The index against a plain Python model (a dict), with hypothesis.

The model is SPEC §2 written as directly as possible: a dict (number, scope key) -> mask and a
dict sender -> entity; a check looks up the sender, its entity and `*` in that order."""

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from anning import (
    Scope,
    SuppressionIndex,
    normalize_number,
    normalize_sender,
    read_snapshot,
    write_snapshot,
)

CATEGORIES = ("marketing", "notification", "otp")
# A small pool, so numbers share buckets and carry several scopes.
NUMBERS = [f"1{d}{i:09d}" for d in "3589" for i in (0, 1, 7, 12345678, 987654321)] + [
    "+44 20 7946 0958", "010 1234 5678", "+1 650 253 0000", "+81 3-1234-5678",
]
SENDERS = ["京东", "【淘宝】", "JD", "jd ", "1069012345", "Ａｌｉ", "美团", "s7", "s8"]
ENTITIES = ["京东集团", "alibaba", "E3"]

numbers = st.sampled_from(NUMBERS)
senders = st.sampled_from(SENDERS)
scope_specs = st.one_of(
    senders, st.sampled_from(ENTITIES).map(lambda e: f"entity:{e}"), st.just("*")
)
masks = st.integers(1, 0xFF)
categories = st.sampled_from(CATEGORIES)


class Model:
    def __init__(self):
        self.masks: dict[tuple[int, str], int] = {}
        self.entity_of: dict[str, str] = {}

    @staticmethod
    def key(spec: str) -> str:
        if spec == "*":
            return "*"
        if spec.startswith("entity:"):
            return "entity:" + normalize_sender(spec[7:])
        return normalize_sender(spec)

    def add(self, number: str, spec: str, mask: int) -> None:
        k = (normalize_number(number), self.key(spec))
        self.masks[k] = self.masks.get(k, 0) | mask

    def check(self, sender: str, number: str, category: str) -> Scope:
        bit = 1 << CATEGORIES.index(category)
        num, name = normalize_number(number), normalize_sender(sender)
        if self.masks.get((num, name), 0) & bit:
            return Scope.SENDER
        entity = self.entity_of.get(name)
        if entity and self.masks.get((num, "entity:" + entity), 0) & bit:
            return Scope.ENTITY
        if self.masks.get((num, "*"), 0) & bit:
            return Scope.GLOBAL
        return Scope.NONE

    def build(self) -> SuppressionIndex:
        items = list(self.masks.items())
        return SuppressionIndex.build(
            np.array([n for (n, _), _ in items], np.uint64),
            [s for (_, s), _ in items],
            np.array([m for _, m in items], np.uint8),
            entities=self.entity_of,
            category_names=CATEGORIES,
        )


entries = st.lists(st.tuples(numbers, scope_specs, masks), max_size=60)
links = st.dictionaries(senders, st.sampled_from(ENTITIES), max_size=6)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(entries, links, st.lists(st.tuples(senders, numbers, categories), min_size=1, max_size=30))
def test_checks_agree_with_the_model(entries, links, queries):
    model = Model()
    for number, spec, mask in entries:
        model.add(number, spec, mask)
    model.entity_of = {normalize_sender(s): normalize_sender(e) for s, e in links.items()}
    # Built from raw text, duplicates and all, as a loader would.
    idx = SuppressionIndex.build(
        [n for n, _, _ in entries] or [],
        [s for _, s, _ in entries],
        np.array([m for _, _, m in entries], np.uint8),
        entities=links,
        category_names=CATEGORIES,
    )
    assert len(idx) == len(model.masks)
    for sender, number, category in queries:
        assert idx.check(sender, number, category) is model.check(sender, number, category)
    # The batch path answers the same.
    for category in CATEGORIES:
        got = idx.check_batch([q[0] for q in queries], [q[1] for q in queries], category)
        assert got.tolist() == [model.check(s, n, category) for s, n, _ in queries]


class IndexMachine(RuleBasedStateMachine):
    """Entries arrive, the index is rebuilt and reloaded; it always agrees with the model as
    it was at the last rebuild."""

    def __init__(self):
        super().__init__()
        self.model = Model()
        self.built = None  # the model as of the last rebuild
        self.idx = None

    @rule(number=numbers, spec=scope_specs, mask=masks)
    def add_entry(self, number, spec, mask):
        self.model.add(number, spec, mask)

    @rule(sender=senders, entity=st.sampled_from(ENTITIES))
    def link(self, sender, entity):
        self.model.entity_of[normalize_sender(sender)] = normalize_sender(entity)

    @rule()
    def rebuild(self):
        self.idx = self.model.build()
        self.built = Model()
        self.built.masks = dict(self.model.masks)
        self.built.entity_of = dict(self.model.entity_of)

    @precondition(lambda self: self.idx is not None)
    @rule()
    def save_and_load(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.anx"
            write_snapshot(self.idx, path)
            self.idx = read_snapshot(path)

    @precondition(lambda self: self.idx is not None)
    @rule(sender=senders, number=numbers, category=categories)
    def check(self, sender, number, category):
        assert self.idx.check(sender, number, category) is self.built.check(
            sender, number, category
        )

    @invariant()
    def index_holds_exactly_the_model(self):
        if self.idx is None:
            return
        self.idx.verify()
        nums, scopes, idx_masks = self.idx.entries()
        got = {
            (int(n), self.idx.scopes[s]): int(m)
            for n, s, m in zip(nums, scopes, idx_masks, strict=True)
        }
        assert got == self.built.masks
        assert self.idx.entities() == self.built.entity_of


IndexMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestIndexMachine = IndexMachine.TestCase

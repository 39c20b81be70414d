"""A small list and its events for the write-side tests: answers compared with the reference.

Even numbers from BASE have a sender entry (s1, marketing) and a global one (notification);
odd numbers an entity entry (entity:e, every category); sender s3 has none, and no entity.
`expected(events, numbers)` is what the reference model (anning.model.reference) answers given
only the events acknowledged; `answers(engine, numbers)` what an engine answers, in the same
order: every sender, every category, every number.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from anning.engine import Engine
from anning.index import SuppressionIndex
from anning.model.events import Event
from anning.model.reference import ReferenceModel
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import segment_name

__all__ = [
    "AS_OF_MS",
    "BASE",
    "CATEGORIES",
    "ENTITIES",
    "INDEX",
    "NOW_MS",
    "SCOPES",
    "SEG1",
    "SENDERS",
    "SNAP",
    "SOURCES",
    "answers",
    "at",
    "engine_on",
    "expected",
    "opt_outs",
    "reference",
    "seg_size",
]

NOW_MS = int(time.time() * 1000)
AS_OF_MS = NOW_MS - 3_600_000
BASE = 8613900000000
ENTITIES = {"s1": "e", "s2": "e"}
SENDERS = ("s1", "s2", "s3")
CATEGORIES = ("marketing", "notification")
SCOPES = ("s1", "s3", "entity:e", "*")
SOURCES = ("api", "reply", "customer_service", "complaint_12321", "regulator")
SEG1 = segment_name(1)

SNAP = {**{(n, s): m for n in range(BASE, BASE + 3000, 2) for s, m in (("s1", 1), ("*", 2))},
        **{(n, "entity:e"): 0xFF for n in range(BASE + 1, BASE + 3000, 2)}}
INDEX = SuppressionIndex.build(
    [n for n, _ in SNAP], [s for _, s in SNAP],
    ["all" if m == 0xFF else CATEGORIES[m - 1] for m in SNAP.values()], ENTITIES,
    meta={"as_of_ms": AS_OF_MS, "as_of": "snapshot"})


def reference(events: Iterable[Event]) -> ReferenceModel:
    """The reference model of the scenario's snapshot and these events."""
    model = ReferenceModel()
    model.load(((n, s, m) for (n, s), m in SNAP.items()), ENTITIES, AS_OF_MS)
    for event in events:
        model.add(event)
    return model


def answers(engine: Engine, numbers: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(engine.check(s, n, c)) for n in numbers for s in SENDERS for c in CATEGORIES)


def expected(events: Iterable[Event], numbers: Iterable[int]) -> tuple[int, ...]:
    model = reference(events)
    return tuple(int(model.decide(s, n, b).scope) for n in numbers for s in SENDERS
                 for b in range(len(CATEGORIES)))


def at(seconds: int) -> int:
    """A time `seconds` after the snapshot's as_of (Unix ms)."""
    return AS_OF_MS + 1000 * seconds


def engine_on(data: str | PathLike[str], io: FileIO = OS_IO) -> Engine:
    return Engine(INDEX, data_dir=data, io=io)


def opt_outs(engine: Engine, numbers: Iterable[int], scope: str = "s3",
             seconds: int = 10) -> list[Event]:
    return [engine.opt_out(n, scope, at_ms=at(seconds)) for n in numbers]


def seg_size(data: str | PathLike[str]) -> int:
    return (Path(data) / SEG1).stat().st_size

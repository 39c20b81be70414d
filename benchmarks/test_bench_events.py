"""Checks of numbers that have real-time events, after a checkpoint and a restart, beside
checks of numbers that have none (issue 12, the performance cliff of the check path).

Once events sit in the event table (after a checkpoint or a restart), a check of a number with
events is decided in Python over that table. A binary search of the table's uint64 column with
a Python int made numpy convert the whole column on every call, several times a check: 1.3 ms a
check with 200,000 logged events and 5.9 ms with 1,000,000, against 20 ns for the compiled
kernel. This benchmark keeps such a cliff from coming back unseen: both figures and their ratio
are in the table, per check, at the CI size (--events 200,000) and at full size (1,000,000).
The path is still Python per number with events (microseconds, not milliseconds); a compiled
one is the change feed's issue.

The data directory (once per module): the session's generated list (--entries) as its binary
snapshot; --events events drawn as entries are (opt-outs, 8% opt-ins, 2% reassignments, every
scope and category) made durable with `Engine.apply`, 10,000 a batch; a checkpoint; then a
fresh `Engine` over the directory (the restart) answers. Every answer is checked: the numbers
with events against anning.model.reference (plain Python fed the snapshot's entries and every
event of those numbers), where each is an opt-out that is the last event of its number, so it
must be suppressed; the numbers without events against the exact numpy model of the list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from anning import write_snapshot
from anning.engine import Engine
from anning.model.events import OPT_OUT
from anning.storage.layout import DataDir
from benchmarks.lib import datagen
from benchmarks.lib.oracle import event_checks

QUERIES = 1_000  # checks of numbers with events, and as many of numbers without


@dataclass
class Logged:
    """A data directory with a snapshot and a checkpoint of `events`."""

    path: Path
    events: datagen.Events
    as_of_ms: int
    note: str


@pytest.fixture(scope="module")
def logged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           data: datagen.Dataset, figures) -> Logged:
    n = request.config.getoption("--events")
    if n < 10 * QUERIES:
        raise pytest.UsageError(f"--events: at least {10 * QUERIES:,}")
    u, e = data.universe, data.entries
    path = tmp_path_factory.mktemp("events") / "data"
    path.mkdir()
    now = int(time.time() * 1000)
    as_of = now - 2 * 3_600_000  # the events fall between the snapshot's cut and now
    write_snapshot(datagen.build_index(u, e, meta={"as_of_ms": as_of}), DataDir(path).snapshot)
    events = datagen.generate_events(n, u, as_of, now - 60_000)
    engine = Engine(data_dir=path)
    engine.open_snapshot()
    t0 = time.perf_counter()
    datagen.log_events(engine, events, u)
    t1 = time.perf_counter()
    report = engine.checkpoint()
    t2 = time.perf_counter()
    assert report is not None and report.rows > 0, report
    if engine.source is not None:
        engine.source.close()
    figures.context["events"] = n
    return Logged(path, events, as_of,
                  f"{n:,} events logged in {t1 - t0:.1f} s (Engine.apply, 10,000 a batch), "
                  f"checkpointed in {t2 - t1:.1f} s ({report.rows:,} rows)")


@pytest.fixture(scope="module")
def restarted(logged: Logged):
    """A fresh engine over the data directory: what a restart serves."""
    t0 = time.perf_counter()
    engine = Engine(data_dir=logged.path)
    assert engine.open_snapshot()
    logged.note += f"; the restart took {time.perf_counter() - t0:.2f} s"
    assert engine.status().events > 0  # the events are served from the checkpoint's table
    yield engine
    if engine.source is not None:
        engine.source.close()


@dataclass
class Checks:
    senders: list[str]  # as a caller writes them
    ids: np.ndarray  # the restarted index's sender ids
    numbers: np.ndarray  # uint64
    expected: np.ndarray  # uint8 scope codes, category marketing


@pytest.fixture(scope="module")
def with_events(logged: Logged, restarted: Engine, data: datagen.Dataset) -> Checks:
    """Opt-outs in marketing that are the last event of their number (so each must still be
    suppressed), asked by a sender their scope covers; the answers from the reference."""
    ev = logged.events
    # the last event of each number: the first of each number in the reversed log
    _, first_reversed = np.unique(ev.numbers[::-1], return_index=True)
    last = len(ev) - 1 - first_reversed
    last = last[(ev.kinds[last] == OPT_OUT) & ((ev.masks[last] & 1) == 1)]
    pick = np.sort(np.random.default_rng(5).choice(last, QUERIES, replace=False))
    checks = event_checks(data.universe, data.entries, ev, pick, logged.as_of_ms)
    assert (checks.bits == 0).all()
    assert (checks.expected > 0).all(), "the reference does not suppress a last opt-out"
    senders = [data.universe.senders[c] for c in checks.senders.tolist()]
    return Checks(senders, restarted.index.sender_ids(senders), checks.numbers, checks.expected)


@pytest.fixture(scope="module")
def without_events(logged: Logged, restarted: Engine, data: datagen.Dataset,
                   sender_strings: list[str], oracle) -> Checks:
    """Queries taken from the snapshot's entries (past the Bloom filter, like most numbers
    with events) whose numbers have no event; the answers from the exact numpy model."""
    q = data.queries
    pick = np.flatnonzero(q.present & ~np.isin(q.numbers, logged.events.numbers))[:QUERIES]
    assert pick.size == QUERIES
    senders = [sender_strings[i] for i in pick.tolist()]
    return Checks(senders, restarted.index.sender_ids(senders), q.numbers[pick],
                  oracle.marketing[pick])


def _target(logged: Logged, what: str) -> str:
    return f"{what} after checkpoint + restart, {len(logged.events):,} events"


@pytest.mark.parametrize("numbers", ["with events", "without events"])
def test_check_ids_after_restart(numbers, measure, logged, restarted, with_events,
                                 without_events):
    """ns per check of the batch path (Engine.check_ids: the kernel, then each number with
    events decided over the event table) on numbers that all have events, and on numbers that
    have none."""
    checks = with_events if numbers == "with events" else without_events
    impl = "anning" if numbers == "with events" else "anning, numbers without events"
    note = f"{QUERIES:,} checks; {logged.note}" if numbers == "with events" else ""
    out = measure(_target(logged, "check_ids"), impl,
                  lambda: restarted.check_ids(checks.ids, checks.numbers),
                  per=QUERIES, unit="ns/check", rounds=10, note=note)
    np.testing.assert_array_equal(out, checks.expected)


@pytest.mark.parametrize("numbers", ["with events", "without events"])
def test_check_scalar_after_restart(numbers, measure, logged, restarted, with_events,
                                    without_events):
    """ns per scalar call (Engine.check with text: "【京东】", "13812345678") of a number with
    events and of one without."""
    checks = with_events if numbers == "with events" else without_events
    impl = "anning" if numbers == "with events" else "anning, numbers without events"
    pairs = list(zip(checks.senders, datagen.national(checks.numbers), strict=True))
    check = restarted.check

    def run() -> list[int]:
        return [int(check(s, x)) for s, x in pairs]

    out = measure(_target(logged, "check (scalar)"), impl, run, per=len(pairs),
                  unit="ns/call", rounds=10)
    assert out == checks.expected.tolist()

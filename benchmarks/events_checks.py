"""The check part of benchmarks.events_bench (issue 13 item 6): `Engine.check_ids` on queries
that all have real-time events, beside the same queries against the same list with no events.

Run in a spawned process of its own (`run`: its engines' memory stays out of the bench's), over
the data events_bench made: the base list (`base/`), the events as generated (`events.npz`, the
i-th with sequence i + 1) and their data directory (`events/`: the first half checkpointed, the
rest in the log). Three engines over one list:

- `live`: the list, the first half of the events resolved again in one bulk pass (what a
  checkpoint or a restart gives), then the second half taken as a server takes writes, 1,000
  events a write, each write resolved on its own into the overlay (what a day of writes
  leaves). No write log (nothing here is timed on disk);
- `restart`: `Engine(data_dir=events/)`: the checkpoint and the log read at start;
- `no events`: the list alone (the peer).

The queries: one per event picked (all of them up to --queries), each asked by a sender its
scope covers in a category its mask holds (benchmarks.lib.oracle.event_checks), so every
number asked has events; the peer asks the very same (sender, number, category) triples. A
repetition is one `check_ids` call a category (marketing, then notification: the calls a port
makes), as many times as make two million checks, on each engine in turn, the order reversed
every other repetition. Every answer of every call is checked: the engines with events against
anning.model.reference fed the list's entries and every event of those numbers; the list alone
against the exact numpy model of the list.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib import datagen

__all__ = ["run"]

CATEGORIES = ("marketing", "notification")
LIVE_WRITE = 1_000  # events a write, each write taken on its own (below the engine's BULK_TAKE)


def _engines(work: Path, ev: datagen.Events, u: datagen.Universe) -> tuple[dict, str]:
    """The three engines, and a note of how long each took to make."""
    from anning import read_snapshot
    from anning.engine import Engine
    from anning.storage.layout import DataDir
    from benchmarks.lib.datagen import event_requests

    t0 = time.perf_counter()
    snapshot = DataDir(work / "base").snapshot
    plain = Engine(read_snapshot(snapshot), write_log=False)
    live = Engine(read_snapshot(snapshot), write_log=False)
    half = len(ev) // 2

    def writes(lo: int, hi: int, size: int) -> None:
        for start in range(lo, hi, size):
            live.apply([live.make_event(*w) for w in
                        event_requests(ev, u, start, min(start + size, hi))])

    writes(0, half, 10_000)
    live.rebuild_events()  # one bulk pass, as the checkpoint's events are after a restart
    t1 = time.perf_counter()
    writes(half, len(ev), LIVE_WRITE)
    t2 = time.perf_counter()
    restart = Engine(data_dir=work / "events")
    restart.open_snapshot()
    t3 = time.perf_counter()
    note = (f"live: {half:,} events resolved in bulk in {t1 - t0:.1f} s, then "
            f"{len(ev) - half:,} taken {LIVE_WRITE:,} a write in {t2 - t1:.1f} s "
            f"({live.serving().overlay.live_count:,} taken write by write); restart (checkpoint "
            f"and log read): {t3 - t2:.1f} s")
    return {"live": live, "restart": restart, "no events": plain}, note


def run(work: str, rows: int, as_of_ms: int, queries: int, reps: int) -> dict[str, Any]:
    """Timings (checks/s by engine, one figure a repetition), failures and notes."""
    from benchmarks.events_bench import load_events
    from benchmarks.lib.oracle import ListModel, event_checks

    out: dict[str, Any] = {"failures": [], "notes": [], "raw": {}}
    u = datagen.make_universe()
    e = datagen.generate_entries(rows, u)
    ev = load_events(Path(work))
    engines, made = _engines(Path(work), ev, u)
    rng = np.random.default_rng([datagen.SEED, 61])
    pick = np.sort(rng.choice(len(ev), min(queries, len(ev)), replace=False))
    t0 = time.perf_counter()
    expect = event_checks(u, e, ev, pick, as_of_ms)
    model = ListModel(u, e)
    t1 = time.perf_counter()
    # per category: the queries asking it, each engine's sender ids, and both answers expected
    groups, listed = [], np.empty(len(pick), np.uint8)
    for bit, category in enumerate(CATEGORIES):
        these = np.flatnonzero(expect.bits == bit)
        names = [u.senders[c] for c in expect.senders[these].tolist()]
        groups.append({
            "category": category, "numbers": np.ascontiguousarray(expect.numbers[these]),
            "ids": {k: eng.sender_ids(names) for k, eng in engines.items()},
            "events": expect.expected[these],
            "list": model.check(expect.senders[these], expect.numbers[these], bit)})
        listed[these] = groups[-1]["list"]
    # the port's ordinary traffic beside them (datagen's queries: a tenth of the list's
    # numbers, the rest random), less any number an event is about: checks that the events
    # held must not slow, answered as the list alone answers
    port = datagen.generate_queries(len(pick), e, u, seed=datagen.SEED + 13)
    plain_traffic = ~np.isin(port.numbers, ev.numbers)
    port_senders, port_numbers = port.senders[plain_traffic], port.numbers[plain_traffic]
    port_names = [u.senders[c] if c != datagen.UNKNOWN else "never-seen-sender"
                  for c in port_senders.tolist()]
    traffic = {"numbers": np.ascontiguousarray(port_numbers),
               "ids": {k: eng.sender_ids(port_names) for k, eng in engines.items()},
               "list": model.check(port_senders, port_numbers, 0)}
    n = len(pick)
    suppressed = int((expect.expected > 0).sum())
    changed = int((expect.expected != listed).sum())
    out["notes"].append(
        f"check_ids verified: every answer of every call, {n:,} queries that all have events "
        f"({suppressed:,} suppressed, {n - suppressed:,} not; the events change the list's "
        f"answer for {changed:,}) against anning.model.reference, and the same queries on "
        f"the list alone against the exact numpy model; expected answers in {t1 - t0:.1f} s")
    out["notes"].append(f"check_ids engines: {made}")

    rounds = max(1, 2_000_000 // n)  # calls a repetition: ~0.1 s of checks, not one blip

    def timed(name: str) -> float | None:
        eng, seconds = engines[name], 0.0
        for _ in range(rounds):
            for g in groups:
                t = time.perf_counter()
                got = eng.check_ids(g["ids"][name], g["numbers"], g["category"])
                seconds += time.perf_counter() - t
                want = g["list"] if name == "no events" else g["events"]
                if (wrong := np.flatnonzero(got != want)).size:
                    out["failures"].append(
                        f"check_ids ({name}, {g['category']}): {wrong.size:,} of {len(want):,} "
                        f"answers wrong, e.g. number {int(g['numbers'][wrong[0]])}: "
                        f"{got[wrong[0]]}, expected {want[wrong[0]]}")
                    return None
        return rounds * n / seconds

    def timed_traffic(name: str) -> float | None:
        eng, seconds = engines[name], 0.0
        for _ in range(rounds):
            t = time.perf_counter()
            got = eng.check_ids(traffic["ids"][name], traffic["numbers"], CATEGORIES[0])
            seconds += time.perf_counter() - t
            if (wrong := np.flatnonzero(got != traffic["list"])).size:
                out["failures"].append(
                    f"check_ids ({name}, port traffic): {wrong.size:,} answers wrong, e.g. "
                    f"number {int(traffic['numbers'][wrong[0]])}: {got[wrong[0]]}, expected "
                    f"{traffic['list'][wrong[0]]}")
                return None
        return rounds * len(traffic["numbers"]) / seconds

    names = list(engines)
    raw: dict[str, list[float]] = {k: [] for k in names}
    raw.update({f"{k}, port traffic": [] for k in names})
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            if (rate := timed(name)) is not None:
                raw[name].append(rate)
            if (rate := timed_traffic(name)) is not None:
                raw[f"{name}, port traffic"].append(rate)
    out["raw"] = raw
    out["notes"].append(
        f"port traffic: {len(traffic['numbers']):,} of datagen's queries (a tenth of the list's "
        f"numbers, the rest random; {int((traffic['list'] > 0).sum()):,} suppressed), none of "
        "them a number with events, answered as the list alone answers (every answer checked)")
    out["queries"], out["rounds"] = n, rounds
    for eng in engines.values():
        if eng.source is not None:
            eng.source.close()
    return out

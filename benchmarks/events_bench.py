"""Issue 13's targets for the events anning keeps until upstream has them: the change feed
written out (`anning events export`), followed over gRPC (`OptOuts.Changes`), folded into the
next night's list (`anning load --events-through`), and checked in the compiled batch path
(`Engine.check_ids` of numbers that all have events), each beside a peer measured in the same
run, repetitions interleaved (the order reversed every other one), medians, the worst, ratios.
The fifth target (checks and OptOut of the write path within noise of before) is
benchmarks.write_bench's, beside its own peers.

    python -m benchmarks.events_bench                  # 1M events past the watermark, 10M rows
    python -m benchmarks.events_bench --quick          # CI size: 100k events, 1M rows, 5 reps
    python -m benchmarks.events_bench --only export,changes --json events.json

The data directory: a binary snapshot of the generated list (benchmarks.lib.datagen, --rows
entries) and --events events past a watermark W plus W = --events / 10 before it (upstream has
those), drawn as entries are (opt-outs, 8% opt-ins, 2% reassignments, every scope and category;
30% of them of numbers and scopes the list has), made durable through `Engine.apply`, 10,000 a
call: the first half, then `Engine.checkpoint`, then the rest, so the events are read from the
checkpoint and from the live log alike.

What is timed, and beside what (benchmarks/README.md has the table):

- export (events/s; goal >= 1,000,000/s): `anning events export --data DIR --since W --out
  FILE` (a process: interpreter and imports included), and `anning.engine.export.export_csv` in
  this process; the peer: Python's csv module writing the same rows from the same events, held
  in memory as the generator made them (the columns made strings in numpy first);
- Changes (events/s; goal >= 200,000/s): a real `anning serve` (1 worker) and one follower in
  this process (a grpc channel, `Changes(since=0, until=last)`, every message parsed); the peer:
  the same follower against a grpc.aio server streaming the very messages anning sent (`constant
  stream`: the floor of a server stream of these bytes in this stack); beside it, the
  in-process export of the same events;
- load (s; goal ratio <= 1.2): `anning load ROWS --entities --as-of --events-through W` into
  the data directory (a process, wall time); the peer: the same load into a directory with the
  same snapshot and no events;
- check_ids (checks/s; goal ratio >= 0.5): --queries queries (1M; one an event, each asked by
  a sender its scope covers, so every number asked has events) on an engine that took the
  first half of the events in bulk (as a checkpoint gives them) and the rest 1,000 a write
  (as a server takes them), and on a fresh engine over the data directory (checkpoint and log
  read);
  the peer: the same queries on the list alone (benchmarks/events_checks.py).

Every answer is checked: the exported file must equal the csv module's byte for byte (the peer
writes from the generator's events, not from anning's reading of them, with sequence i + 1 for
the i-th event logged); every Change of the stream is compared with the event of its sequence
(all fields) and every repetition's bytes with the first's; a load's report must count every
event past W as folded, and the list it wrote must answer, for a sample of the events past W
and of the rows, as anning.model.reference (events) and the exact numpy model (rows) say; every
check_ids answer of every repetition, as the reference (with events) and the exact numpy
model (the list alone) say. A wrong answer exits 1; a missed goal never does.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib import datagen
from benchmarks.lib.csvgen import write_entries_csv
from benchmarks.lib.figures import Figures, fmt
from benchmarks.lib.machine import others
from benchmarks.lib.servers import CHANNEL_OPTIONS, HOST, NO_CHECKPOINT, AnningServer, wait_ready

EVENT_FIELDS = ("numbers", "codes", "masks", "kinds", "at_ms", "sources")
ON_ROWS = 0.3  # share of the events about a number and scope the list has
PARTS = ("export", "changes", "load", "checks")


# -- the data (made in a spawned process: its memory stays out of this one) ---------------------


def _slice(ev: datagen.Events, lo: int, hi: int) -> datagen.Events:
    return datagen.Events(*(getattr(ev, f)[lo:hi] for f in EVENT_FIELDS))


def make_data(rows: int, events: int, work: Path) -> dict[str, Any]:
    """The snapshot, the events' data directory, the rows' CSV and entities files; the events
    as generated are saved in work/events.npz."""
    from anning import write_snapshot
    from anning.engine import Engine
    from anning.storage.layout import DataDir

    t0 = time.perf_counter()
    now = int(time.time() * 1000)
    as_of = now - 2 * 3_600_000  # the list the events were taken on top of
    u = datagen.make_universe()
    e = datagen.generate_entries(rows, u)
    covered = events // 10
    # the events span the day before the list's cut and the hours since
    ev = datagen.generate_events(covered + events, u, as_of - 22 * 3_600_000, now - 60_000)
    rng = np.random.default_rng([datagen.SEED, 13])
    on = np.flatnonzero(rng.random(len(ev)) < ON_ROWS)
    picked = rng.integers(0, rows, on.size)
    ev.numbers[on], ev.codes[on] = e.numbers[picked], e.codes[picked]
    np.savez(work / "events.npz", **{f: getattr(ev, f) for f in EVENT_FIELDS})

    base = work / "base"
    base.mkdir()
    write_snapshot(datagen.build_index(u, e, meta={"as_of_ms": as_of}), DataDir(base).snapshot)
    t1 = time.perf_counter()
    data = work / "events"
    data.mkdir()
    os.link(DataDir(base).snapshot, DataDir(data).snapshot)
    engine = Engine(data_dir=data)
    engine.open_snapshot()
    half = len(ev) // 2
    datagen.log_events(engine, _slice(ev, 0, half), u)
    report = engine.checkpoint()
    assert report is not None and report.rows == half, report
    datagen.log_events(engine, _slice(ev, half, len(ev)), u)
    assert engine.last_sequence == len(ev), (engine.last_sequence, len(ev))
    if engine.source is not None:
        engine.source.close()
    del engine
    t2 = time.perf_counter()
    write_entries_csv(work / "rows.csv", work / "entities.csv", u, e)
    t3 = time.perf_counter()
    return {"as_of_ms": as_of, "covered": covered, "events": len(ev), "rows": rows,
            "in_checkpoint": half, "in_log": len(ev) - half,
            "log_mb": round(sum(p.stat().st_size for p in data.glob("events-*.log")) / 2**20, 1),
            "checkpoint_mb": round((data / "events.ckpt").stat().st_size / 2**20, 1),
            "snapshot_s": round(t1 - t0, 1), "events_s": round(t2 - t1, 1),
            "csv_s": round(t3 - t2, 1)}


def load_events(work: Path) -> datagen.Events:
    with np.load(work / "events.npz") as z:
        return datagen.Events(*(z[f] for f in EVENT_FIELDS))


# -- the runs ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, info: dict[str, Any],
                 figs: Figures) -> None:
        self.args, self.work, self.info, self.figs = args, work, info, figs
        self.ev = load_events(work)
        self.universe = datagen.make_universe()
        self.raw: dict[str, dict[str, list[float]]] = {}
        self.as_of_new = 0  # the cut of the night's rows a load takes

    def fail(self, message: str) -> None:
        self.figs.fail(message)

    def interleaved(self, label: str, runs: list[tuple[str, Callable[[], float | None]]],
                    ) -> dict[str, list[float]]:
        """Each run once a repetition, the order reversed every other one."""
        out: dict[str, list[float]] = {name: [] for name, _ in runs}
        for rep in range(self.args.reps):
            for name, fn in runs if rep % 2 == 0 else runs[::-1]:
                value = fn()
                if value is not None:
                    out[name].append(value)
        print(f"  {label}: " + "; ".join(f"{name} " + ", ".join(fmt(v) for v in values)
                                         for name, values in out.items()), flush=True)
        self.raw[label] = out
        return out

    def row(self, target: str, unit: str, r: dict[str, list[float]], pair: tuple[str, str],
            goal: str = "", note: str = "", better: str = "higher") -> None:
        """Medians of a pair, their ratio, the goal; the worst repetition of each in the note."""
        a, b = r[pair[0]], r[pair[1]]
        worst = min if better == "higher" else max
        if a and b:
            note = (f"worst {fmt(worst(a))} | {fmt(worst(b))}" + (f"; {note}" if note else ""))
        self.figs.compare(target, unit, pair[0], a, pair[1], b, goal, note, better)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


# -- export ------------------------------------------------------------------------------------


def csv_module_export(ev: datagen.Events, universe: datagen.Universe, first: int,
                      out: Path) -> None:
    """The peer: the rows of the events from `first` on, by Python's csv module, the columns
    made strings in numpy first (each mask one category: 1, 2 or all)."""
    from anning.model.events import OPT_IN, REASSIGN
    from anning.model.scopes import SOURCES

    table = np.array(universe.sender_table, dtype=object)
    kinds = ev.kinds[first:]
    moved = kinds == REASSIGN
    numbers = ev.numbers[first:].astype(str)
    senders = np.where(moved, "*", table[ev.codes[first:]])
    by_mask = np.array([""] * 256, dtype=object)
    for mask, name in datagen.CATEGORY_OF_MASK.items():
        by_mask[mask] = name
    categories = np.where(moved, "", by_mask[ev.masks[first:]])
    actions = np.where(moved, "reassign", np.where(kinds == OPT_IN, "opt_in", "opt_out"))
    ats = np.char.add(np.datetime_as_string(ev.at_ms[first:].astype("datetime64[ms]"),
                                            unit="ms"), "Z")
    sources = np.array(SOURCES, dtype=object)[ev.sources[first:]]
    seqs = np.arange(first + 1, len(ev) + 1).astype(str)
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("number,sender,category,action,at,source,seq\n")
        csv.writer(f, lineterminator="\n").writerows(zip(
            numbers.tolist(), senders.tolist(), categories.tolist(), actions.tolist(),
            ats.tolist(), sources.tolist(), seqs.tolist(), strict=True))


def export(b: Bench) -> None:
    from anning.engine.export import export_csv
    from anning.storage.layout import DataDir

    since, n = b.info["covered"], b.info["events"] - b.info["covered"]
    data = b.work / "events"
    files = {name: b.work / f"export-{name}.csv" for name in ("cli", "engine", "peer")}
    unknown = set(b.ev.masks.tolist()) - set(datagen.CATEGORY_OF_MASK)
    if unknown:
        b.fail(f"export: masks {unknown} have no single category (the peer writes one row)")
        return
    print(f"1. export: {n:,} events past sequence {since:,} "
          f"({b.info['in_checkpoint']:,} checkpointed, {b.info['in_log']:,} in the log)",
          flush=True)
    expected: list[bytes] = []

    def check(name: str) -> bool:
        got = files[name].read_bytes()
        if not expected:
            csv_module_export(b.ev, b.universe, since, files["peer"])
            expected.append(files["peer"].read_bytes())
        if got != expected[0]:
            lines, want = got.splitlines(), expected[0].splitlines()
            i = next((i for i, (x, y) in enumerate(zip(lines, want, strict=False)) if x != y),
                     min(len(lines), len(want)))
            b.fail(f"export ({name}): the file differs from the csv module's at line {i + 1} "
                   f"of {len(want):,}: {lines[i] if i < len(lines) else b'(end)'!r}, expected "
                   f"{want[i] if i < len(want) else b'(end)'!r}")
            return False
        return True

    def cli() -> float | None:
        seconds, done = timed(lambda: subprocess.run(
            [sys.executable, "-m", "anning.cli", "events", "export", "--data", str(data),
             "--since", str(since), "--out", str(files["cli"])], capture_output=True, text=True))
        if done.returncode != 0:
            b.fail(f"anning events export: exit {done.returncode}: {done.stderr[-2000:]}")
            return None
        return n / seconds if check("cli") else None

    def engine() -> float | None:
        with open(files["engine"], "wb") as out:
            seconds, (count, last) = timed(lambda: export_csv(DataDir(data), since, None, out))
        if (count, last) != (n, since + n):
            b.fail(f"export_csv: {count:,} events to {last:,}, expected {n:,} to {since + n:,}")
            return None
        return n / seconds if check("engine") else None

    def peer() -> float:
        seconds, _ = timed(lambda: csv_module_export(b.ev, b.universe, since, files["peer"]))
        return n / seconds

    r = b.interleaved("export", [("anning events export", cli), ("export_csv", engine),
                                 ("csv module", peer)])
    rows = f"{n:,} events, {len(expected[0]) / 2**20 if expected else 0:.0f} MB of CSV"
    b.row("export to CSV", "events/s", r, ("anning events export", "csv module"),
          ">= 1000000", f"{rows}; the command line: a process, interpreter and imports too")
    b.row("export to CSV", "events/s", r, ("export_csv", "csv module"), ">= 1000000",
          "in this process (anning.engine.export), reading the checkpoint and the log")
    b.figs.notes.append(f"export verified: every repetition's file equals the csv module's, "
                        f"byte for byte ({rows})")
    for f in files.values():
        f.unlink(missing_ok=True)


# -- Changes -----------------------------------------------------------------------------------


def follow(target: str, since: int, until: int) -> tuple[float, list[bytes], int]:
    """One follower: Changes(since, until) read to its end, each message parsed; (seconds,
    the messages' bytes, the changes counted)."""
    import grpc

    from anning.v1 import anning_pb2 as pb

    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_stream("/anning.v1.OptOuts/Changes",
                                    request_serializer=pb.ChangesRequest.SerializeToString,
                                    response_deserializer=None)
        grpc.channel_ready_future(channel).result(timeout=30)
        parse = pb.ChangesResponse.FromString
        messages, count = [], 0
        t0 = time.perf_counter()
        for m in call(pb.ChangesRequest(since=since, until=until), timeout=600):
            count += len(parse(m).changes)
            messages.append(m)
        return time.perf_counter() - t0, messages, count


def verify_changes(b: Bench, messages: list[bytes]) -> str | None:
    """Every Change against the generated event of its sequence: what is wrong, or None."""
    from anning.model.events import OPT_IN, REASSIGN
    from anning.model.scopes import SOURCES
    from anning.v1 import anning_pb2 as pb

    ev, table = b.ev, b.universe.sender_table
    names = {1: ["marketing"], 2: ["notification"], 0xFF: ["all"]}
    kind_of = {1: pb.EVENT_KIND_OPT_OUT, OPT_IN: pb.EVENT_KIND_OPT_IN,
               REASSIGN: pb.EVENT_KIND_REASSIGN}
    expected_sequence = 1
    for m in messages:
        for c in pb.ChangesResponse.FromString(m).changes:
            i = expected_sequence - 1
            if c.sequence != expected_sequence or i >= len(ev):
                return f"change {c.sequence} where {expected_sequence} was due"
            kind = int(ev.kinds[i])
            moved = kind == REASSIGN
            want = (kind_of[kind], str(int(ev.numbers[i])),
                    "" if moved else table[int(ev.codes[i])],
                    [] if moved else names[int(ev.masks[i])], int(ev.at_ms[i]),
                    SOURCES[int(ev.sources[i])])
            got = (c.kind, c.number, c.sender, list(c.categories), c.at_ms, c.source)
            if got != want:
                return f"change {c.sequence}: {got}, expected {want}"
            expected_sequence += 1
    if expected_sequence - 1 != len(ev):
        return f"{expected_sequence - 1:,} changes of {len(ev):,}"
    return None


def changes(b: Bench, ctx: Any) -> None:
    from anning.engine.export import export_csv
    from anning.storage.layout import DataDir
    from benchmarks.lib.peers import StreamServer, write_messages

    n = b.info["events"]
    data = b.work / "served"
    shutil.copytree(b.work / "events", data)
    print(f"2. Changes: {n:,} events from sequence 0, one follower", flush=True)
    server = AnningServer(data, 1, NO_CHECKPOINT, name="anning")
    peer: StreamServer | None = None
    try:
        wait_ready(server)
        _, messages, _ = follow(server.target, 0, n)  # the first, untimed
        if wrong := verify_changes(b, messages):
            b.fail(f"Changes: {wrong}")
            return
        first = messages
        write_messages(b.work / "changes.bin", first)
        peer = StreamServer(ctx, b.work / "changes.bin")
        while not peer.listening():  # it serves Changes only: no Check to wait for
            if not peer.alive():
                raise RuntimeError("the constant stream server exited while starting")
            time.sleep(0.05)
        sizes = [len(m) for m in first]

        def run(target: str, who: str) -> float | None:
            seconds, messages, count = follow(target, 0, n)
            if count != n or messages != first:
                b.fail(f"Changes ({who}): {count:,} changes in {len(messages)} messages, "
                       f"not the {n:,} of the first run's {len(first)} messages")
                return None
            return n / seconds

        def export() -> float:
            with open(b.work / "export-changes.csv", "wb") as out:
                seconds, _ = timed(lambda: export_csv(DataDir(data), 0, None, out))
            return n / seconds

        peer_target = f"{HOST}:{peer.port}"
        r = b.interleaved("Changes", [("anning", lambda: run(server.target, "anning")),
                                      ("constant stream", lambda: run(peer_target, "peer")),
                                      ("export_csv", export)])
        note = (f"{len(first)} messages of {statistics.median(sizes) / 1024:.0f} KiB "
                f"(median), {sum(sizes) / n:.0f} B an event; the follower parses each")
        b.row("Changes to one follower", "events/s", r, ("anning", "constant stream"),
              ">= 200000", note)
        b.row("Changes to one follower", "events/s", r, ("anning", "export_csv"), "",
              "the same events exported to CSV in this process")
        b.figs.notes.append(f"Changes verified: every change of the stream against the event "
                            f"of its sequence (1 to {n:,}, all fields); every repetition's "
                            "messages equal the first's")
    finally:
        server.stop()
        if peer is not None:
            peer.stop()
        (b.work / "export-changes.csv").unlink(missing_ok=True)


# -- the folding load --------------------------------------------------------------------------


def _reset(base: Path, data: Path) -> None:
    """The data directory's snapshot back to the base list (a load replaced it)."""
    from anning.storage.layout import DataDir

    snapshot = DataDir(data).snapshot
    fresh = snapshot.with_name(snapshot.name + ".reset")
    fresh.unlink(missing_ok=True)
    os.link(DataDir(base).snapshot, fresh)
    os.replace(fresh, snapshot)
    (data / "rejects.csv").unlink(missing_ok=True)


def anning_load(b: Bench, data: Path, watermark: int | None) -> tuple[float, dict] | None:
    from anning.testing.server import iso

    _reset(b.work / "base", data)
    command = [sys.executable, "-m", "anning.cli", "load", str(b.work / "rows.csv"),
               "--entities", str(b.work / "entities.csv"), "--as-of", iso(b.as_of_new),
               "--data", str(data), "--json", "--quiet"]
    if watermark is not None:
        command += ["--events-through", str(watermark)]
    t0 = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate()
    seconds = time.perf_counter() - t0
    if child.returncode != 0:
        b.fail(f"anning load ({data.name}): exit {child.returncode}: {out[-1000:]!r} "
               f"{err[-2000:]!r}")
        return None
    return seconds, json.loads(out)


def verify_load(b: Bench, data: Path, watermark: int | None, sample: int) -> str | None:
    """The list a load wrote, on a sample of the events past the watermark (against
    anning.model.reference) and of the rows (against the exact numpy model): what is wrong,
    or None."""
    from anning import read_snapshot
    from anning.storage.layout import DataDir
    from benchmarks.lib.oracle import ListModel, event_checks

    u = b.universe
    e = datagen.generate_entries(b.info["rows"], u)
    index = read_snapshot(DataDir(data).snapshot)
    rng = np.random.default_rng([datagen.SEED, 31])
    checked = []
    if watermark is not None:
        if index.events_through != watermark:
            return f"the list's events_through is {index.events_through}, not {watermark}"
        past = np.arange(watermark, len(b.ev))
        pick = np.sort(rng.choice(past, min(sample, len(past)), replace=False))
        expect = event_checks(u, e, b.ev, pick, b.as_of_new, events_through=watermark)
        for bit, category in enumerate(("marketing", "notification")):
            these = np.flatnonzero(expect.bits == bit)
            ids = index.sender_ids([u.senders[s] for s in expect.senders[these].tolist()])
            got = index.check_ids(ids, expect.numbers[these], category)
            wrong = np.flatnonzero(got != expect.expected[these])
            if wrong.size:
                i = these[wrong[0]]
                return (f"{wrong.size:,} of {len(these):,} checks of events past the watermark "
                        f"({category}) answered otherwise than the reference, e.g. event "
                        f"{int(expect.events[i]) + 1}: {got[wrong[0]]}, expected "
                        f"{expect.expected[i]}")
        checked.append(f"{len(pick):,} events past it")
    # rows whose numbers no event speaks of: the list's own answer
    rows = rng.choice(len(e.numbers), sample, replace=False)
    rows = rows[~np.isin(e.numbers[rows], b.ev.numbers)]
    model = ListModel(u, e)
    senders = e.codes[rows].copy()  # a sender of the row's scope asks
    scoped = senders >= u.n_senders
    pick = datagen.zipf_senders(rng, u, int(scoped.sum()))
    senders[scoped] = pick
    want = model.check(senders, e.numbers[rows], 0)
    got = index.check_ids(index.sender_ids([u.senders[s] for s in senders.tolist()]),
                          e.numbers[rows], "marketing")
    if (wrong := np.flatnonzero(got != want)).size:
        return (f"{wrong.size:,} of {len(rows):,} checks of rows answered otherwise than the "
                f"list, e.g. number {int(e.numbers[rows][wrong[0]])}: {got[wrong[0]]}, "
                f"expected {want[wrong[0]]}")
    checked.append(f"{len(rows):,} rows no event touches")
    b.figs.notes.append(f"load ({data.name}) verified: {', '.join(checked)}")
    return None


def load(b: Bench) -> None:
    watermark, n = b.info["covered"], b.info["events"] - b.info["covered"]
    folding, plain = b.work / "folding", b.work / "plain"
    shutil.copytree(b.work / "events", folding)
    plain.mkdir()
    b.as_of_new = int(time.time() * 1000) - 30 * 60_000  # tonight's cut
    print(f"3. load of {b.info['rows']:,} rows folding {n:,} events past {watermark:,}",
          flush=True)
    reports: dict[str, dict] = {}

    def run(data: Path, mark: int | None) -> float | None:
        done = anning_load(b, data, mark)
        if done is None:
            return None
        seconds, report = done
        folded = report.get("events_folded", 0)
        if folded != (n if mark is not None else 0):
            b.fail(f"anning load ({data.name}): {folded:,} events folded, expected "
                   f"{n if mark is not None else 0:,}")
            return None
        reports[data.name] = report
        return seconds

    r = b.interleaved("load", [("folding", lambda: run(folding, watermark)),
                               ("no events", lambda: run(plain, None))])
    for data, mark in ((folding, watermark), (plain, None)):
        if data.name in reports and (wrong := verify_load(b, data, mark, b.args.sample)):
            b.fail(f"load ({data.name}): {wrong}")
    entries = {k: v.get("entries_after") for k, v in reports.items()}
    b.row(f"load {b.info['rows']:,} rows, folding {n:,} events", "s", r,
          ("folding", "no events"), "ratio <= 1.2",
          f"`anning load --events-through {watermark:,}` (a process); entries after: "
          f"{entries.get('folding', 0):,} | {entries.get('plain', 0):,}", "lower")


# -- check_ids with events ---------------------------------------------------------------------


def checks(b: Bench, ctx: Any) -> None:
    from benchmarks import events_checks

    n = min(b.args.queries, b.info["events"])
    print(f"4. check_ids: {n:,} queries that all have events ({b.info['events']:,} events: half "
          f"live, half resolved in bulk), beside the same queries on the list alone",
          flush=True)
    with ctx.Pool(1) as pool:
        got = pool.apply(events_checks.run, (str(b.work), b.info["rows"], b.info["as_of_ms"],
                                            n, b.args.reps))
    for failure in got["failures"]:
        b.fail(failure)
    r = got["raw"]
    print("  check_ids: " + "; ".join(f"{name} " + ", ".join(fmt(v) for v in values)
                                      for name, values in r.items()), flush=True)
    b.raw["check_ids"] = r
    b.row(f"check_ids, {n:,} queries with events", "checks/s", r, ("live", "no events"),
          "ratio >= 0.5", "half the events taken 1,000 a write, half in one bulk pass; "
          f"one call a category, {got['rounds']} times a repetition")
    b.row(f"check_ids, {n:,} queries with events", "checks/s", r, ("restart", "no events"),
          "ratio >= 0.5", "a fresh Engine over the data directory: checkpoint and log read")
    b.row("check_ids, port traffic beside the events", "checks/s", r,
          ("live, port traffic", "no events, port traffic"), "",
          "numbers without events, asked of the engine that holds them all, beside the list "
          "alone")
    b.figs.notes.extend(got["notes"])


# -- main --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    ctx = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="anning-events-bench-", dir=args.dir))
    figs = Figures("anning events figures (medians; ratio = anning / peer)")
    figs.context.update({"rows": args.rows, "events": args.events, "reps": args.reps,
                         "cores": os.cpu_count() or 0, "busy_before": others()})
    print(f"generating {args.rows:,} rows and {args.events:,} events (+{args.events // 10:,} "
          f"before the watermark) in {work} ...", flush=True)
    with ctx.Pool(1) as gen:
        info = gen.apply(make_data, (args.rows, args.events, work))
    print(f"  {info}", flush=True)
    figs.context.update({k: v for k, v in info.items() if k.endswith(("_s", "_mb"))})
    b = Bench(args, work, info, figs)
    for part in args.only:
        try:
            export(b) if part == "export" else changes(b, ctx) if part == "changes" \
                else load(b) if part == "load" else checks(b, ctx)
        except Exception:
            b.fail(f"{part}: {traceback.format_exc()}")
    figs.context["busy_after"] = others()
    return figs.close_run(args.json, work, raw=b.raw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 100k events, 1M rows, 100k queries, 5 repetitions")
    ap.add_argument("--events", type=int, default=1_000_000,
                    help="events past the watermark (1M; a tenth as many more before it)")
    ap.add_argument("--rows", type=int, default=10_000_000, help="rows of the snapshot (10M)")
    ap.add_argument("--reps", type=int, default=7, help="repetitions of each figure (7)")
    ap.add_argument("--queries", type=int, default=1_000_000,
                    help="check_ids queries, one an event, all with events (1M)")
    ap.add_argument("--sample", type=int, default=20_000,
                    help="events and rows checked in the loaded lists (20,000 each)")
    ap.add_argument("--only", type=lambda s: s.split(","), default=list(PARTS),
                    help="export,changes,load (default: all)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.rows = min(args.events, 100_000), min(args.rows, 1_000_000)
        args.queries = min(args.queries, 100_000)
        args.reps = min(args.reps, 5)
    if args.events < 10_000 or args.rows < 10_000 or min(args.reps, args.sample,
                                                         args.queries) < 1 or \
            not set(args.only) <= set(PARTS):
        ap.error(f"--events and --rows >= 10,000, --reps and --sample positive, --only of "
                 f"{','.join(PARTS)}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""kill -9 during a folding load (SPEC §5, issue 13): `anning load --events-through S` of a list
of millions of rows over a data directory holding 120,000 logged events (half in the
checkpoint, half in the log), killed at random moments and just after its temporary binary
snapshot appears. After every kill the old snapshot is there byte for byte, a restarted engine
serves it, and every logged event is still in force; the load run to the end folds the events
past S into the new list and leaves those up to S to it."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from anning import Scope
from anning.engine import Engine
from anning.model.events import OPT_IN, OPT_OUT, Event
from anning.storage.layout import SNAPSHOT_NAME, DataDir
from anning.storage.local import read_events

ROWS = 4_000_000
PREFIXES = np.array([133, 135, 136, 137, 138, 139, 150, 151, 152, 158, 159, 187, 188, 189],
                    np.int64)
EVENTS = 120_000  # even ones: opt-ins of listed rows; odd ones: opt-outs of unlisted numbers
BATCH = 1000
THROUGH = EVENTS // 2  # the new list's watermark
SENTINEL = 8618600000000  # on the new list only
NOW_MS = int(time.time() * 1000)
OLD_AS_OF, AT, NEW_AS_OF = NOW_MS - 2 * 86_400_000, NOW_MS - 3_600_000, NOW_MS - 7_200_000
SENDERS = [f"s{k}" for k in range(10)]


def listed(j: np.ndarray) -> np.ndarray:
    """The number of row j of the big list (distinct mobiles; row j's sender is s{j % 10})."""
    p = len(PREFIXES)
    return 8600000000000 + PREFIXES[j % p] * 10**8 + (j // p * 7_919 + 12_345) % 10**8


def write_big_csv(path: Path) -> None:
    """ROWS rows `number,sender` as fixed-width bytes, with numpy."""
    j = np.arange(ROWS, dtype=np.int64)
    numbers = listed(j) - 8600000000000
    out = np.empty((ROWS, 15), np.uint8)
    for col in range(10, -1, -1):
        out[:, col] = numbers % 10 + 48
        numbers //= 10
    out[:, 11], out[:, 12], out[:, 13], out[:, 14] = ord(","), ord("s"), j % 10 + 48, ord("\n")
    with open(path, "wb") as f:
        f.write(b"number,sender\n")
        f.write(out.tobytes())


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat()


def the_events() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numbers, sender indexes, kinds) of event i (sequence i + 1)."""
    k = np.arange(EVENTS, dtype=np.int64) // 2
    opt_in = np.arange(EVENTS) % 2 == 0
    rows = 7 + 25 * k  # listed rows, each once
    numbers = np.where(opt_in, listed(rows), 8617000000000 + k).astype(np.uint64)
    senders = np.where(opt_in, rows % 10, k % 10).astype(np.int64)
    return numbers, senders, np.where(opt_in, OPT_IN, OPT_OUT).astype(np.uint8)


def answers(data: Path, numbers: np.ndarray, senders: np.ndarray) -> tuple[np.ndarray, Engine]:
    """The checks of a freshly started engine on the directory (batch path, marketing)."""
    engine = Engine(data_dir=data)
    assert engine.open_snapshot()
    state = engine.serving()
    ids = engine.sender_ids([SENDERS[s] for s in senders.tolist()], state)
    got = engine.check_ids(ids, numbers, "marketing", state)
    return got, engine


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_folding_load_killed_loses_no_event(tmp_path):
    """8 kills of `anning load --events-through` (random moments, one about its end, three
    just after its temporary appears): the old snapshot byte-equal (or, killed after the
    rename, the whole new one), every event on disk, and a restarted engine's 160,000 checks
    as the list in place and every event say; then the whole load's fold."""
    data = tmp_path / "data"
    anx = data / SNAPSHOT_NAME
    big = tmp_path / "big.csv"
    write_big_csv(big)
    extra = tmp_path / "sentinel.csv"
    extra.write_text(f"number,sender\n{SENTINEL},new\n", encoding="utf-8")

    def load(*args: str, events_through: int | None = None) -> list[str]:
        command = [sys.executable, "-m", "anning.cli", "load", *args, "--data", str(data),
                   "--json"]
        return command + (["--events-through", str(events_through)] if events_through else [])

    started = time.monotonic()
    first = subprocess.run(load(str(big), "--as-of", iso(OLD_AS_OF)), capture_output=True,
                           text=True, timeout=120)
    whole = time.monotonic() - started
    assert first.returncode == 0, first.stderr

    numbers, senders, kinds = the_events()
    engine = Engine(data_dir=data)
    for lo in range(0, EVENTS, BATCH):
        batch = [Event(int(n), SENDERS[s], 1, int(kind), AT, "reply") for n, s, kind in
                 zip(numbers[lo:lo + BATCH].tolist(), senders[lo:lo + BATCH].tolist(),
                     kinds[lo:lo + BATCH].tolist(), strict=True)]
        assert engine.apply(batch) == lo + BATCH
        if lo + BATCH == EVENTS // 2:
            assert engine.checkpoint() is not None  # half in the checkpoint, half in the log
    engine.source.close()
    old_hash, old_bytes = sha(anx), anx.read_bytes()

    # what every check must answer: the events, and rows the events do not touch
    untouched_rows = 19 + 25 * np.arange(20_000, dtype=np.int64)  # listed: s{row % 10}
    check_numbers = np.concatenate([numbers, listed(untouched_rows).astype(np.uint64),
                                    np.arange(8617100000000, 8617100020000, dtype=np.uint64)])
    check_senders = np.concatenate([senders, untouched_rows % 10, np.arange(20_000) % 10])
    opt_in = kinds == OPT_IN
    rest = [int(Scope.SENDER)] * 20_000 + [int(Scope.NONE)] * 20_000
    before = np.array([*np.where(opt_in, Scope.NONE, Scope.SENDER), *rest], np.uint8)
    covered = np.arange(EVENTS) < THROUGH  # upstream's now: the new list (the big one) decides
    after = np.array([*np.where(covered, np.where(opt_in, Scope.SENDER, Scope.NONE),
                                np.where(opt_in, Scope.NONE, Scope.SENDER)), *rest], np.uint8)
    got, engine = answers(data, check_numbers, check_senders)
    assert np.array_equal(got, before), np.flatnonzero(got != before)[:10]
    engine.source.close()

    command = load(str(big), str(extra), "--as-of", iso(NEW_AS_OF), events_through=THROUGH)
    seed = int(time.time())
    rng = random.Random(seed)
    # ("random", a moment after the start) or ("temporary", a delay after the temporary
    # binary snapshot appears: during its write, its fsync, or just after)
    plans = [("random", rng.uniform(0.05, 1.5 * whole)) for _ in range(4)]
    plans.append(("random", rng.uniform(1.5 * whole, 3 * whole)))  # about the end
    plans += [("temporary", 0.0), ("temporary", rng.uniform(0, 0.01)),
              ("temporary", rng.uniform(0, 0.05))]
    outcomes = []
    for kind, moment in plans:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        temporary = f".{SNAPSHOT_NAME}.tmp{proc.pid}"
        t0 = time.monotonic()
        if kind == "random":
            while proc.poll() is None and time.monotonic() - t0 < moment:
                time.sleep(0.002)
        else:
            while proc.poll() is None and temporary not in os.listdir(data):
                time.sleep(0.0002)
            time.sleep(moment)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        what = f"seed {seed}: {kind} {moment:.4f} s, finished {finished}"
        if sha(anx) == old_hash:
            outcomes.append("old, temporary left" if (data / temporary).exists() else "old")
            want = before
        else:  # killed after the rename (or done before the kill): the whole new list
            assert not (data / temporary).exists(), what
            outcomes.append("new")
            want = after
        assert len(read_events(DataDir(data))) == EVENTS, what  # not one event gone from the disk
        got, engine = answers(data, check_numbers, check_senders)
        wrong = np.flatnonzero(got != want)
        assert not len(wrong), (what, len(wrong), wrong[:10])
        assert engine.status().last_sequence == EVENTS, what
        assert (engine.check("new", SENTINEL) is Scope.SENDER) == (want is after), what
        engine.source.close()
        if want is after:  # back to the old list for the next round
            restore = data / "restore.tmp"
            restore.write_bytes(old_bytes)
            os.replace(restore, anx)
    print(f"\nwhole load {whole:.2f} s; seed {seed}: " + ", ".join(
        f"{kind} {moment:.3f} s -> {outcome}" for (kind, moment), outcome in
        zip(plans, outcomes, strict=True)))
    assert "old, temporary left" in outcomes, (seed, plans, outcomes)

    # run to the end: the events past the watermark folded in, those up to it left to the list
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["events_through"], report["events_folded"]) == (THROUGH, EVENTS - THROUGH)
    got, engine = answers(data, check_numbers, check_senders)
    wrong = np.flatnonzero(got != after)
    assert not len(wrong), (len(wrong), wrong[:10])
    status = engine.status()
    assert (status.last_sequence, status.events_through, status.folded_through,
            status.feed_lag, status.events) == (EVENTS, THROUGH, EVENTS, EVENTS - THROUGH, 0)
    assert engine.check("new", SENTINEL) is Scope.SENDER
    engine.source.close()

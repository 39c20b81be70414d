"""The snapshot swap (SPEC §5): atomic under concurrent checks, real-time events later than
as_of kept on top, and a load killed with SIGKILL leaving the binary snapshot as it was."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from anning import Scope, SuppressionIndex, read_snapshot
from anning.engine import Engine
from anning.load import LoadOptions, SnapshotRefused
from anning.storage.layout import SNAPSHOT_NAME

# -- two lists that tell each other apart ----------------------------------------------------

K = 150  # sentinels a side
S = [13600000000 + i for i in range(K)]  # suppressed by list A only
T = [13500000000 + i for i in range(K)]  # suppressed by list B only
SCOPES = ("shop", "entity:grp", "*")  # sentinel i is entered at SCOPES[i % 3]
U = 13400000000  # a real-time global opt-out, later than both lists
FILLER = 3000


def write_list(path: Path, sentinels: list[int]) -> Path:
    """Filler first (the same senders in the same order in both lists, so that sender ids
    mean the same in both), then the sentinels."""
    lines = ["number,sender,category"]
    lines += [f"{13700000000 + j},f{j % 40},marketing" for j in range(FILLER)]
    lines += [f"{n},{SCOPES[i % 3]},all" for i, n in enumerate(sentinels)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def expected_codes(list_name: str) -> np.ndarray:
    codes = [i % 3 + 1 for i in range(K)]  # SENDER, ENTITY, GLOBAL
    none = [0] * K
    body = codes + none if list_name == "A" else none + codes
    return np.array([*body, int(Scope.GLOBAL)], np.uint8)


@pytest.fixture()
def two_lists(tmp_path):
    entities = tmp_path / "entities.csv"
    entities.write_text("sender,entity\nshop,grp\n", encoding="utf-8")
    files = {"A": write_list(tmp_path / "a.csv", S), "B": write_list(tmp_path / "b.csv", T)}
    now = int(time.time() * 1000)
    options = {"A": LoadOptions(entities=entities, as_of=str(now - 3_600_000)),
               "B": LoadOptions(entities=entities, as_of=str(now - 1_800_000))}
    return files, options


def test_swap_under_concurrent_checks(tmp_path, two_lists):
    files, options = two_lists
    engine = Engine(data_dir=tmp_path / "data")
    engine.load_snapshot([files["A"]], options["A"])
    engine.opt_out(str(U), "*", "all")  # now: later than both lists, kept through every swap
    prebuilt = {}
    for name in "AB":
        scratch = Engine(data_dir=tmp_path / f"prebuilt-{name}", write_log=False)
        scratch.load_snapshot([files[name]], options[name])
        prebuilt[name] = scratch.index
    shop = engine.index.sender_ids(["shop"])
    for idx in prebuilt.values():
        assert np.array_equal(idx.sender_ids(["shop", "f0", "f39"]),
                              engine.index.sender_ids(["shop", "f0", "f39"]))
    numbers = np.array([8600000000000 + n for n in S + T + [U]], np.uint64)
    sender_ids = np.repeat(shop, len(numbers))
    expected = {name: expected_codes(name) for name in "AB"}
    assert np.array_equal(engine.check_ids(sender_ids, numbers), expected["A"])

    stop = threading.Event()
    errors: list[str] = []
    seen = [{"A": 0, "B": 0} for _ in range(6)]

    def batches(k: int) -> None:
        try:
            while not stop.is_set():
                got = engine.check_ids(sender_ids, numbers)
                if np.array_equal(got, expected["A"]):
                    seen[k]["A"] += 1
                elif np.array_equal(got, expected["B"]):
                    seen[k]["B"] += 1
                else:
                    errors.append(f"a mixed answer: {got.tolist()}")
                    return
        except Exception as exc:
            errors.append(repr(exc))

    def singles(k: int) -> None:
        rng = random.Random(k)
        try:
            while not stop.is_set():
                i = rng.randrange(2 * K)
                number = str((S + T)[i])
                got = engine.check("【SHOP】", number)
                if got == expected["A"][i] == expected["B"][i]:
                    errors.append("the lists agree on a sentinel?")
                elif got == expected["A"][i]:
                    seen[k]["A"] += 1
                elif got == expected["B"][i]:
                    seen[k]["B"] += 1
                else:
                    errors.append(f"{number}: {got!r} is neither list's answer")
                    return
                if engine.check("anyone", str(U), "notification") is not Scope.GLOBAL:
                    errors.append("the real-time opt-out was lost in a swap")
                    return
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=batches, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=singles, args=(k,)) for k in range(4, 6)]
    for t in threads:
        t.start()
    loads = swaps = 0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline and not errors:
            name = "AB"[(loads + swaps) % 2]
            if (loads + swaps) % 8 == 0:  # through the file: parse, guards, write, map, swap
                report = engine.load_snapshot([files[name]], options[name])
                # the list's rows and the real-time opt-out of U, folded in (SPEC §5)
                assert (report.entries_after, report.events_folded) == (FILLER + K + 1, 1)
                loads += 1
            else:
                engine.swap(prebuilt[name])
                swaps += 1
            time.sleep(0.001)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:5]
    assert loads >= 5 and swaps >= 50, (loads, swaps)
    totals = {name: sum(s[name] for s in seen) for name in "AB"}
    assert totals["A"] > 0 and totals["B"] > 0, totals
    assert all(s["A"] + s["B"] > 0 for s in seen), seen
    # the file on disk is a whole list, and the last load's
    on_disk = read_snapshot(tmp_path / "data" / SNAPSHOT_NAME)
    on_disk.verify()
    assert len(on_disk) == FILLER + K + 1  # with the real-time opt-out of U folded in


def test_writes_under_concurrent_checks_and_swaps(two_lists):
    """An acknowledged opt-out is seen by every check that starts after it, while other
    threads check in batches and the list is swapped; no check raises."""
    files, options = two_lists
    lists = {}
    for name in "AB":
        scratch = Engine()
        scratch.load_snapshot([files[name]], options[name])
        lists[name] = scratch.index
    engine = Engine(lists["A"])
    shop = lists["A"].sender_ids(["shop"])
    sentinels = np.array([8600000000000 + n for n in S + T], np.uint64)
    expected = {name: expected_codes(name)[:-1] for name in "AB"}
    acked: list[int] = []
    stop = threading.Event()
    errors: list[str] = []
    checks = [0]

    def writer() -> None:
        try:
            for i in range(100_000):
                if stop.is_set():
                    return
                number = 13300000000 + i
                engine.opt_out(str(number), "*", "marketing")
                acked.append(8600000000000 + number)
        except Exception as exc:
            errors.append(repr(exc))

    def checker() -> None:
        try:
            while not stop.is_set():
                if not acked:
                    continue
                number = acked[-1]  # acknowledged before this check starts
                batch = np.append(sentinels, np.uint64(number))
                got = engine.check_ids(np.repeat(shop, len(batch)), batch)
                if got[-1] != Scope.GLOBAL:
                    errors.append(f"{number}: acknowledged, but the batch check says {got[-1]}")
                if not any(np.array_equal(got[:-1], e) for e in expected.values()):
                    errors.append("a mixed answer")
                if engine.check("shop", number) is not Scope.GLOBAL:
                    errors.append(f"{number}: acknowledged, but the check says NONE")
                checks[0] += 1
                if errors:
                    return
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=checker)
                                                   for _ in range(3)]
    for t in threads:
        t.start()
    # At least 2 s and enough work to mean something; bounded for a loaded machine.
    deadline, hard_deadline = time.monotonic() + 2.0, time.monotonic() + 60.0
    swaps = 0
    try:
        while not errors and time.monotonic() < hard_deadline and (
                time.monotonic() < deadline or checks[0] <= 100 or len(acked) <= 1000):
            engine.swap(lists["AB"[swaps % 2]])
            swaps += 1
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:5]
    assert checks[0] > 100 and len(acked) > 1000, (checks[0], len(acked))
    assert engine.check("x", str(acked[-1] - 8600000000000)) is Scope.GLOBAL


# -- real-time events and as_of --------------------------------------------------------------

HOUR = 3_600_000


def snapshot_file(path: Path, rows: list[tuple[int, str]]) -> Path:
    lines = ["number,sender"] + [f"{n},{s}" for n, s in rows]
    lines += [f"{13700000000 + j},filler" for j in range(200)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("with_data_dir", [False, True])
def test_no_event_is_undone_by_a_silent_list(tmp_path, with_data_dir):
    """SPEC §4-§5: an acknowledged event stays in force until a later explicit statement (an
    event, or a row with a later `at`; a row without `at` counts as of the list's as_of), a
    reassignment, or a list whose watermark covers it - never because a list is silent."""
    A, B, C, D, E, G, H, J, K, L, M, N = (13300000000 + i for i in range(12))
    now = int(time.time() * 1000)
    entities = tmp_path / "entities.csv"
    entities.write_text("sender,entity\nshop,grp\n", encoding="utf-8")
    data_dir = tmp_path / "data" if with_data_dir else None
    engine = Engine(data_dir=data_dir)

    # taken before any list is loaded, before and after its as_of: the list is silent on both
    engine.opt_out(str(K), "shop", at_ms=now - 10 * 60_000)
    engine.opt_out(str(L), "shop", at_ms=now - 4 * HOUR)
    v1 = snapshot_file(tmp_path / "v1.csv", [(A, "shop"), (B, "shop")])
    engine.load_snapshot([v1], LoadOptions(entities=entities, as_of=str(now - 3 * HOUR)))
    assert engine.check("shop", str(K)) is Scope.SENDER
    assert engine.check("shop", str(L)) is Scope.SENDER

    engine.opt_out(str(C), "shop", at_ms=now - 10 * 60_000)  # the next list is silent: kept
    engine.opt_in(str(A), "shop", at_ms=now - 10 * 60_000)  # later than A's row: A opted in
    engine.opt_out(str(D), "shop", at_ms=now - 2 * HOUR)  # before the next as_of: still kept
    engine.opt_in(str(B), "shop", at_ms=now - 2 * HOUR)  # older than B's row (as_of): B stays
    engine.opt_out(str(G), "*", "all", at_ms=now - 10 * 60_000)
    engine.opt_out(str(H), "entity:grp", at_ms=now - 10 * 60_000)
    engine.opt_out(str(J), "shop", at_ms=now - HOUR)  # at the next as_of: kept all the same
    # folded at their own time, two hours ago, not at the next list's as_of (an hour ago)
    engine.opt_out(str(M), "shop", at_ms=now - 2 * HOUR)
    engine.opt_out(str(N), "shop", at_ms=now - 2 * HOUR)
    before = {n: engine.check("shop", str(n)) for n in (A, B, C, D, E, G, H, J, K, L)}
    assert before == {A: Scope.NONE, B: Scope.NONE, C: Scope.SENDER, D: Scope.SENDER,
                      E: Scope.NONE, G: Scope.GLOBAL, H: Scope.ENTITY, J: Scope.SENDER,
                      K: Scope.SENDER, L: Scope.SENDER}

    v2 = snapshot_file(tmp_path / "v2.csv", [(A, "shop"), (B, "shop"), (E, "shop")])
    report = engine.load_snapshot([v2], LoadOptions(entities=entities, as_of=str(now - HOUR)))
    # the rows less A (its opt-in won) and the events folded in: K, L, C, D, G, H, J
    assert (report.entries_after, report.events_folded) == (203 - 1 + 9, 11)
    after = {n: engine.check("shop", str(n)) for n in (A, B, C, D, E, G, H, J, K, L)}
    assert after == {A: Scope.NONE, B: Scope.SENDER, C: Scope.SENDER, D: Scope.SENDER,
                     E: Scope.SENDER, G: Scope.GLOBAL, H: Scope.ENTITY, J: Scope.SENDER,
                     K: Scope.SENDER, L: Scope.SENDER}
    assert engine.check("other", str(G), "notification") is Scope.GLOBAL
    assert engine.check("other", str(C)) is Scope.NONE
    assert engine.index.mask(str(A), "shop") == 0  # the list holds A's opt-in, not its row
    # the batch path agrees with the one-by-one path
    numbers = np.array([8600000000000 + n for n in after], np.uint64)
    sids = engine.index.sender_ids(["shop"] * len(numbers))
    assert engine.check_ids(sids, numbers).tolist() == [int(s) for s in after.values()]

    # a list of rows without times keeps no time per entry, only the events' own: an opt-in
    # later than M's folded opt-out (and earlier than the list's as_of) undoes it, one
    # earlier than N's does not
    assert engine.index.statements.times is None
    engine.opt_in(str(M), "shop", at_ms=now - 90 * 60_000)
    engine.opt_in(str(N), "shop", at_ms=now - 150 * 60_000)
    assert (engine.check("shop", str(M)), engine.check("shop", str(N))) == \
        (Scope.NONE, Scope.SENDER)

    # against the list's own statement of A (the opt-in folded in, at its time): a newer
    # opt-out wins, an older one does not
    engine.opt_out(str(A), "shop", at_ms=now - 20 * 60_000)
    assert engine.check("shop", str(A)) is Scope.NONE
    engine.opt_out(str(A), "shop", at_ms=now - 5 * 60_000)
    assert engine.check("shop", str(A)) is Scope.SENDER

    if data_dir is not None:  # a restart: the log replayed over the binary snapshot
        restarted = Engine(data_dir=data_dir)
        assert restarted.open_snapshot()
        again = {n: restarted.check("shop", str(n)) for n in (A, B, C, D, E, G, H, J, K, L)}
        assert again == {**after, A: Scope.SENDER}
        engine = restarted

    # a list that declares it has every event up to C's and is silent on C and K: those two
    # (covered) are upstream's to keep or drop; D, J and the rest (after the watermark) stay
    c_sequence = _sequence_of(engine, C)
    v3 = snapshot_file(tmp_path / "v3.csv", [(E, "shop")])
    engine.load_snapshot([v3], LoadOptions(entities=entities, as_of=str(now), allow_shrink=True,
                                           events_through=c_sequence))
    assert engine.index.events_through == c_sequence
    covered = {n: engine.check("shop", str(n)) for n in (K, L, C, D, J, E)}
    assert covered == {K: Scope.NONE, L: Scope.NONE, C: Scope.NONE, D: Scope.SENDER,
                       J: Scope.SENDER, E: Scope.SENDER}


def _sequence_of(engine: Engine, national: int) -> int:
    """The sequence of the last event of a number (from the events the engine holds or the
    ones on disk)."""
    number = 8600000000000 + national
    events = engine._events_after(0, engine._held_events())
    return max(e.sequence for e in events.events() if e.number == number)


# -- a load killed with SIGKILL --------------------------------------------------------------

BIG_ROWS = 5_000_000
PREFIXES = np.array([133, 135, 136, 137, 138, 139, 150, 151, 152, 158, 159, 187, 188, 189],
                    np.int64)
OLD = [13100000000 + i for i in range(1000)]
NEW_SENTINEL = 18600000000


def write_big_csv(path: Path) -> int:
    """BIG_ROWS distinct mobiles over 10 senders, written as fixed-width bytes with numpy;
    returns the entries the list holds."""
    i = np.arange(BIG_ROWS, dtype=np.int64)
    p = len(PREFIXES)
    suffix = (i // p * 7_919 + 12_345) % 10**8  # a bijection of i // p: no duplicates
    numbers = PREFIXES[i % p] * 10**8 + suffix
    width = 11 + 4  # "13812345678,s7\n"
    out = np.empty((BIG_ROWS, width), np.uint8)
    x = numbers.copy()
    for col in range(10, -1, -1):
        out[:, col] = x % 10 + 48
        x //= 10
    out[:, 11] = ord(",")
    out[:, 12] = ord("s")
    out[:, 13] = i % 10 + 48
    out[:, 14] = ord("\n")
    with open(path, "wb") as f:
        f.write(f"number,sender\n{NEW_SENTINEL},new\n".encode())
        f.write(out.tobytes())
    return BIG_ROWS + 1


def assert_old_list(path: Path, old_bytes: bytes) -> None:
    assert path.read_bytes() == old_bytes
    idx = read_snapshot(path)
    idx.verify()
    assert len(idx) == len(OLD)
    for n in OLD[::97]:
        assert idx.check("old", str(n)) is Scope.SENDER
    assert idx.check("new", str(NEW_SENTINEL)) is Scope.NONE


def test_a_killed_load_leaves_the_previous_snapshot(tmp_path):
    data = tmp_path / "data"
    anx = data / SNAPSHOT_NAME
    old_csv = tmp_path / "old.csv"
    old_csv.write_text("number,sender\n" + "".join(f"{n},old\n" for n in OLD), encoding="utf-8")
    Engine(data_dir=data).load_snapshot([old_csv], LoadOptions(as_of="2026-11-01"))
    old_bytes = anx.read_bytes()
    big = tmp_path / "big.csv"
    big_entries = write_big_csv(big)

    def load_command(data_dir: Path) -> list[str]:
        return [sys.executable, "-m", "anning.cli", "load", str(big), "--data", str(data_dir),
                "--as-of", "2026-11-22", "--quiet"]

    command = load_command(data)

    # how long a whole load takes here, into another directory
    started = time.monotonic()
    timing = subprocess.run(load_command(tmp_path / "timing"), capture_output=True, text=True,
                            timeout=120)
    assert timing.returncode == 0, timing.stderr
    whole = time.monotonic() - started

    seed = int(time.time())
    rng = random.Random(seed)
    # ("random", moment): a random time after the start; ("write", delay): that long after the
    # temporary binary snapshot appears, i.e. during its write, its fsync, or just after
    plans = [("random", rng.uniform(0.05, whole)) for _ in range(3)]
    plans += [("write", 0.0), ("write", rng.uniform(0.0, 0.01)), ("write", rng.uniform(0, 0.03))]
    outcomes: list[str] = []
    planned = len(plans)
    while plans:
        kind, moment = plans.pop(0)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tmp_name = f".{SNAPSHOT_NAME}.tmp{proc.pid}"
        started = time.monotonic()
        if kind == "random":
            while proc.poll() is None and time.monotonic() - started < moment:
                time.sleep(0.002)
        else:
            while proc.poll() is None and tmp_name not in os.listdir(data):
                time.sleep(0.0002)
            time.sleep(moment)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = sorted(p.name for p in data.iterdir() if p.name.startswith("."))
        what = f"seed {seed}: {kind} {moment:.4f}, finished {finished}, left {left}"
        if anx.read_bytes() == old_bytes:
            assert_old_list(anx, old_bytes)
            outcomes.append("old, temporary left" if tmp_name in left else "old")
        else:  # killed after the rename (or not killed at all): the whole new list
            assert proc.returncode in (0, -signal.SIGKILL), what
            assert tmp_name not in left, what
            idx = read_snapshot(anx)
            assert len(idx) == big_entries, what
            assert idx.check("new", str(NEW_SENTINEL)) is Scope.SENDER, what
            assert idx.check("old", str(OLD[0])) is Scope.NONE, what
            del idx
            restore = data / "restore.tmp"
            restore.write_bytes(old_bytes)
            os.replace(restore, anx)
            outcomes.append("new")
        # a load sweeps the temporaries of dead loads: the restart below needs the last
        # kill to have left one (a few more kills at the write, as planned ones did)
        if not plans and outcomes[-1] != "old, temporary left" and len(outcomes) < planned + 6:
            plans.append(("write", 0.0))
    assert "old, temporary left" in outcomes, (seed, outcomes)

    # temporaries are not the snapshot: a restart serves the old list ...
    assert any(p.name.startswith(f".{SNAPSHOT_NAME}.tmp") for p in data.iterdir())
    engine = Engine(data_dir=data)
    assert engine.open_snapshot()
    assert len(engine.index) == len(OLD)
    assert engine.check("old", str(OLD[1])) is Scope.SENDER
    # ... and the shrink guard compares with it, not with a big temporary
    with pytest.raises(SnapshotRefused, match=f"shrink from {len(OLD):,} to 500"):
        Engine(data_dir=data).load_snapshot([_half(old_csv, tmp_path)],
                                            LoadOptions(as_of="2026-11-02"))
    assert_old_list(anx, old_bytes)
    info = subprocess.run([sys.executable, "-m", "anning.cli", "info", "--data", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and f'"entries": {len(OLD)}' in info.stdout

    # a load that runs to the end replaces it, temporaries or not
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    idx = read_snapshot(anx)
    assert len(idx) == big_entries
    assert idx.check("new", str(NEW_SENTINEL)) is Scope.SENDER
    assert idx.check("s0", "13300012345") is Scope.SENDER  # the first generated row
    assert idx.check("s1", "13300012345") is Scope.NONE


def _half(old_csv: Path, tmp_path: Path) -> Path:
    path = tmp_path / "half.csv"
    lines = old_csv.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[: 1 + len(OLD) // 2]) + "\n", encoding="utf-8")
    return path


def test_a_late_write_stays_in_force_alike_in_every_process(tmp_path):
    """An event older than the serving snapshot's as_of for a key the snapshot is silent on
    stays in force (SPEC §4); a late opt-in of a key the snapshot lists (as of its as_of)
    yields to it: alike in the process that took the write and in one that reads the log."""
    as_of = 1_700_000_000_000
    index = SuppressionIndex.build(["13812345678"], ["shop"],
                                   meta={"as_of_ms": as_of, "as_of": "2023-11-14"})
    writer, reader = Engine(index, data_dir=tmp_path), Engine(index, data_dir=tmp_path)
    writer.opt_out("13900000001", "shop", at_ms=as_of - 1000)  # late: before the snapshot
    writer.opt_out("13900000002", "shop", at_ms=as_of + 1000)  # after it
    writer.opt_in("13812345678", "shop", at_ms=as_of - 1000)  # older than the listed row
    for engine in (writer, reader):
        assert engine.check("shop", "13900000001") is Scope.SENDER
        assert engine.check("shop", "13900000002") is Scope.SENDER
        assert engine.check("shop", "13812345678") is Scope.SENDER


def test_own_writes_are_taken_once(tmp_path):
    """The log's tail skips this process's own records: its events were taken at the write
    (counted once, no second pass over the overlay); another process's are taken from the log."""
    from anning.demo import ensure_snapshot

    ensure_snapshot(tmp_path, 1000)
    writer, other = Engine(data_dir=tmp_path), Engine(data_dir=tmp_path)
    writer.open_snapshot()
    other.open_snapshot()
    at = int(time.time() * 1000) + 60_000
    writer.opt_out("13900000001", "shop", at_ms=at)
    writer.apply([writer.make_event(f"1390000000{i}", "shop", "all", 1, at, "api")
                  for i in range(2, 6)])
    for _ in range(3):
        writer.refresh()
        other.refresh()
    assert writer.status().events == 5
    assert other.status().events == 5
    assert writer.check("shop", "13900000001") == other.check("shop", "13900000005") == \
        Scope.SENDER


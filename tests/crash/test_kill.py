"""Crash safety over gRPC (SPEC §6, §7): `anning serve` killed with SIGKILL at random moments
while writer threads write, restarted on the same data directory, and every write it
acknowledged found there; WriteBatch's and Reassign's answers to bad and oversized input; and
two workers' engines retiring the same checkpointed log segments."""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections import Counter, namedtuple
from pathlib import Path

import grpc
import numpy as np
import pytest

from anning.engine import Engine
from anning.storage.fileio import FileIO
from anning.testing import server as h
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode
T = 10.0
NOW_MS = int(time.time() * 1000)
AS_OF_MS = NOW_MS - 3_600_000  # the snapshot's cut: every event of these tests is later
OUT, IN, REASSIGN = pb.EVENT_KIND_OPT_OUT, pb.EVENT_KIND_OPT_IN, pb.EVENT_KIND_REASSIGN
NONE, SENDER, ENTITY, GLOBAL = range(4)

SEED = 2026
ROUNDS = 100
WRITERS = 6
POOL = 32  # numbers of a writer: the model, and so each check of all of it, stays small
LONG_EVERY = 16  # these rounds live until about the first background checkpoint (at 5 s)
CATEGORIES = {"": 1, "marketing": 1, "notification": 2, "all": 3}  # -> the bits checks ask
CHECKED = ("marketing", "notification")  # bit 0, bit 1
# Checks ask as s{w} (no entity), t{w} (of entity e{w}) or u (nobody: global entries only).
SENDERS = [f"{p}{w}" for p in "st" for w in range(WRITERS)] + ["u"]
ENTITIES = {f"t{w}": f"e{w}" for w in range(WRITERS)}


def scopes_of(w: int) -> list[str]:
    return [f"s{w}", f"t{w}", f"entity:e{w}", "*"]


def levels_of(w: int) -> list[tuple[int, tuple[str | None, ...]]]:
    """(index into SENDERS, the keys a check of that sender walks: sender, entity, global)."""
    return [(w, (f"s{w}", None, "*")), (WRITERS + w, (f"t{w}", f"entity:e{w}", "*")),
            (2 * WRITERS, ("u", None, "*"))]


def snapshot_of(w: int) -> dict[int, dict[str, int]]:
    """Writer w's numbers on the list: number -> {scope: category bits}."""
    return {8613900000000 + w * 1000 + k: {**({"*": 3} if k % 3 == 0 else {}),
                                           scopes_of(w)[k % 3]: (1, 2, 3)[k % 3]}
            for k in range(8)}


# -- the model of what was written -----------------------------------------------------------


Write = namedtuple("Write", "number kind scope category at")  # scope "": a reassignment


def answer(snap: dict[str, int], events: list[Write], keys: tuple[str | None, ...],
           bit: int) -> int:
    """SPEC §2/§4: level by level the latest event decides (an opt-in goes on), else the
    snapshot entry unless the number was reassigned; a reassignment drops older events."""
    since = max((e.at for e in events if e.kind == REASSIGN), default=None)
    for level, key in enumerate(keys, 1):
        mine = [e for e in events if key and e.scope == key and CATEGORIES[e.category] >> bit & 1
                and (since is None or e.at >= since)]
        if mine:
            if max(mine, key=lambda e: e.at).kind == OUT:
                return level
        elif key and since is None and snap.get(key, 0) >> bit & 1:
            return level
    return NONE


class Model:
    """Every write sent, acknowledged or unknown (its call failed: on disk or not)."""

    def __init__(self) -> None:
        self.snapshot = {n: e for w in range(WRITERS) for n, e in snapshot_of(w).items()}
        # a writer's numbers, written by it alone: 8 on the list, the others not
        self.pools = [[*snapshot_of(w), *range(8614000000000 + w * POOL,
                                               8614000000000 + (w + 1) * POOL - 8)]
                      for w in range(WRITERS)]
        self.owner = {n: w for w, pool in enumerate(self.pools) for n in pool}
        self.acked: dict[int, list[Write]] = {}  # number -> writes, in time order
        self.unknown: dict[int, list[Write]] = {}
        self.last_at: dict[int, int] = {}
        self.tainted: list[set[int]] = [set() for _ in range(WRITERS)]  # with unknown writes
        self._allowed: dict[int, tuple[np.ndarray, tuple]] = {}

    def allowed(self, n: int) -> np.ndarray:
        """(3 senders, 2 categories) masks of the answers a check may give: with whatever
        subset of the unknown writes is on disk, never without an acknowledged one. Writes
        before the last acknowledged reassignment no longer count, whatever they were."""
        key = (len(self.acked.get(n, [])), len(self.unknown.get(n, [])))
        if n in self._allowed and self._allowed[n][1] == key:
            return self._allowed[n][0]
        since = max((e.at for e in self.acked.get(n, []) if e.kind == REASSIGN), default=0)
        acked = [e for e in self.acked.get(n, []) if e.at >= since]
        unknown = [e for e in self.unknown.get(n, []) if e.at >= since]
        out = np.zeros((3, 2), np.uint8)
        for k in range(len(unknown) + 1):
            for extra in itertools.combinations(unknown, k):
                for j, (_, keys) in enumerate(levels_of(self.owner[n])):
                    for bit in (0, 1):
                        out[j, bit] |= 1 << answer(self.snapshot.get(n, {}),
                                                   acked + list(extra), keys, bit)
        self._allowed[n] = (out, key)
        return out

    def checks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(numbers, sender indexes, allowed masks per category) of every check to make."""
        numbers = sorted(set(self.snapshot) | set(self.acked) | set(self.unknown))
        which = [[s for s, _ in levels_of(self.owner[n])] for n in numbers]
        allowed = np.stack([self.allowed(n) for n in numbers]).reshape(-1, 2)
        return (np.repeat(np.array(numbers, np.uint64), 3), np.array(which, np.uint32).ravel(),
                allowed)


class Writer(threading.Thread):
    """Calls OptOut / OptIn / Reassign / WriteBatch on its own numbers, one at a time, with
    increasing times per number, until a call fails (then it stops: the server is gone)."""

    def __init__(self, w: int, target: str, model: Model, rng: random.Random, pause: float,
                 first_ack: threading.Event, stop: threading.Event) -> None:
        super().__init__(name=f"writer-{w}", daemon=True)
        self.w, self.target, self.model, self.rng, self.pause = w, target, model, rng, pause
        self.first_ack, self.stop, self.acked_calls = first_ack, stop, 0
        self.failure: tuple[float, grpc.StatusCode, str] | None = None

    def event(self, kind: int, n: int | None = None) -> Write:
        n = n if n is not None else self.rng.choice(self.model.pools[self.w])
        at = self.model.last_at[n] = self.model.last_at.get(n, AS_OF_MS + 60_000) + 1
        if kind == REASSIGN:
            return Write(n, kind, "", "", at)
        category = self.rng.choice(["", "marketing", "marketing", "notification", "all"])
        return Write(n, kind, self.rng.choice(scopes_of(self.w)), category, at)

    def call(self, writes: list[Write], s: h.Stubs) -> None:
        items = [pb.WriteEvent(kind=e.kind, number=f"+{e.number}", scope=e.scope,
                               category=e.category, at_ms=e.at) for e in writes]
        e = items[0]
        if len(items) > 1:
            s.opt_outs.WriteBatch(pb.WriteBatchRequest(events=items), timeout=T)
        elif e.kind == REASSIGN:
            s.opt_outs.Reassign(pb.ReassignRequest(number=e.number, at_ms=e.at_ms), timeout=T)
        else:
            (s.opt_outs.OptOut if e.kind == OUT else s.opt_outs.OptIn)(pb.OptOutRequest(
                number=e.number, scope=e.scope, category=e.category, at_ms=e.at_ms), timeout=T)

    def run(self) -> None:
        model, rng, tainted = self.model, self.rng, self.model.tainted[self.w]
        with h.Stubs(self.target, use_local_subchannel_pool=1) as s:
            while not self.stop.is_set():
                r = rng.random()
                kinds = [OUT] if r < 0.35 else [IN] if r < 0.55 else [REASSIGN] if r < 0.65 \
                    else [rng.choice((OUT, OUT, IN, REASSIGN)) for _ in range(rng.randint(2, 5))]
                # numbers with unknown writes are reassigned first: once that is acknowledged
                # their state is known again, so the model stays small
                writes = [self.event(REASSIGN, n) for n in sorted(tainted)] or \
                    [self.event(kind) for kind in kinds]
                try:
                    self.call(writes, s)
                except grpc.RpcError as exc:
                    self.failure = (time.monotonic(), exc.code(), exc.details())
                    for e in writes:
                        model.unknown.setdefault(e.number, []).append(e)
                        tainted.add(e.number)
                    return
                for e in writes:
                    model.acked.setdefault(e.number, []).append(e)
                    tainted.discard(e.number)
                self.acked_calls += 1
                self.first_ack.set()
                time.sleep(self.pause)


# -- the kill loop ---------------------------------------------------------------------------


def verify(target: str, model: Model, rng: random.Random) -> tuple[list[tuple], int]:
    """Check every number of the model on a fresh connection: CheckColumns for all, in both
    categories, CheckBatch for a sample. Returns the answers not allowed, and the checks made."""
    numbers, which, allowed = model.checks()
    wrong = []
    with h.Stubs(target, use_local_subchannel_pool=1) as s:
        for bit, category in enumerate(CHECKED):
            codes = np.frombuffer(s.suppression.CheckColumns(pb.CheckColumnsRequest(
                senders=SENDERS, sender_index=which.astype("<u4").tobytes(),
                numbers=numbers.astype("<u8").tobytes(), category=category), timeout=T).scopes,
                np.uint8)
            for i in np.flatnonzero((np.left_shift(1, codes) & allowed[:, bit]) == 0):
                wrong.append((int(numbers[i]), SENDERS[which[i]], category, int(codes[i]),
                              int(allowed[i, bit])))
        sample = [(i, bit) for i in rng.sample(range(len(numbers)), 100) for bit in (0, 1)]
        results = s.suppression.CheckBatch(pb.CheckBatchRequest(checks=[pb.CheckRequest(
            sender=SENDERS[which[i]], number=f"+{numbers[i]}", category=CHECKED[b])
            for i, b in sample]), timeout=T).results
        for (i, bit), got in zip(sample, results, strict=True):
            if got.error or not 1 << got.scope & allowed[i, bit]:
                wrong.append((int(numbers[i]), SENDERS[which[i]], CHECKED[bit], got.scope,
                              int(allowed[i, bit]), "CheckBatch", got.error))
    return wrong, 2 * len(numbers) + len(results)


def segments(data: Path) -> list[int]:  # the write log's segment numbers
    return sorted(int(p.stem.split("-")[1]) for p in data.glob("events-*.log"))


def test_sigkill_loop_loses_no_acknowledged_write(tmp_path):
    """ROUNDS times: restart on the same data, check every write acknowledged in any round so
    far, let WRITERS threads write, and SIGKILL the whole process group at a random moment."""
    rng = random.Random(SEED)
    data = tmp_path / "data"
    model = Model()
    rows = [(n, scope, {1: "marketing", 2: "notification", 3: "all"}[bits])
            for n, entries in model.snapshot.items() for scope, bits in entries.items()]
    h.write_snapshot(data, *map(list, zip(*rows, strict=True)), ENTITIES, AS_OF_MS)
    wrong: dict[tuple, tuple] = {}  # (number, sender, category) -> the first wrong answer
    early, logs, startup, rounds, failures = [], [], [], [], Counter()
    kills = acked_calls = checks = mid_checkpoint = 0
    for r in range(ROUNDS + 1):  # the last start only checks
        started = time.monotonic()
        # most rounds die 20-400 ms after the first ack; every LONG_EVERY-th lives until the
        # first background checkpoint (5 s after start): killed as it begins, or after it
        j, long = r // LONG_EVERY, r % LONG_EVERY == LONG_EVERY - 1
        server = h.Server(data, workers=1 + (j if long else r) % 2, demo=False,
                          extra_args=["--checkpoint-bytes", "4096"])
        server.start()
        try:
            server.wait_health(h.SERVING)
            serving = time.monotonic()
            startup.append(serving - started)
            found, made = verify(server.target, model, rng)
            checks += made
            for item in found:
                wrong.setdefault(item[:3], (r, *item[3:]))
            if r == ROUNDS:  # after all the crashes, still a clean stop
                assert server.stop() == 0, server.output()
                break
            before, tmp = max(segments(data)), set(data.glob("*.tmp-*"))
            first_ack, stop = threading.Event(), threading.Event()
            writers = [Writer(w, server.target, model, random.Random(rng.random()),
                              0.05 if long else 0.0, first_ack, stop) for w in range(WRITERS)]
            for writer in writers:
                writer.start()
            assert first_ack.wait(T), f"no write acknowledged:\n{server.output()}"
            window = ((5.2, 5.6), (4.97, 5.1))[j // 2 == 1]
            time.sleep(max(0.0, serving + rng.uniform(*window) - time.monotonic()) if long
                       else rng.uniform(0.02, 0.4))
            killed = time.monotonic()
            server.sigkill()
            kills += 1
            stop.set()
            after = segments(data)  # a new segment not yet retired: a checkpoint was cut short
            mid_checkpoint += (len(after) > 1 and max(after) > before) or \
                bool(set(data.glob("*.tmp-*")) - tmp)
            for writer in writers:
                writer.join(T + 5)
                assert not writer.is_alive(), f"round {r}: {writer.name} hangs"
                acked_calls += writer.acked_calls
                failures.update([writer.failure[1].name] if writer.failure else [])
                if writer.failure and writer.failure[0] < killed:  # failed with the server up
                    early.append((r, writer.name, *writer.failure[1:]))
        finally:
            server.kill()
            logs.append((r, server.output()))
        rounds.append(time.monotonic() - started)
    checkpoints = sum("checkpoint: " in log for _, log in logs)
    allowed = model.checks()[2]
    print(f"\n{kills} kills, {np.mean(rounds):.3f} s a round (median {np.median(rounds):.3f}, "
          f"start {np.mean(startup):.3f}); {acked_calls} calls acknowledged, {dict(failures)}; "
          f"{checks} checks ({allowed.size} a restart at the end); {checkpoints} rounds "
          f"checkpointed, {mid_checkpoint} killed mid-checkpoint")
    assert kills >= 100
    assert not wrong, f"{len(wrong)} checks lost an acknowledged write (number, sender, " \
        f"category) -> (round, answer, allowed mask): {sorted(wrong.items())[:20]}"
    assert not early, early
    assert checkpoints >= 3, "the background checkpoint hardly ran during the loop"
    # the checks pin answers down (few unknown writes), and both ways
    assert np.isin(allowed, (1, 2, 4, 8)).mean() > 0.9 and 0.1 < (allowed == 1).mean() < 0.9
    bad = re.compile(r"Traceback|Exception calling application|anning\.server \w+ failed: |"
                     r"checkpoint failed|exited with")  # no crash but SIGKILL, no failed call
    assert not [(r, log) for r, log in logs if bad.search(log)]


# -- WriteBatch and Reassign input over gRPC -------------------------------------------------

SNAP_GLOBAL = 8613500000001  # on the list for everyone: a reassignment would take it off
_numbers = itertools.count(8613500001000)
N = "+8613500000999"


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("batch") / "data"
    h.write_snapshot(data, [SNAP_GLOBAL], ["*"], ["all"], None, AS_OF_MS)
    with h.running(h.Server(data, workers=2, demo=False, max_batch=1000)) as server:
        yield server


def fresh_scopes(target: str, numbers: list[int]) -> list[int]:
    """Answers for sender u from new connections (each lands on either worker): all agree."""
    answers = []
    for _ in range(4):
        with h.Stubs(target, use_local_subchannel_pool=1) as s:
            answers.append([r.scope for r in s.suppression.CheckBatch(pb.CheckBatchRequest(
                checks=[pb.CheckRequest(sender="u", number=f"+{n}") for n in numbers]),
                timeout=T).results])
    assert all(a == answers[0] for a in answers), answers
    return answers[0]


@pytest.mark.parametrize(("field", "bad"), [
    ("number", {"kind": OUT, "number": "abc", "scope": "*"}),
    ("number", {"kind": REASSIGN, "number": ""}),
    ("scope", {"kind": OUT, "number": N, "scope": ""}),
    ("scope", {"kind": IN, "number": N, "scope": "entity:"}),
    ("kind", {"kind": pb.EVENT_KIND_UNSPECIFIED, "number": N}), ("kind", {"kind": 9, "number": N}),
    ("at_ms", {"kind": OUT, "number": N, "scope": "*", "at_ms": 5}),
    ("at_ms", {"kind": REASSIGN, "number": N, "at_ms": NOW_MS + 7 * 86_400_000}),
    ("category", {"kind": OUT, "number": N, "scope": "*", "category": "bogus"}),
    ("source", {"kind": OUT, "number": N, "scope": "*", "source": "snapshot"}),
])
def test_write_batch_with_a_bad_item_writes_nothing(batch_server, field, bad):
    numbers = [next(_numbers) for _ in range(6)]
    good = [pb.WriteEvent(kind=OUT, number=f"+{n}", scope="*", category="all") for n in numbers]
    good.append(pb.WriteEvent(kind=REASSIGN, number=f"+{SNAP_GLOBAL}"))
    events = [*good[:3], pb.WriteEvent(**bad), *good[3:]]
    with h.Stubs(batch_server.target) as s:
        exc = h.rpc_error(s.opt_outs.WriteBatch, pb.WriteBatchRequest(events=events), timeout=T)
    assert exc.code() == Code.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert exc.details().startswith(f"events[3].{field}: "), exc.details()
    # all or none: not one opt-out taken, and the snapshot entry still counts
    assert fresh_scopes(batch_server.target, [*numbers, SNAP_GLOBAL]) == [NONE] * 6 + [GLOBAL]


def test_write_batch_over_max_batch(batch_server):
    numbers = [next(_numbers) for _ in range(1001)]
    request = pb.WriteBatchRequest(events=[pb.WriteEvent(kind=OUT, number=f"+{n}", scope="*")
                                           for n in numbers])
    with h.Stubs(batch_server.target) as s:
        exc = h.rpc_error(s.opt_outs.WriteBatch, request, timeout=T)
    assert exc.code() == Code.RESOURCE_EXHAUSTED and "1000" in exc.details(), exc.details()
    assert fresh_scopes(batch_server.target, numbers[::50]) == [NONE] * 21


@pytest.mark.parametrize(("field", "fields"), [
    ("number", {"number": "abc"}), ("number", {"number": ""}), ("number", {"number": "+"}),
    ("at_ms", {"number": f"+{SNAP_GLOBAL}", "at_ms": 5}),
    ("at_ms", {"number": f"+{SNAP_GLOBAL}", "at_ms": -1}),
    ("at_ms", {"number": f"+{SNAP_GLOBAL}", "at_ms": NOW_MS + 7 * 86_400_000}),
    ("source", {"number": f"+{SNAP_GLOBAL}", "source": "bogus"}),
    ("source", {"number": f"+{SNAP_GLOBAL}", "source": "snapshot"}),
])
def test_bad_reassign_names_the_field(batch_server, field, fields):
    with h.Stubs(batch_server.target) as s:
        exc = h.rpc_error(s.opt_outs.Reassign, pb.ReassignRequest(**fields), timeout=T)
    assert exc.code() == Code.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert exc.details().startswith(f"{field}: "), exc.details()
    assert fresh_scopes(batch_server.target, [SNAP_GLOBAL]) == [GLOBAL]  # nothing taken off


def test_write_batch_of_1000_seen_at_once_by_the_other_worker(tmp_path):
    """After the ack, checks on new connections (either worker) see all 1000 at once; the
    workers' metrics files tell when one that did not take the write has answered."""
    data = tmp_path / "data"
    h.write_snapshot(data, [SNAP_GLOBAL], ["*"], ["all"], ENTITIES, AS_OF_MS)  # t0 is of e0
    kinds = [("s0", 0, SENDER), ("entity:e0", WRITERS, ENTITY), ("*", 2 * WRITERS, GLOBAL),
             ("t0", WRITERS, SENDER)]  # (scope written, index of the sender asked, answer)
    numbers = np.arange(8613400000000, 8613400001000, dtype=np.uint64)
    which = np.array([kinds[i % 4][1] for i in range(1000)], "<u4")
    want = [kinds[i % 4][2] for i in range(1000)]
    server = h.Server(data, workers=2, demo=False, max_batch=1000, metrics=True)

    def pids() -> set[str]:  # a worker's histogram file appears with its first answered call
        return {p.stem.rsplit("_", 1)[1] for p in (data / ".metrics").glob("histogram_*.db")}

    with h.running(server), h.Stubs(server.target) as s:
        ack = s.opt_outs.WriteBatch(pb.WriteBatchRequest(events=[
            pb.WriteEvent(kind=OUT, number=f"+{n}", scope=kinds[i % 4][0])
            for i, n in enumerate(numbers.tolist())]), timeout=T)
        assert ack.events == 1000 and ack.sequence > 0
        writer = pids()
        assert len(writer) == 1, writer
        for attempt in range(40):  # at least 4, until the other worker has answered
            with h.Stubs(server.target, use_local_subchannel_pool=1) as fresh:
                got = fresh.suppression.CheckColumns(pb.CheckColumnsRequest(
                    senders=SENDERS, sender_index=which.tobytes(),
                    numbers=numbers.astype("<u8").tobytes()), timeout=T)
            assert np.frombuffer(got.scopes, np.uint8).tolist() == want, attempt
            if attempt >= 3 and pids() != writer:
                break
        assert len(pids()) == 2, "no check landed on the other worker in 40 connections"


class _HookIO(FileIO):
    """The file layer, with something another process does run just before one unlink."""

    before_unlink = None

    def unlink(self, path):
        hook, self.before_unlink = self.before_unlink, None
        if hook:
            hook()
        super().unlink(path)


def test_checkpoint_retires_beside_a_worker_that_adopts_it(tmp_path):
    """Two workers share the log: while one retires the segments it folded, the other adopts
    the new checkpoint and retires them too (as after a crash before retiring). Neither may
    fail for a segment the other deleted first."""
    data = tmp_path / "data"
    h.write_snapshot(data, [SNAP_GLOBAL], ["*"], ["all"], None, AS_OF_MS)
    io = _HookIO()
    checkpointer, adopter = Engine(data_dir=data, io=io), Engine(data_dir=data)
    checkpointer.open_snapshot()
    adopter.open_snapshot()
    checkpointer.opt_out("+8613500000002", "*", at_ms=NOW_MS)
    io.before_unlink = adopter.refresh  # it polls: a new checkpoint, segments it covers
    report = checkpointer.checkpoint()
    assert report is not None and segments(data) == [report.covers + 1]
    for engine in (checkpointer, adopter):
        assert engine.check("u", "+8613500000002") == GLOBAL

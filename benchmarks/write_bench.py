"""The write side under load: a real `anning serve` (1 worker, data directory on local disk,
real fsync) beside the constant servicers of benchmarks.lib.peers (same proto, answers at once;
synchronous, grpc.aio, and a durable floor that only appends and fsyncs), repetitions
interleaved, medians and ratios (benchmarks/README.md has more).

    python -m benchmarks.write_bench                   # 10M-entry snapshot, 1M logged events
    python -m benchmarks.write_bench --quick           # CI size: 1M entries, 100k events
    python -m benchmarks.write_bench --json write.json

Targets: OptOut from 16 threads >= 0.8x the constant servicer's rate; OptOut p99 <= 10 ms paced
at 1,000/s; WriteBatch >= 50,000 opt-outs/s; Check p99 at 500/s under 16 OptOut threads <= 1.5x
the same with no writers; restart with 1M logged events, and after a checkpoint, <= 5 s.

Every answer is checked: each acknowledgement (a sequence; a batch's count), each Check; after
the write runs, every write anning acknowledged, by CheckColumns over every (sender, number)
written (each must answer SENDER, and no two acknowledgements may share a sequence); after each
restart, the logged events (all of them up to --verify-events, else a random sample of that
many plus the first and the last), each answered as the whole history says
(anning.model.reference). A failed or wrong answer exits 1; a missed target never does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from anning.testing.server import accepts
from benchmarks.lib import datagen
from benchmarks.lib.figures import Figures, fmt
from benchmarks.lib.loadgen import (
    CHECK,
    OPT_OUT,
    WARM,
    WRITE_BATCH,
    task_closed,
    task_paced_threads,
)
from benchmarks.lib.machine import disk, others
from benchmarks.lib.oracle import event_checks
from benchmarks.lib.peers import ConstantServer
from benchmarks.lib.servers import (
    CALL_TIMEOUT,
    HOST,
    NO_CHECKPOINT,
    AnningServer,
    stop_all,
    wait_ready,
)

WRITES = 50_000  # distinct OptOut requests, cycled
COLUMNS = 100_000  # numbers a CheckColumns call of the verifications
SCOPES = ("NONE", "SENDER", "ENTITY", "GLOBAL")


# -- the data (built in a spawned process: the build's memory stays out of this one) -----------


def make_workload(entries: int, events: int, work: Path, batch_sizes: list[int],
                  verify: int) -> dict:
    from anning import write_snapshot
    from anning.engine import Engine
    from anning.model.events import OPT_OUT as KIND_OPT_OUT
    from anning.v1 import anning_pb2 as pb

    t0 = time.perf_counter()
    now = int(time.time() * 1000)
    as_of = now - 2 * 3_600_000  # the logged events fall between the cut and now
    u = datagen.make_universe()
    e = datagen.generate_entries(entries, u)
    write_snapshot(datagen.build_index(u, e, meta={"as_of_ms": as_of}), work / "index.anx")
    for name in ("live", "restart-log", "restart-empty"):  # one snapshot file, hard links
        (work / name).mkdir()
        os.link(work / "index.anx", work / name / "index.anx")
    rng = np.random.default_rng([datagen.SEED, 99])
    # Checks: sender-scoped marketing entries (SENDER) and numbers no entry has (NONE). Every
    # write takes a fresh number, so these answers hold under any write load.
    own = np.flatnonzero((e.codes < u.n_senders) & ((e.masks & 1) == 1))
    hit = own[rng.choice(len(own), 1024, replace=False)]
    fresh_numbers = datagen.random_numbers(rng, (WRITES + 4 * sum(batch_sizes) + 1025) * 6 // 5)
    fresh_numbers = np.unique(fresh_numbers[~np.isin(fresh_numbers, e.numbers)])
    rng.shuffle(fresh_numbers)  # (sender, number) pairs no entry has; each used once from here
    fresh = list(zip([u.senders[c] for c in
                      datagen.zipf_senders(rng, u, len(fresh_numbers)).tolist()],
                     datagen.national(fresh_numbers), strict=True))
    pairs = [*zip([u.senders[c] for c in e.codes[hit].tolist()],
                  datagen.national(e.numbers[hit]), strict=True), *fresh[:1024]]
    order = rng.permutation(len(pairs)).tolist()
    checks = [pb.CheckRequest(sender=pairs[i][0], number=pairs[i][1]).SerializeToString()
              for i in order]
    answers = [pb.CheckResponse(suppressed=i < 1024, scope=int(i < 1024)).SerializeToString()
               for i in order]
    # Opt-outs of fresh numbers, of one (Zipf) sender each, marketing, at_ms 0 (now): payload
    # k writes opt_out_pairs[k], batch j of a size writes batch_pairs[size][j].
    opt_out_pairs = fresh[1024:1024 + WRITES]
    opt_outs = [pb.OptOutRequest(scope=s, number=n).SerializeToString() for s, n in opt_out_pairs]
    batches: dict[int, list[bytes]] = {}
    batch_pairs: dict[int, list[list[tuple[str, str]]]] = {}
    pos = 1024 + WRITES
    for size in batch_sizes:
        batch_pairs[size] = [fresh[pos + j * size:pos + (j + 1) * size] for j in range(4)]
        batches[size] = [pb.WriteBatchRequest(events=[
            pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, scope=s, number=n) for s, n in chunk
        ]).SerializeToString() for chunk in batch_pairs[size]]
        pos += 4 * size
    # The restart log: events drawn as entries are (benchmarks.lib.datagen.generate_events),
    # through Engine.apply, 10,000 a batch (one fsync each), and a known last one: a number no
    # entry or other event has, opted out of one sender.
    t1 = time.perf_counter()
    ev = datagen.generate_events(events, u, as_of, now - 60_000)
    engine = Engine(data_dir=work / "restart-log")
    engine.open_snapshot()
    datagen.log_events(engine, ev, u)
    logged = fresh[pos]
    engine.apply([engine.make_event(logged[1], logged[0], "marketing", KIND_OPT_OUT, now - 1,
                                    "api")])
    source = engine.source
    log_mb = round(source.size() / 2**20, 1) if hasattr(source, "size") else 0
    t2 = time.perf_counter()
    # What each restart must answer about the logged events.
    if events <= verify:
        pick, picked = np.arange(events), f"all {events:,}"
    else:
        pick = np.unique(np.r_[0, events - 1, rng.choice(events, verify, replace=False)])
        picked = f"a random sample of {verify:,} and the first and the last ({len(pick):,})"
    expect = event_checks(u, e, ev, pick, as_of)
    groups = []
    for bit, category in enumerate(("marketing", "notification")):
        these = np.flatnonzero(expect.bits == bit)
        codes, index = np.unique(expect.senders[these], return_inverse=True)
        groups.append({"category": category, "senders": [u.senders[c] for c in codes.tolist()],
                       "index": index.astype(np.uint32), "numbers": expect.numbers[these],
                       "expected": expect.expected[these], "events": expect.events[these]})
    suppressed = int((expect.expected > 0).sum())
    return {"checks": checks, "answers": answers, "opt_outs": opt_outs, "batches": batches,
            "opt_out_pairs": opt_out_pairs, "batch_pairs": batch_pairs, "present": pairs[0],
            "logged": logged, "event_groups": groups,
            "event_note": f"{picked} logged events checked after each restart "
                          f"({suppressed:,} must answer suppressed, "
                          f"{len(expect) - suppressed:,} NONE)",
            "info": {"entries": entries, "events": events + 1, "log_mb": log_mb,
                     "snapshot_s": round(t1 - t0, 1), "events_s": round(t2 - t1, 1),
                     "expect_s": round(time.perf_counter() - t2, 1)}}


def columns(target: str, senders: list[str], index: np.ndarray, numbers: np.ndarray,
            category: str = "") -> np.ndarray:
    """The scopes CheckColumns answers, COLUMNS numbers a call."""
    from anning.client import Client

    with Client(target, timeout=600.0) as client:
        return np.concatenate([np.asarray(client.check_columns(
            senders, index[i:i + COLUMNS], numbers[i:i + COLUMNS], category))
            for i in range(0, len(numbers), COLUMNS)] or [np.empty(0, np.uint8)])


# -- the runs ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, pool: Any, w: dict, figs: Figures) -> None:
        self.args, self.pool, self.w, self.figs = args, pool, w, figs
        self.raw: dict[str, Any] = {}
        # anning's acknowledged writes: (path, items, payloads acknowledged, their sequences)
        self.written: list[tuple[str, int, np.ndarray, np.ndarray]] = []

    def fail(self, message: str) -> None:
        self.figs.fail(message)

    def _get(self, label: str, pending: Any) -> dict | None:
        res = pending.get(timeout=self.args.seconds + self.args.paced_seconds + 120)
        if res.get("error"):
            self.fail(f"{label}: {res['error']}")
            return None
        bad = [f"{len(res['errors'])} failed calls, e.g. {res['errors'][0]}"] \
            if res["errors"] else []
        bad += [f"{res['wrong']} wrong answers"] if res["wrong"] else []
        bad += [] if res["calls"] else ["no call answered"]
        for why in bad:
            self.fail(f"{label}: {why}")
        return None if bad else res

    def _keep(self, server: Any, path: str, items: int, res: dict | None) -> None:
        """Keep anning's acknowledged writes, to check afterwards that each one is there."""
        if res and isinstance(server, AnningServer) and path in (OPT_OUT, WRITE_BATCH):
            self.written.append((path, items, res["acked"], res["sequences"]))

    def closed(self, server: Any, path: str, payloads: list[bytes], items: int,
               threads: int, channels: int) -> dict | None:
        cpu0 = sum(server.cpu().values())
        res = self._get(f"{server.name} {path}", self.pool.apply_async(task_closed, (
            server.port, path, payloads, items, threads, channels, time.time() + 0.3,
            self.args.seconds)))
        self._keep(server, path, items, res)
        if res:  # over the whole task, warm-up included: so are the calls counted
            res["server_us"] = (sum(server.cpu().values()) - cpu0) / res["calls"] * 1e6
        return res

    def paced(self, server: Any, path: str, payloads: list[bytes], answers: Any, rate: float,
              threads: int, load: tuple | None = None, load_rate: float = 0.0) -> dict | None:
        """The paced run; with `load` (task_closed's path, payloads, items, threads, channels)
        that load runs beside it in the other client process, from WARM before the schedule
        starts to after it ends: closed loop, or paced at `load_rate` calls/s if given."""
        a = self.args
        start_at = time.time() + 0.6
        if load and load_rate:
            path_, payloads_, _items, threads_, _channels = load
            pending = self.pool.apply_async(task_paced_threads, (
                server.port, path_, payloads_, None, load_rate, a.paced_seconds + 0.3 + WARM,
                threads_, start_at - WARM))
        elif load:
            pending = self.pool.apply_async(task_closed, (
                server.port, *load, start_at - WARM, a.paced_seconds + 0.3))
        res = self._get(f"{server.name} paced {path}", self.pool.apply_async(
            task_paced_threads, (server.port, path, payloads, answers, rate, a.paced_seconds,
                                 threads, start_at)))
        self._keep(server, path, 1, res)
        if load:
            bg = self._get(f"{server.name} write load", pending)
            self._keep(server, load[0], load[2], bg)
            if res and bg and bg["pid"] == res["pid"]:
                self.fail("the checker and the writers ran in one process")
            if res:
                res["load_rate"] = (bg["rate"] if "rate" in bg else
                                    bg["calls"] / (a.paced_seconds + 0.3 + WARM)) if bg else 0.0
        if res:
            res["p50"], res["p99"] = (float(v) / 1e6 for v in
                                      np.percentile(res.pop("lat_ns"), [50, 99]))
        return res

    def interleaved(self, label: str, runs: list[tuple[str, Any]]) -> dict[str, list[dict]]:
        """Each run once a repetition, the order reversed every other one: drift and the
        machine's other work fall on both sides alike."""
        out: dict[str, list[dict]] = {name: [] for name, _ in runs}
        for rep in range(self.args.reps):
            for name, fn in runs if rep % 2 == 0 else runs[::-1]:
                if res := fn():
                    out[name].append(res)
        print(f"  {label}: " + "; ".join(
            f"{name} " + ", ".join(_brief(r) for r in reps) for name, reps in out.items()),
            flush=True)
        self.raw[label] = out
        return out

    def row(self, target: str, unit: str, r: dict[str, list[dict]], key: str, goal: str,
            note: str = "", pair: tuple[str, str] | None = None) -> None:
        """Of interleaved runs the medians of `key` for a pair (default: the first two, anning's
        then its peer's), the ratio and the goal ("ratio <= 1.5" on the ratio, ">= N" or
        "<= N" on the first's; "": none)."""
        name, peer = pair or tuple(r)[:2]
        self.figs.compare(target, unit, name, [x[key] for x in r[name]], peer,
                          [x[key] for x in r[peer]], goal, note,
                          "higher" if key == "rate" else "lower")


def _brief(r: dict) -> str:
    if "restart_s" in r:
        return f"{r['restart_s']:.2f} s"
    return f"p99 {r['p99']:.2f} ms" if "p99" in r else f"{r['rate']:,.0f}/s"


def _cpu(r: dict[str, list[dict]], items: int) -> str:
    """The servers' CPU (every thread: C core and kernel too) an acknowledged event."""
    return "server CPU an event: " + ", ".join(
        f"{k} {fmt(statistics.median(x['server_us'] for x in v) / items)} us"
        for k, v in r.items() if v)


def writes_and_checks(b: Bench, anning: AnningServer, peers: dict[str, Any]) -> None:
    """`peers`: "constant" (the issue's peer: a synchronous servicer answering at once),
    "constant-aio" (the same on grpc.aio, anning's stack), "durable floor" (the synchronous
    constant whose OptOut appends and waits for a group-committed fsync, nothing else)."""
    a, w = b.args, b.w
    const = peers["constant"]
    servers = (("anning", anning), *peers.items())
    op = (w["opt_outs"], 1, a.writers, a.channels)
    print(f"1. OptOut, {a.writers} callers", flush=True)
    r = b.interleaved("OptOut closed", [
        (name, lambda s=s: b.closed(s, OPT_OUT, *op)) for name, s in servers])
    target = f"OptOut, {a.writers} callers"
    b.row(target, "writes/s", r, "rate", "ratio >= 0.8", _cpu(r, 1))
    b.row(target, "writes/s", r, "rate", "", "the same stack, answering at once",
          ("anning", "constant-aio"))
    b.row(target, "writes/s", r, "rate", "", "a record appended and fsync'd, nothing else",
          ("anning", "durable floor"))
    b.row(target, "writes/s", r, "rate", "", "what durability alone costs in this stack",
          ("durable floor", "constant"))

    print(f"2. OptOut paced {a.rate:,.0f}/s", flush=True)
    r = b.interleaved("OptOut paced", [
        (name, lambda s=s: b.paced(s, OPT_OUT, w["opt_outs"], None, a.rate, 8))
        for name, s in (("anning", anning), ("constant", const))])
    for p, goal in (("p50", ""), ("p99", "<= 10")):
        b.row(f"OptOut paced {a.rate:,.0f}/s, {p}", "ms", r, p, goal, "" if p == "p50" else
              f"sends > 1 ms late: anning {sum(x['late'] for x in r['anning'])}, "
              f"constant {sum(x['late'] for x in r['constant'])}")

    for size in a.batch_sizes:
        print(f"3. WriteBatch {size:,}", flush=True)
        bt = (w["batches"][size], size, a.batch_callers, 1)
        r = b.interleaved(f"WriteBatch {size}", [
            (name, lambda s=s, bt=bt: b.closed(s, WRITE_BATCH, *bt))
            for name, s in (("anning", anning), ("constant", const))])
        b.row(f"WriteBatch {size:,}, {a.batch_callers} callers", "opt-outs/s", r, "rate",
              ">= 50000", _cpu(r, size))

    # Check latency with and without writers, on each server against its own OptOut: the
    # constant servicers show what the stack and the shared cores do to a check under the
    # same load when the server itself does nothing.
    # a constant servicer answers every Check NONE: an empty CheckResponse
    answers = {name: w["answers"] if name == "anning" else [b""] * len(w["answers"])
               for name, _ in servers}
    for step, label, load_rate in (("4", f"{a.writers} closed-loop OptOut callers", 0.0),
                                   ("5", f"OptOut paced at {a.rate:,.0f}/s", a.rate)):
        print(f"{step}. Check paced {a.check_rate:,.0f}/s, idle and under {label}", flush=True)
        whose = (("anning", anning), ("constant", const)) if load_rate else servers[:3]
        runs = []
        for name, s in whose:
            chk = (CHECK, w["checks"], answers[name], a.check_rate, 4)
            runs += [(f"{name} with writers", lambda s=s, c=chk, lr=load_rate: b.paced(
                         s, *c, load=(OPT_OUT, *op), load_rate=lr)),
                     (f"{name} no writers", lambda s=s, c=chk: b.paced(s, *c))]
        r = b.interleaved(f"Check paced, {label}", runs)
        for name, _ in whose:
            pair = (f"{name} with writers", f"{name} no writers")
            loaded = statistics.median([x["load_rate"] for x in r[pair[0]]] or [0])
            for p, goal in (("p50", ""), ("p99", "ratio <= 1.5" if name == "anning" else "")):
                b.row(f"Check {p} at {a.check_rate:,.0f}/s under {label}", "ms", r, p, goal,
                      "" if p == "p50" else f"OptOut meanwhile (median) {loaded:,.0f}/s",
                      pair)
    verify_writes(b, anning)


def verify_writes(b: Bench, server: AnningServer) -> None:
    """Every write anning acknowledged in this run is there: no two acknowledgements share a
    sequence, and a CheckColumns of every (sender, number) written answers SENDER."""
    w = b.w
    sequences = np.concatenate([s for *_, s in b.written] or [np.empty(0, np.uint64)])
    if not len(sequences):
        b.fail("no write acknowledged by anning to verify")
        return
    if (shared := len(sequences) - len(np.unique(sequences))) or not sequences.min():
        b.fail(f"{shared} acknowledgements repeat another's sequence (or one is 0)")
    pairs: set[tuple[str, str]] = set()
    for path, items, acked, _ in b.written:
        for k in np.unique(acked).tolist():
            if path == OPT_OUT:
                pairs.add(w["opt_out_pairs"][k])
            else:
                pairs.update(w["batch_pairs"][items][k])
    written = sorted(pairs)
    names = sorted({s for s, _ in written})
    where = {s: i for i, s in enumerate(names)}
    index = np.array([where[s] for s, _ in written], np.uint32)
    numbers = np.array([8_600_000_000_000 + int(n) for _, n in written], np.uint64)
    t0 = time.perf_counter()
    try:
        got = columns(server.target, names, index, numbers)
    except Exception as exc:
        b.fail(f"the acknowledged writes could not be read back: {exc}")
        return
    wrong = np.flatnonzero(got != 1)
    if wrong.size:
        i = int(wrong[0])
        b.fail(f"{wrong.size:,} of {len(written):,} acknowledged opt-outs do not check SENDER, "
               f"e.g. {written[i]} checks {SCOPES[got[i]] if got[i] < 4 else got[i]}")
    b.figs.notes.append(
        f"verified: {len(sequences):,} acknowledgements by anning, each its own sequence; the "
        f"{len(written):,} distinct opt-outs they acknowledged all check SENDER afterwards "
        f"(CheckColumns, {time.perf_counter() - t0:.1f} s)")


def verify_events(target: str, groups: list[dict]) -> str | None:
    """The logged events checked (see make_workload): what is wrong, or None."""
    for g in groups:
        got = columns(target, g["senders"], g["index"], g["numbers"], g["category"])
        wrong = np.flatnonzero(got != g["expected"])
        if wrong.size:
            i = int(wrong[0])
            return (f"{wrong.size:,} of {len(got):,} logged events ({g['category']}) answered "
                    f"otherwise than written, e.g. event {int(g['events'][i]):,}: number "
                    f"{int(g['numbers'][i])}, sender {g['senders'][g['index'][i]]}: "
                    f"{SCOPES[got[i]] if got[i] < 4 else got[i]}, expected "
                    f"{SCOPES[g['expected'][i]]}")
    return None


def restart(b: Bench, data: Path, label: str, with_log: bool) -> dict | None:
    """Seconds from `anning serve` starting to health SERVING and a first Check answered;
    then, with the log, its events are checked (not timed)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from anning.v1 import anning_pb2 as pb
    from anning.v1 import anning_pb2_grpc as rpc

    t0 = time.perf_counter()
    server = AnningServer(data, 1, NO_CHECKPOINT, name=label)
    try:
        # Poll the port, not a channel: a channel's reconnect backoff would add up to a second.
        while not accepts(server.port):
            if not server.alive() or time.perf_counter() - t0 > 600:
                raise RuntimeError(f"no listening server\n{server.log_tail()}")
            time.sleep(0.002)
        t_port = time.perf_counter() - t0
        with grpc.insecure_channel(f"{HOST}:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            req = health_pb2.HealthCheckRequest(service="anning.v1.Suppression")
            while health.Check(req, timeout=CALL_TIMEOUT).status != \
                    health_pb2.HealthCheckResponse.SERVING:
                time.sleep(0.002)
            check = rpc.SuppressionStub(channel).Check
            first = check(pb.CheckRequest(sender=b.w["present"][0], number=b.w["present"][1]),
                          timeout=CALL_TIMEOUT)
            t_check = time.perf_counter() - t0
            if first.scope != pb.SCOPE_SENDER:
                raise RuntimeError(f"the first Check, of a listed pair, answered {first}")
            logged = b.w["logged"]
            if with_log and (got := check(pb.CheckRequest(sender=logged[0], number=logged[1]),
                                          timeout=CALL_TIMEOUT)).scope != pb.SCOPE_SENDER:
                raise RuntimeError(f"the log's last opt-out checks {got}: not replayed")
        t1 = time.perf_counter()
        if with_log and (wrong := verify_events(server.target, b.w["event_groups"])):
            raise RuntimeError(wrong)
        verify_s = time.perf_counter() - t1
    except Exception as exc:
        b.fail(f"restart {label}: {exc}")
        return None
    finally:
        server.stop()
    return {"restart_s": t_check, "port_s": t_port, "verify_s": verify_s}


def restarts(b: Bench, work: Path) -> None:
    info = b.w["info"]
    log_dir = work / "restart-log"
    events = f"{info['events']:,} logged events ({info['log_mb']} MB)"
    print(f"6. restart: {info['entries']:,} entries, {events}", flush=True)
    peer = ("empty log", lambda: restart(b, work / "restart-empty", "empty", False))
    r = b.interleaved("restart with log", [
        ("with log", lambda: restart(b, log_dir, "log", True)), peer])
    verified = statistics.median([x["verify_s"] for x in r["with log"]] or [0])
    b.row(f"restart, {events}", "s", r, "restart_s", "<= 5", "port open at (median) "
          f"{statistics.median([x['port_s'] for x in r['with log']] or [0]):.2f} s; "
          f"{b.w['event_note']} in {verified:.1f} s")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "anning.cli", "checkpoint", "--data",
                           str(log_dir)], capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        b.fail(f"anning checkpoint: exit {done.returncode}: {done.stderr[-2000:]}")
        return
    r = b.interleaved("restart after checkpoint", [
        ("checkpointed", lambda: restart(b, log_dir, "ckpt", True)), peer])
    b.row("restart after `anning checkpoint`", "s", r, "restart_s", "<= 5",
          f"`anning checkpoint --data` took {seconds:.1f} s: {done.stdout.strip()}; the same "
          "events checked after each restart")


def run(args: argparse.Namespace) -> int:
    ctx = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="anning-write-bench-", dir=args.dir))
    figs = Figures("anning write figures (medians; ratio = anning / peer)")
    figs.context.update({
        "entries": args.entries, "events": args.events, "reps": args.reps,
        "seconds": args.seconds, "channels": args.channels, "cores": os.cpu_count() or 0,
        "busy_before": others(), **disk(work)})
    if figs.context["fs"] in ("tmpfs", "ramfs"):
        print(f"warning: {work} is on {figs.context['fs']}: fsync costs nothing there",
              flush=True)
    print(f"generating {args.entries:,} entries and {args.events:,} events in {work} ...",
          flush=True)
    with ctx.Pool(1) as gen:
        w = gen.apply(make_workload, (args.entries, args.events, work, args.batch_sizes,
                                      args.verify_events))
    figs.context.update({k: v for k, v in w["info"].items() if k.endswith("_s")})
    print(f"  {w['info']}", flush=True)
    with ctx.Pool(2) as pool:  # the load generators: a checker and writers side by side
        b = Bench(args, pool, w, figs)
        servers: list[Any] = []
        try:
            servers.append(AnningServer(work / "live", 1, name="anning"))
            (work / "floor").mkdir()
            peers = {"constant": ConstantServer(ctx, 1, 16),  # anning's 16 threads
                     "constant-aio": ConstantServer(ctx, 1, 16, "aio"),
                     "durable floor": ConstantServer(ctx, 1, 16, durable_dir=work / "floor")}
            servers += peers.values()
            for s in servers:
                wait_ready(s)
            writes_and_checks(b, servers[0], peers)
        except Exception:
            b.fail(f"write runs: {traceback.format_exc()}")
        finally:
            stop_all(servers)
    restarts(b, work)
    figs.context["busy_after"] = others()
    return figs.close_run(args.json, work, "data and server logs", raw=b.raw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 1M entries, 100k events, 1 s windows, 3 repetitions")
    ap.add_argument("--entries", type=int, default=10_000_000, help="snapshot entries (10M)")
    ap.add_argument("--events", type=int, default=1_000_000, help="logged events (1M)")
    ap.add_argument("--verify-events", type=int, default=100_000,
                    help="logged events checked after each restart: all up to this many, "
                         "else a random sample of this many and the first and last (100,000)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each figure (5)")
    ap.add_argument("--seconds", type=float, default=3.0, help="closed-loop window (3 s)")
    ap.add_argument("--paced-seconds", type=float, default=5.0, help="paced window (5 s)")
    ap.add_argument("--writers", type=int, default=16, help="OptOut callers (16)")
    ap.add_argument("--channels", type=int, default=1,
                    help="channels the writers share (1; as many as --writers: one each)")
    ap.add_argument("--rate", type=float, default=1000.0, help="paced OptOut/s (1,000)")
    ap.add_argument("--check-rate", type=float, default=500.0, help="paced Check/s (500)")
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[1000, 10_000], help="WriteBatch sizes (1000,10000)")
    ap.add_argument("--batch-callers", type=int, default=4, help="WriteBatch callers (4)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the data directories go (default: the temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.entries, args.events = min(args.entries, 1_000_000), min(args.events, 100_000)
        args.reps, args.seconds = min(args.reps, 3), min(args.seconds, 1.0)
        args.paced_seconds = min(args.paced_seconds, 1.5)
    if args.entries < 10_000 or args.events < 0 or args.reps < 1 or \
            not 1 <= args.channels <= args.writers <= 1000 or args.batch_callers < 1 or \
            not all(1 <= s <= 10_000 for s in args.batch_sizes) or args.verify_events < 10_000 \
            or min(args.seconds, args.paced_seconds, args.rate, args.check_rate) <= 0:
        ap.error("--entries >= 10,000, --channels 1..--writers, batch sizes 1..10,000 "
                 "(the server's limit), --verify-events >= 10,000, the rest positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

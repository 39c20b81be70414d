"""The write side under load: a real `anning serve` (1 worker, data directory on local disk,
real fsync) beside the constant servicers of service_bench.py (same proto, answers at once;
synchronous, grpc.aio, and a durable floor that only appends and fsyncs), repetitions
interleaved, medians and ratios (benchmarks/README.md has more).

    python benchmarks/write_bench.py                   # 10M-entry snapshot, 1M logged events
    python benchmarks/write_bench.py --quick           # CI size: 1M entries, 100k events
    python benchmarks/write_bench.py --json write.json

Targets: OptOut from 16 threads >= 0.8x the constant servicer's rate; OptOut p99 <= 10 ms paced
at 1,000/s; WriteBatch >= 50,000 opt-outs/s; Check p99 at 500/s under 16 OptOut threads <= 1.5x
the same with no writers; restart with 1M logged events, and after a checkpoint, <= 5 s. A
failed or wrong answer exits 1; a missed target never does (targets are reported).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import service_bench as sb  # the servers, channels and helpers: the path above first

OPT_OUT = "/anning.v1.OptOuts/OptOut"
WRITE_BATCH = "/anning.v1.OptOuts/WriteBatch"
CHECK = "/anning.v1.Suppression/Check"
NO_CHECKPOINT = ("--checkpoint-bytes", str(1 << 60))  # restarts must not fold their own log
WARM = 0.5  # seconds of closed-loop load before a window opens
WRITES = 50_000  # distinct OptOut requests, cycled


# -- the data (built in a spawned process: the build's memory stays out of this one) -----------


def make_workload(entries: int, events: int, work: Path, batch_sizes: list[int]) -> dict:
    import datagen

    from anning.engine import Engine
    from anning.events import OPT_IN, OPT_OUT, REASSIGN
    from anning.scopes import SOURCES
    from anning.v1 import anning_pb2 as pb

    t0 = time.perf_counter()
    now = int(time.time() * 1000)
    as_of = now - 2 * 3_600_000  # the logged events fall between the cut and now
    u = datagen.make_universe()
    e = datagen.generate_entries(entries, u)
    datagen.build_index(datagen.Dataset(u, e, None), meta={"as_of_ms": as_of}).save(
        work / "index.anx")
    for name in ("live", "restart-log", "restart-empty"):  # one snapshot file, hard links
        (work / name).mkdir()
        os.link(work / "index.anx", work / name / "index.anx")
    rng = np.random.default_rng([datagen.SEED, 99])
    # Checks: sender-scoped marketing entries (SENDER) and numbers no entry has (NONE). Every
    # write takes a fresh number, so these answers hold under any write load.
    own = np.flatnonzero((e.codes < u.n_senders) & ((e.masks & 1) == 1))
    hit = own[rng.choice(len(own), 1024, replace=False)]
    fresh = datagen.random_numbers(rng, (WRITES + 4 * sum(batch_sizes) + 1025) * 6 // 5)
    fresh = np.unique(fresh[~np.isin(fresh, e.numbers)])
    rng.shuffle(fresh)  # (sender, number) pairs no entry has; each used once from here on
    fresh = list(zip([u.senders[c] for c in datagen.zipf_senders(rng, u, len(fresh)).tolist()],
                     sb.national(fresh), strict=True))
    pairs = [*zip([u.senders[c] for c in e.codes[hit].tolist()], sb.national(e.numbers[hit]),
                  strict=True), *fresh[:1024]]
    order = rng.permutation(len(pairs)).tolist()
    checks = [pb.CheckRequest(sender=pairs[i][0], number=pairs[i][1]).SerializeToString()
              for i in order]
    answers = [pb.CheckResponse(suppressed=i < 1024, scope=int(i < 1024)).SerializeToString()
               for i in order]
    # Opt-outs of fresh numbers, of one (Zipf) sender each, marketing, at_ms 0 (now).
    written = fresh[1024:1024 + WRITES]
    opt_outs = [pb.OptOutRequest(scope=s, number=n).SerializeToString() for s, n in written]
    batches: dict[int, list[bytes]] = {}
    pos = 1024 + WRITES
    for size in batch_sizes:
        batches[size] = []
        for _ in range(4):
            batches[size].append(pb.WriteBatchRequest(events=[pb.WriteEvent(
                kind=pb.EVENT_KIND_OPT_OUT, scope=s, number=n) for s, n in fresh[pos:pos + size]
            ]).SerializeToString())
            written.append(fresh[pos])
            pos += size
    # The restart log: events drawn as datagen draws entries (sender, entity and global scopes,
    # every category mask), 8% opt-ins, 2% reassignments, mostly replies, times between the
    # snapshot's cut and a minute ago; through Engine.apply, 10,000 a batch (one fsync each).
    t1 = time.perf_counter()
    ev = datagen.generate_entries(events, u, seed=datagen.SEED + 1)
    kind = np.where(rng.random(events) < 0.08, OPT_IN, OPT_OUT)
    kind[rng.random(events) < 0.02] = REASSIGN
    at = as_of + 1 + np.arange(events, dtype=np.int64) * (now - 60_000 - as_of) // max(events, 1)
    source = np.where(rng.random(events) < 0.7, 1, np.where(rng.random(events) < 0.5, 2, 5))
    category, table = {1: "marketing", 2: "notification", 0xFF: "all"}, u.sender_table
    engine = Engine(data_dir=work / "restart-log")
    engine.open_snapshot()
    cols = [c.tolist() for c in (ev.numbers, ev.codes, ev.masks, kind, at, source)]
    for lo in range(0, events, 10_000):
        engine.apply([engine.make_event(n, table[c], category[m], k, t, SOURCES[s])
                      for n, c, m, k, t, s in zip(*(c[lo:lo + 10_000] for c in cols),
                                                  strict=True)])
    # and a known last one: a number no entry or other event has, opted out of one sender
    logged = fresh[pos]
    engine.apply([engine.make_event(logged[1], logged[0], "marketing", OPT_OUT, now - 1, "api")])
    log_mb = round(engine.log.size() / 2**20, 1) if engine.log else 0
    return {"checks": checks, "answers": answers, "opt_outs": opt_outs, "batches": batches,
            "written": written, "present": pairs[0], "logged": logged,
            "info": {"entries": entries, "events": events + 1, "log_mb": log_mb,
                     "snapshot_s": round(t1 - t0, 1),
                     "events_s": round(time.perf_counter() - t1, 1)}}


# -- load tasks (run in the spawned client pool) -------------------------------------------------


def _verifier(path: str, items: int, answers: list[bytes] | None):
    """Whether answer `got` to payload k is right: an ack with a sequence, a batch ack that
    counts the batch, or the known Check answer."""
    from anning.v1 import anning_pb2 as pb

    if path == OPT_OUT:
        return lambda got, k: pb.WriteAck.FromString(got).sequence > 0
    if path == WRITE_BATCH:
        return lambda got, k: pb.WriteBatchAck.FromString(got).events == items
    return lambda got, k: got == answers[k] or sb._same("Check", got, answers[k])


def _in_threads(loop: Any, n: int) -> None:
    threads = [threading.Thread(target=loop, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def task_closed(port: int, path: str, payloads: list[bytes], items: int, threads: int,
                n_channels: int, start_at: float, seconds: float) -> dict:
    """Closed loop: `threads` threads, one call at a time each, from start_at. The window is
    [start_at + WARM, + seconds] (connections and first calls behind it); a call is credited
    with the share of its items its span has in the window (a 10,000-event batch straddling
    an edge counts in part, not all or nothing)."""
    import grpc

    channels = sb._channels(port, n_channels)
    calls = [c.unary_unary(path, request_serializer=sb._identity,
                           response_deserializer=sb._identity) for c in channels]
    ok = _verifier(path, items, None)
    w0 = start_at + WARM
    w1 = w0 + seconds
    credit, total, wrong = [0.0] * threads, [0] * threads, [0] * threads
    errors: list[str] = []

    def loop(t: int) -> None:
        call, p = calls[t % len(calls)], len(payloads)
        k = t * (p // threads)  # payload t * (p // threads) is written by thread t first
        sb._sleep_until(start_at)
        while (sent := time.time()) < w1 and len(errors) <= 10:
            try:
                got = call(payloads[k % p], timeout=sb.CALL_TIMEOUT)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code()}: {exc.details()}")
                continue
            done = time.time()
            if (overlap := min(done, w1) - max(sent, w0)) > 0:
                credit[t] += items * overlap / max(done - sent, 1e-9)
            total[t] += 1
            wrong[t] += not ok(got, k % p)
            k += 1

    cpu0 = time.process_time()
    _in_threads(loop, threads)
    for c in channels:
        c.close()
    return {"calls": sum(total), "rate": sum(credit) / seconds,
            "wrong": sum(wrong), "errors": errors, "cpu": time.process_time() - cpu0,
            "pid": os.getpid()}


def task_paced(port: int, path: str, payloads: list[bytes], answers: list[bytes] | None,
               rate: float, seconds: float, threads: int, start_at: float) -> dict:
    """Open loop on one channel: call i is due at start_at + i / rate and sent by thread
    i % threads; its latency runs from the due time, so a stall counts against every call it
    delays, and one slow call holds up only its own thread."""
    import grpc

    (channel,) = sb._channels(port, 1)
    call = channel.unary_unary(path, request_serializer=sb._identity,
                               response_deserializer=sb._identity)
    ok = _verifier(path, 1, answers)
    p = len(payloads)
    offset = 7919 * os.getpid() % p  # paced writes start away from the closed loops' numbers
    for i in range(20):  # connected and warm before the schedule starts
        call(payloads[(offset + i) % p], timeout=sb.CALL_TIMEOUT)
    n = max(1, int(rate * seconds))
    lat = np.full(n, -1, np.int64)
    late, wrong = [0] * threads, [0] * threads
    errors: list[str] = []
    clock = time.perf_counter_ns
    start = clock() + int((start_at - time.time()) * 1e9)

    def loop(t: int) -> None:
        for i in range(t, n, threads):
            due = start + int(i * 1e9 / rate)
            if (ahead := due - clock()) > 0:
                time.sleep(ahead / 1e9)
            elif ahead < -1_000_000:
                late[t] += 1
            k = (offset + i) % p
            try:
                got = call(payloads[k], timeout=sb.CALL_TIMEOUT)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code()}: {exc.details()}")
                continue
            lat[i] = clock() - due
            wrong[t] += not ok(got, k)

    _in_threads(loop, threads)
    channel.close()
    done = lat[lat >= 0]
    return {"lat_ns": done, "calls": len(done), "late": sum(late), "wrong": sum(wrong),
            "errors": errors, "pid": os.getpid()}


# -- the runs ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, pool: Any, w: dict) -> None:
        self.args, self.pool, self.w = args, pool, w
        self.failures: list[str] = []
        self.rows: list[dict] = []
        self.raw: dict[str, Any] = {}

    def fail(self, message: str) -> None:
        print(f"FAILED: {message}", file=sys.stderr, flush=True)
        self.failures.append(message)

    def _get(self, label: str, pending: Any) -> dict | None:
        res = pending.get(timeout=self.args.seconds + self.args.paced_seconds + 120)
        bad = [f"{len(res['errors'])} failed calls, e.g. {res['errors'][0]}"] \
            if res["errors"] else []
        bad += [f"{res['wrong']} wrong answers"] if res["wrong"] else []
        bad += [] if res["calls"] else ["no call answered"]
        for why in bad:
            self.fail(f"{label}: {why}")
        return None if bad else res

    def closed(self, server: Any, path: str, payloads: list[bytes], items: int,
               threads: int, channels: int) -> dict | None:
        cpu0 = sum(server.cpu().values())
        res = self._get(f"{server.name} {path}", self.pool.apply_async(task_closed, (
            server.port, path, payloads, items, threads, channels, time.time() + 0.3,
            self.args.seconds)))
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
            pending = self.pool.apply_async(task_paced, (
                server.port, path_, payloads_, None, load_rate, a.paced_seconds + 0.3 + WARM,
                threads_, start_at - WARM))
        elif load:
            pending = self.pool.apply_async(task_closed, (
                server.port, *load, start_at - WARM, a.paced_seconds + 0.3))
        res = self._get(f"{server.name} paced {path}", self.pool.apply_async(task_paced, (
            server.port, path, payloads, answers, rate, a.paced_seconds, threads, start_at)))
        if load:
            bg = self._get(f"{server.name} write load", pending)
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
        ours, theirs = [x[key] for x in r[name]], [x[key] for x in r[peer]]
        if not ours or not theirs:
            self.fail(f"{target}: no figure")
            return
        value, peer_value = statistics.median(ours), statistics.median(theirs)
        ratio = value / peer_value if peer_value else float("inf")
        met = None
        if goal:
            *on, op, limit = goal.split()
            x = ratio if on else value
            met = x >= float(limit) if op == ">=" else x <= float(limit)
        self.rows.append({"target": target, "unit": unit, "who": name, "value": value,
                          "peer": peer,
                          "peer_value": peer_value, "ratio": ratio, "goal": goal, "met": met,
                          "reps": ours, "peer_reps": theirs, "note": note})


def _brief(r: dict) -> str:
    if "restart_s" in r:
        return f"{r['restart_s']:.2f} s"
    return f"p99 {r['p99']:.2f} ms" if "p99" in r else f"{r['rate']:,.0f}/s"


def _cpu(r: dict[str, list[dict]], items: int) -> str:
    """The servers' CPU (every thread: C core and kernel too) an acknowledged event."""
    return "server CPU an event: " + ", ".join(
        f"{k} {_fmt(statistics.median(x['server_us'] for x in v) / items)} us"
        for k, v in r.items() if v)


def writes_and_checks(b: Bench, anning: sb.AnningServer, peers: dict[str, Any]) -> None:
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
    step = WRITES // a.writers
    readback(b, anning, w["written"][: step * a.writers: step])  # each writer's first

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
    readback(b, anning, w["written"][WRITES::4])  # the first of each size's first batch

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


def readback(b: Bench, server: sb.AnningServer, pairs: list[tuple[str, str]]) -> None:
    """Acknowledged opt-outs are there: each (scope, number) checks as SENDER now."""
    from anning.client import Client

    with Client(f"{sb.HOST}:{server.port}", timeout=10.0) as client:
        for scope, number in pairs:
            if (got := client.check(scope, number)).scope != "SENDER":
                b.fail(f"opt-out of {number} for {scope} acknowledged, checks {got}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((sb.HOST, port)) == 0


def restart(b: Bench, data: Path, label: str, logged: tuple[str, str] | None) -> dict | None:
    """Seconds from `anning serve` starting to health SERVING and a first Check answered."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from anning.v1 import anning_pb2 as pb
    from anning.v1 import anning_pb2_grpc as rpc

    t0 = time.perf_counter()
    server = sb.AnningServer(data, 1, data.parent / f"{label}.log", NO_CHECKPOINT)
    try:
        # Poll the port, not a channel: a channel's reconnect backoff would add up to a second.
        while not _listening(server.port):
            if not server.alive() or time.perf_counter() - t0 > 600:
                raise RuntimeError(f"no listening server\n{server.log_tail()}")
            time.sleep(0.002)
        t_port = time.perf_counter() - t0
        with grpc.insecure_channel(f"{sb.HOST}:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            req = health_pb2.HealthCheckRequest(service="anning.v1.Suppression")
            while health.Check(req, timeout=sb.CALL_TIMEOUT).status != \
                    health_pb2.HealthCheckResponse.SERVING:
                time.sleep(0.002)
            check = rpc.SuppressionStub(channel).Check
            first = check(pb.CheckRequest(sender=b.w["present"][0], number=b.w["present"][1]),
                          timeout=sb.CALL_TIMEOUT)
            t_check = time.perf_counter() - t0
            if first.scope != pb.SCOPE_SENDER:
                raise RuntimeError(f"the first Check, of a listed pair, answered {first}")
            if logged and (got := check(pb.CheckRequest(sender=logged[0], number=logged[1]),
                                        timeout=sb.CALL_TIMEOUT)).scope != pb.SCOPE_SENDER:
                raise RuntimeError(f"the log's last opt-out checks {got}: not replayed")
    except Exception as exc:
        b.fail(f"restart {label}: {exc}")
        return None
    finally:
        server.stop()
    return {"restart_s": t_check, "port_s": t_port}


def restarts(b: Bench, work: Path) -> None:
    info, logged = b.w["info"], b.w["logged"]
    log_dir = work / "restart-log"
    events = f"{info['events']:,} logged events ({info['log_mb']} MB)"
    print(f"6. restart: {info['entries']:,} entries, {events}", flush=True)
    peer = ("empty log", lambda: restart(b, work / "restart-empty", "empty", None))
    r = b.interleaved("restart with log", [
        ("with log", lambda: restart(b, log_dir, "log", logged)), peer])
    b.row(f"restart, {events}", "s", r, "restart_s", "<= 5", "port open at (median) "
          f"{statistics.median([x['port_s'] for x in r['with log']] or [0]):.2f} s")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "anning.cli", "checkpoint", "--data",
                           str(log_dir)], capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        b.fail(f"anning checkpoint: exit {done.returncode}: {done.stderr[-2000:]}")
        return
    r = b.interleaved("restart after checkpoint", [
        ("checkpointed", lambda: restart(b, log_dir, "ckpt", logged)), peer])
    b.row("restart after `anning checkpoint`", "s", r, "restart_s", "<= 5",
          f"`anning checkpoint --data` took {seconds:.1f} s: {done.stdout.strip()}")


# -- report --------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def print_table(b: Bench, context: dict) -> None:
    print("\n" + "=" * 25, "anning write figures (medians; ratio = anning / peer)", "=" * 25)
    print(", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}"
                    for k, v in context.items()))
    table = [("target", "unit", "who", "value", "peer", "peer value", "ratio", "goal", "met")]
    table += [(r["target"], r["unit"], r["who"], _fmt(r["value"]), r["peer"],
               _fmt(r["peer_value"]), f"{r['ratio']:.2f}x", r["goal"] or "-",
               {None: "-", True: "yes", False: "NO"}[r["met"]]) for r in b.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.rjust(n) if i in (3, 5, 6) else c.ljust(n)
                        for i, (c, n) in enumerate(zip(row, widths, strict=True))))
    for r in b.rows:
        print(f"  {r['target']} ({r['who']} | {r['peer']}): reps "
              f"{', '.join(map(_fmt, r['reps']))} | "
              f"{', '.join(map(_fmt, r['peer_reps']))}" + (f"; {r['note']}" * bool(r["note"])))


def _disk(directory: Path) -> dict:
    """The file system type (on tmpfs fsync costs nothing) and a median small-append fsync:
    the least one group commit costs."""
    kind = subprocess.run(["stat", "-f", "-c", "%T", str(directory)], capture_output=True,
                          text=True).stdout.strip()
    fd = os.open(directory / "fsync-probe", os.O_RDWR | os.O_CREAT | os.O_APPEND)
    times = []
    for _ in range(50):
        os.write(fd, b"x" * 64)
        t0 = time.perf_counter()
        os.fsync(fd)
        times.append(time.perf_counter() - t0)
    os.close(fd)
    (directory / "fsync-probe").unlink()
    return {"fs": kind, "fsync_ms": round(statistics.median(times) * 1e3, 3)}


def _others() -> float:
    """Cores busy over 2 s while this benchmark runs nothing: the machine's other work."""
    busy0 = sb.machine_busy()
    time.sleep(2.0)
    busy1 = sb.machine_busy()
    return round((busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) * (os.cpu_count() or 1), 2)


def run(args: argparse.Namespace) -> int:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="anning-write-bench-", dir=args.dir))
    context = {"entries": args.entries, "events": args.events, "reps": args.reps,
               "seconds": args.seconds, "channels": args.channels, "cores": os.cpu_count() or 0,
               "busy_before": _others(), **_disk(work)}
    if context["fs"] in ("tmpfs", "ramfs"):
        print(f"warning: {work} is on {context['fs']}: fsync costs nothing there", flush=True)
    print(f"generating {args.entries:,} entries and {args.events:,} events in {work} ...",
          flush=True)
    with ctx.Pool(1) as gen:
        w = gen.apply(make_workload, (args.entries, args.events, work, args.batch_sizes))
    context.update({k: v for k, v in w["info"].items() if k.endswith("_s")})
    print(f"  {w['info']}", flush=True)
    with ctx.Pool(2) as pool:  # the load generators: a checker and writers side by side
        b = Bench(args, pool, w)
        servers: list[Any] = []
        try:
            servers.append(sb.AnningServer(work / "live", 1, work / "anning-live.log"))
            (work / "floor").mkdir()
            peers = {"constant": sb.ConstantServer(ctx, 1, 16),  # anning's 16 threads
                     "constant-aio": sb.ConstantServer(ctx, 1, 16, "aio"),
                     "durable floor": sb.ConstantServer(ctx, 1, 16, durable_dir=work / "floor")}
            servers += peers.values()
            for s in servers:
                sb.wait_ready(s)
            writes_and_checks(b, servers[0], peers)
        except Exception:
            b.fail(f"write runs: {traceback.format_exc()}")
        finally:
            for s in servers:
                s.stop()
    restarts(b, work)
    context["busy_after"] = _others()
    print_table(b, context)
    if args.json:
        args.json.write_text(json.dumps({"context": context, "rows": b.rows, "raw": b.raw,
                                         "failures": b.failures}, indent=2, default=str))
        print(f"figures written to {args.json}")
    if b.failures:
        print(f"\n{len(b.failures)} failure(s):", *b.failures, sep="\n  ")
        print(f"data and server logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 1M entries, 100k events, 1 s windows, 3 repetitions")
    ap.add_argument("--entries", type=int, default=10_000_000, help="snapshot entries (10M)")
    ap.add_argument("--events", type=int, default=1_000_000, help="logged events (1M)")
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
            not all(1 <= s <= 10_000 for s in args.batch_sizes) or \
            min(args.seconds, args.paced_seconds, args.rate, args.check_rate) <= 0:
        ap.error("--entries >= 10,000, --channels 1..--writers, batch sizes 1..10,000 "
                 "(the server's limit), the rest positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

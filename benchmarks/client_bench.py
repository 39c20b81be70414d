"""Clients that batch by themselves, against a real `anning serve --workers 1` on loopback;
each figure beside its peer from the same run (runs alternate: ours, peer, ours, peer, ...).

    python -m benchmarks.client_bench              # 1,000,000 entries, 3 s a run, 3 runs each
    python -m benchmarks.client_bench --quick      # CI size: 100,000 entries, 1 s, 1 run each

1. `Client.checker()` from --threads (64) threads, each issuing single checks one after another,
   one connection (target >= 300,000 checks/s); peer: the same threads calling unary
   `Client.check` on one connection. Two ceilings of this machine from the same run explain
   the figure: the same checker with the network taken away (its batches answered in the
   process: what the coalescing of 64 blocking threads costs by itself), and 64 threads each
   woken by one thread through a lock of its own (no batching, no network: the least one
   blocking call a thread costs in CPython).
2. `anning.aio.Client.checker()` from --threads tasks beside the same tasks calling the aio
   client's unary `check`.
3. `CheckBatchStream`: batches of 1,000 on one stream, --window unanswered (target >=
   1,500,000 checks/s); peer: `CheckBatch` unary calls of the same batches on one channel,
   --window in flight.

Every answer is verified: each answer of 1 and 2 (ours and the peers) against unary check's
answer for that pair, taken before the runs and itself checked against the exact numpy model;
each response of 3 byte for byte against the model's answers encoded. A wrong answer or a
failed call exits 1; a slow figure is only reported.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from _thread import allocate_lock
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib import datagen
from benchmarks.lib.figures import Figures
from benchmarks.lib.machine import cpu_of, others
from benchmarks.lib.oracle import ListModel
from benchmarks.lib.servers import CALL_TIMEOUT, CHANNEL_OPTIONS, HOST, AnningServer, wait_ready

BATCH = 1_000
TARGETS = {"checker": 300_000, "stream": 1_500_000}  # checks/s
SCOPES = ("NONE", "SENDER", "ENTITY", "GLOBAL")


@dataclass
class Workload:
    pairs: list[tuple[str, str]]  # (sender, national number) for single checks
    codes: list[int]  # the numpy model's answers to them
    batches: list[bytes]  # CheckBatchRequest bytes of BATCH checks each
    answers: list[bytes]  # the CheckBatchResponse bytes the model expects
    info: dict[str, Any]


def make_workload(entries: int, pairs: int, batches: int, data_dir: Path) -> Workload:
    from anning import _wire, write_snapshot

    t0 = time.perf_counter()
    data = datagen.generate(entries, pairs + batches * BATCH)
    index = datagen.build_index(data.universe, data.entries)
    write_snapshot(index, data_dir / "index.anx")
    u, q = data.universe, data.queries
    codes = ListModel(u, data.entries).check(q.senders, q.numbers, 0)
    if not np.array_equal(index.check_ids(index.sender_ids(q.sender_strings(u)[:20_000]),
                                          q.numbers[:20_000]), codes[:20_000]):
        raise RuntimeError("the built index disagrees with the numpy model")
    senders, numbers = list(q.sender_strings(u)), datagen.national(q.numbers)
    requests, answers = [], []
    for b in range(batches):
        lo = pairs + b * BATCH
        requests.append(_wire.encode_checks(senders[lo:lo + BATCH], numbers[lo:lo + BATCH]))
        answers.append(_wire.encode_results(np.ascontiguousarray(codes[lo:lo + BATCH]), {}))
    info = {"entries": len(index), "suppressed_share": round(float((codes > 0).mean()), 3),
            "workload_s": round(time.perf_counter() - t0, 2)}
    return Workload(list(zip(senders[:pairs], numbers[:pairs], strict=True)),
                    codes[:pairs].astype(int).tolist(), requests, answers, info)


# -- single checks from many threads -------------------------------------------------------------


@dataclass
class Run:
    rate: float
    checks: int
    wrong: int
    failed: int
    note: str = ""


def threaded(check: Callable[[str, str], Any], pairs: list[tuple[str, str]], truth: list[Any],
             threads: int, seconds: float) -> Run:
    """`threads` threads calling check(sender, number) one after another for `seconds`; each
    answer compared with truth (None: not compared)."""
    counts, wrong, failed = [0] * threads, [0] * threads, [0] * threads
    start = threading.Barrier(threads + 1)
    window: list[float] = []

    def work(k: int) -> None:
        i = k * (len(pairs) // threads)
        start.wait()
        stop = window[0] + seconds
        n = bad = errors = 0
        while time.monotonic() < stop:
            for _ in range(32):
                j = i % len(pairs)
                try:
                    got = check(*pairs[j])
                    if truth[j] is not None and got != truth[j]:
                        bad += 1
                except Exception:
                    errors += 1
                n += 1
                i += 1
        counts[k], wrong[k], failed[k] = n, bad, errors

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    window.append(time.monotonic())
    start.wait()
    for t in pool:
        t.join(seconds + CALL_TIMEOUT)
    elapsed = time.monotonic() - window[0]
    return Run(sum(counts) / elapsed, sum(counts), sum(wrong), sum(failed))


def no_network_checker(client: Any) -> Any:
    """The checker with its batches answered in this process (every answer NONE)."""
    from anning.batching import Checker

    class Local(Checker):
        def _send_unary(self, batch: Any) -> None:
            batch.codes = [0] * len(batch)
            self.complete(batch)

    return Local(client, transport="unary")


def handoff(threads: int, seconds: float) -> Run:
    """Threads each blocking on a lock of its own that one thread releases: the least a
    blocking call a thread costs (no batching, no network)."""
    pending: list[Any] = []
    mutex = threading.Lock()
    wake = threading.Condition(mutex)
    done = threading.Event()

    def server() -> None:
        nonlocal pending
        while not done.is_set():
            with mutex:
                while not pending and not done.is_set():
                    wake.wait(0.05)
                ready, pending = pending, []
            for lock in ready:
                lock.release()

    def check(_sender: str, _number: str) -> None:
        lock = allocate_lock()
        lock.acquire()
        with mutex:
            pending.append(lock)
            if len(pending) == 1:
                wake.notify()
        lock.acquire()

    answering = threading.Thread(target=server, daemon=True)
    answering.start()
    try:
        return threaded(check, [("s", "1")] * threads, [None] * threads, threads, seconds)
    finally:
        done.set()
        answering.join(1)


def aio_run(target: str, pairs: list[tuple[str, str]], truth: list[Any], tasks: int,
            seconds: float, coalesced: bool) -> Run:
    from anning.aio import Client

    async def main() -> Run:
        async with Client(target, timeout=CALL_TIMEOUT) as client:
            checker = client.checker()
            check = checker.check if coalesced else client.check
            counts, wrong, failed = [0] * tasks, [0] * tasks, [0] * tasks
            loop = asyncio.get_running_loop()
            stop = loop.time() + seconds

            async def work(k: int) -> None:
                i = k * (len(pairs) // tasks)
                while loop.time() < stop:
                    j = i % len(pairs)
                    try:
                        if await check(*pairs[j]) != truth[j]:
                            wrong[k] += 1
                    except Exception:
                        failed[k] += 1
                    counts[k] += 1
                    i += 1

            t0 = loop.time()
            await asyncio.gather(*(work(k) for k in range(tasks)))
            elapsed = loop.time() - t0
            await checker.close()
            note = f"{checker.checks / checker.batches:.1f} checks a batch" \
                if coalesced and checker.batches else ""
            return Run(sum(counts) / elapsed, sum(counts), sum(wrong), sum(failed), note)

    return asyncio.run(main())


# -- batches on one connection -------------------------------------------------------------------


def stream_batches(target: str, w: Workload, window: int, seconds: float) -> Run:
    import grpc

    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call = channel.stream_stream("/anning.v1.Suppression/CheckBatchStream")
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        end = object()
        responses = call(iter(requests.get, end), timeout=seconds + CALL_TIMEOUT)
        sent = received = wrong = 0
        count = len(w.batches)
        for _ in range(window):
            requests.put(w.batches[sent % count])
            sent += 1
        t0 = time.monotonic()
        stop = t0 + seconds
        while time.monotonic() < stop:
            if next(responses) != w.answers[received % count]:
                wrong += 1
            received += 1
            requests.put(w.batches[sent % count])
            sent += 1
        elapsed = time.monotonic() - t0
        requests.put(end)
        for response in responses:  # the rest, verified too
            wrong += response != w.answers[received % count]
            received += 1
    timed = received - window
    return Run(timed * BATCH / elapsed, timed * BATCH, wrong * BATCH, 0)


def unary_batches(target: str, w: Workload, window: int, seconds: float) -> Run:
    import grpc

    with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary("/anning.v1.Suppression/CheckBatch")
        count = len(w.batches)
        pending: deque[tuple[int, Any]] = deque()
        sent = received = wrong = 0
        for _ in range(window):
            pending.append((sent, call.future(w.batches[sent % count], timeout=CALL_TIMEOUT)))
            sent += 1
        t0 = time.monotonic()
        stop = t0 + seconds
        while time.monotonic() < stop:
            k, future = pending.popleft()
            wrong += future.result() != w.answers[k % count]
            received += 1
            pending.append((sent, call.future(w.batches[sent % count], timeout=CALL_TIMEOUT)))
            sent += 1
        elapsed = time.monotonic() - t0
        for k, future in pending:
            wrong += future.result() != w.answers[k % count]
    return Run(received * BATCH / elapsed, received * BATCH, wrong * BATCH, 0)


# -- the run -------------------------------------------------------------------------------------


def alternate(figs: Figures, reps: int, server_pid: int, ours: tuple[str, Callable[[], Run]],
              peers: list[tuple[str, Callable[[], Run]]]) -> dict[str, list[Run]]:
    """Runs in turn (ours, peer, ..., ours, peer, ...), each with the CPU it cost this process
    (the client) and the server a check; a wrong answer or a failed call fails the benchmark."""
    runs: dict[str, list[Run]] = {name: [] for name, _ in [ours, *peers]}
    for rep in range(reps):
        for name, fn in [ours, *peers]:
            client0, server0 = time.process_time(), cpu_of(server_pid)
            run = fn()
            client_us = (time.process_time() - client0) * 1e6 / max(run.checks, 1)
            server_us = (cpu_of(server_pid) - server0) * 1e6 / max(run.checks, 1)
            cost = f"CPU a check: client {client_us:.2f} us, server {server_us:.2f} us"
            run.note = f"{run.note}; {cost}" if run.note else cost
            runs[name].append(run)
            print(f"  {name} (run {rep + 1}): {run.rate:,.0f} checks/s; {run.note}", flush=True)
            if run.wrong or run.failed:
                figs.fail(f"{name}: {run.wrong:,} wrong answers and {run.failed:,} failed "
                          f"calls of {run.checks:,}")
    return runs


def notes(runs: dict[str, list[Run]]) -> str:
    """The last run's notes of each, for the table."""
    return " | ".join(f"{name}: {rs[-1].note}" for name, rs in runs.items() if rs)


def rates(runs: list[Run]) -> list[float]:
    return [r.rate for r in runs]


def run(args: argparse.Namespace) -> int:
    from anning.client import Client

    figs = Figures("clients that batch by themselves (ratio = anning / peer, same run)")
    ctx = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="anning-client-bench-"))
    data = work / "data"
    data.mkdir()
    figs.context.update(entries=args.entries, seconds=args.seconds, reps=args.reps,
                        threads=args.threads, window=args.window, cores=os.cpu_count() or 0,
                        loadavg=round(os.getloadavg()[0], 2))
    print(f"generating {args.entries:,} entries into {data} ...", flush=True)
    with ctx.Pool(1) as gen:  # the build's memory stays out of this process
        w = gen.apply(make_workload, (args.entries, args.pairs, 16, data))
    figs.context.update(w.info)
    figs.context["other_cores"] = others(1.0)
    server = AnningServer(data, 1)
    try:
        wait_ready(server)
        target = f"{HOST}:{server.port}"
        client = Client(target, timeout=CALL_TIMEOUT)
        truth = [client.check(s, n) for s, n in w.pairs]  # unary check's answers
        if [SCOPES.index(r.scope) for r in truth] != w.codes:
            figs.fail("unary check disagrees with the numpy model")
            return figs.finish(args.json)
        checker = client.checker()
        local = no_network_checker(client)
        print(f"checker vs unary check, {args.threads} threads:", flush=True)
        cpu0 = cpu_of(server.pids()[0])
        pid = server.pids()[0]
        threads = alternate(figs, args.reps, pid, (
            "checker", lambda: threaded(checker.check, w.pairs, truth, args.threads,
                                        args.seconds)), [
            ("unary check", lambda: threaded(client.check, w.pairs, truth, args.threads,
                                             args.seconds)),
            ("checker without network", lambda: threaded(local.check, w.pairs,
                                                          [None] * len(w.pairs),
                                                          args.threads, args.seconds)),
            ("lock hand-off", lambda: handoff(args.threads, args.seconds)),
        ])
        server_cpu = cpu_of(server.pids()[0]) - cpu0
        mean_batch = checker.checks / max(checker.batches, 1)
        checker.close()
        target_name = f"single checks, {args.threads} threads, one connection"
        figs.compare(target_name, "checks/s", "checker", rates(threads["checker"]),
                     "unary check", rates(threads["unary check"]),
                     goal=f">= {TARGETS['checker']}", better="higher",
                     note=f"{mean_batch:.1f} checks a batch (CheckBatchStream); server "
                          f"{server_cpu:.1f} CPU s over all four; " + notes(threads))
        for peer in ("checker without network", "lock hand-off"):
            figs.compare(target_name, "checks/s", "checker", rates(threads["checker"]), peer,
                         rates(threads[peer]), better="higher")

        print(f"aio checker vs aio unary check, {args.threads} tasks:", flush=True)
        tasks = alternate(figs, args.reps, pid, (
            "aio checker", lambda: aio_run(target, w.pairs, truth, args.threads, args.seconds,
                                           True)), [
            ("aio unary check", lambda: aio_run(target, w.pairs, truth, args.threads,
                                                args.seconds, False))])
        figs.compare(f"single checks, {args.threads} asyncio tasks, one connection", "checks/s",
                     "aio checker", rates(tasks["aio checker"]), "aio unary check",
                     rates(tasks["aio unary check"]), better="higher", note=notes(tasks))

        print(f"CheckBatchStream vs CheckBatch, batches of {BATCH:,}, {args.window} in flight:",
              flush=True)
        batches = alternate(figs, args.reps, pid, (
            "CheckBatchStream", lambda: stream_batches(target, w, args.window, args.seconds)), [
            ("CheckBatch unary", lambda: unary_batches(target, w, args.window, args.seconds))])
        figs.compare(f"batches of {BATCH:,}, one connection, {args.window} in flight",
                     "checks/s", "CheckBatchStream", rates(batches["CheckBatchStream"]),
                     "CheckBatch unary", rates(batches["CheckBatch unary"]),
                     goal=f">= {TARGETS['stream']}", better="higher", note=notes(batches))
        client.close()
    except Exception as exc:
        figs.fail(f"{type(exc).__name__}: {exc}")
    finally:
        server.stop()
    status = figs.finish(args.json)
    if status:
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000,
                    help="entries in the generated list (default 1,000,000)")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds a run (default 3)")
    ap.add_argument("--reps", type=int, default=3, help="runs of each, in turn (default 3)")
    ap.add_argument("--threads", type=int, default=64,
                    help="threads (and asyncio tasks) issuing single checks (default 64)")
    ap.add_argument("--pairs", type=int, default=4096,
                    help="distinct (sender, number) pairs the threads check (default 4,096)")
    ap.add_argument("--window", type=int, default=8,
                    help="batches unanswered on the stream / unary calls in flight (default 8)")
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 100,000 entries, 1 s runs, one run each")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.entries = min(args.entries, 100_000)
        args.seconds = min(args.seconds, 1.0)
        args.reps = 1
        args.pairs = min(args.pairs, 1024)
    if args.entries < 1000 or args.seconds <= 0 or args.reps < 1 or args.threads < 1 \
            or args.window < 1 or args.pairs < args.threads:
        ap.error("--entries >= 1000, --pairs >= --threads, the rest positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

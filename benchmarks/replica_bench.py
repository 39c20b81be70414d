"""Replicas on NATS JetStream (issue 14) on loopback with real processes: a 3-node nats-server
cluster (`anning.testing.nats.NatsCluster`, the files of `anning nats-config`, sync_interval
always, on local disk), three `anning serve --nats` replicas A, B, C (one worker each) and a
plain `anning serve` on its local log, all up together; each figure beside a peer from the
same run, medians and p99, the ratio (benchmarks/README.md has more).

    python -m benchmarks.replica_bench                  # 1M entries, 1M-event catch-ups
    python -m benchmarks.replica_bench --quick          # CI size: 100k entries, 100k events
    python -m benchmarks.replica_bench --json replicas.json

Targets: write-to-visible (ack on A to the first Check on B and on C that sees it) p50 <= 5 ms,
p99 <= 50 ms; replicated OptOut >= 0.5x the local log's; WriteBatch of 1,000 >= 50,000
events/s; catch-up on restart >= 200,000 events/s; stream leader SIGKILLed: the next
acknowledged write within 10 s; Check latency on a replica under replicated writes within 1.5x
of the same replica idle. Peers (benchmarks/lib/jetstream.py): a raw publish and its delivery,
raw atomic batches (alone, and with three consumers reading as the replicas do), a raw read of
the range a catch-up reads, a raw publisher through the same failover; the local-log server.

Every answer is checked: acknowledgements (each its own sequence), every Check of the
latency runs against the known answer, write-to-visible's polls (NONE until seen, SENDER
after, never back), the writing replica's own check after its ack; after the runs every write
acknowledged in them checks SENDER on every replica (and the local log's on it), a catch-up's
events all check SENDER on the restarted replica, and all replicas end at one last sequence.
A failed or wrong answer exits 1; a missed target never does.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from anning.testing.nats import NatsCluster, nats_server_available
from benchmarks.lib import datagen
from benchmarks.lib.figures import Figures
from benchmarks.lib.machine import disk, others
from benchmarks.lib.servers import AnningServer, stop_all, wait_ready
from benchmarks.replica_runs import FAILOVER_WRITES, Bench

STREAM, RAW_STREAM = "BENCH", "BENCHRAW"
WRITES = 50_000  # distinct OptOut requests of the closed loops, cycled
BATCHES = 16  # distinct WriteBatch requests of 1,000, cycled


def make_workload(a: argparse.Namespace, work: Path) -> dict:
    """The list (a snapshot linked into every data directory), checks with known answers, and
    fresh (sender, number) pairs for every write, each used by one run only."""
    from anning import write_snapshot
    from anning.engine.writes import make_event
    from anning.model.events import OPT_OUT
    from anning.storage.nats.messages import encode_event
    from anning.v1 import anning_pb2 as pb

    t0 = time.perf_counter()
    u = datagen.make_universe()
    e = datagen.generate_entries(a.entries, u)
    write_snapshot(datagen.build_index(u, e, meta={
        "as_of_ms": int(time.time() * 1000) - 3_600_000}), work / "index.anx")
    for name in ("a", "b", "c", "local"):
        (work / name).mkdir()
        os.link(work / "index.anx", work / name / "index.anx")
    rng = np.random.default_rng([datagen.SEED, 14])
    need = 1024 + a.visible + WRITES + BATCHES * 1000 + a.catch_up * a.catch_up_reps + \
        a.failover_reps * FAILOVER_WRITES * 2
    fresh = datagen.random_numbers(rng, need * 6 // 5 + 10_000)
    fresh = np.unique(fresh[~np.isin(fresh, e.numbers)])
    rng.shuffle(fresh)
    if len(fresh) < need:
        raise RuntimeError(f"{len(fresh)} fresh numbers, {need} needed")
    senders = datagen.zipf_senders(rng, u, len(fresh))
    pos = 0

    def take(n: int) -> list[tuple[str, str]]:
        nonlocal pos
        chunk = slice(pos, pos + n)
        pos += n
        return list(zip([u.senders[c] for c in senders[chunk].tolist()],
                        datagen.national(fresh[chunk]), strict=True))

    # Checks: sender-scoped marketing entries (SENDER) and numbers nothing writes (NONE).
    own = np.flatnonzero((e.codes < u.n_senders) & ((e.masks & 1) == 1))
    hit = own[rng.choice(len(own), 1024, replace=False)]
    listed = list(zip([u.senders[c] for c in e.codes[hit].tolist()],
                      datagen.national(e.numbers[hit]), strict=True))
    order = rng.permutation(2048).tolist()
    pairs = [*listed, *take(1024)]
    w: dict[str, Any] = {
        "check_pairs": [pairs[i] for i in order],
        "check_expected": [int(i < 1024) for i in order],
        "visible_pairs": take(a.visible),
        "opt_out_pairs": take(WRITES),
        "batch_pairs": [take(1000) for _ in range(BATCHES)],
    }
    w["opt_outs"] = [pb.OptOutRequest(scope=s, number=n).SerializeToString()
                     for s, n in w["opt_out_pairs"]]
    w["batches"] = [pb.WriteBatchRequest(events=[
        pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, scope=s, number=n) for s, n in chunk
    ]).SerializeToString() for chunk in w["batch_pairs"]]
    # Catch-ups: a block of fresh numbers a repetition, opted out of one of 16 senders each.
    w["catch_senders"] = sorted({u.senders[c] for c in range(16)})
    w["catch_numbers"] = fresh[pos:pos + a.catch_up * a.catch_up_reps]
    w["catch_index"] = (np.arange(len(w["catch_numbers"])) % 16).astype(np.uint32)
    pos += a.catch_up * a.catch_up_reps
    w["failover_pairs"] = take(a.failover_reps * FAILOVER_WRITES)
    # The raw peers' events: the bytes a replica publishes for an OptOut (anning's message
    # format), of fresh pairs. The failover peer writes into anning's stream: its events are
    # read back from every replica like anning's own.
    w["raw_pairs"] = take(a.failover_reps * FAILOVER_WRITES)
    w["raw_events"] = [encode_event(make_event(None, n, s, "marketing", OPT_OUT, None, "api"))
                       for s, n in w["raw_pairs"]]
    w["info"] = {"entries": a.entries, "workload_s": round(time.perf_counter() - t0, 1)}
    return w


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    work = Path(tempfile.mkdtemp(prefix="anning-replica-bench-", dir=args.dir))
    figs = Figures("anning replica figures (medians and p99; ratio = anning / peer)")
    figs.context.update({
        "entries": args.entries, "visible": args.visible, "catch_up": args.catch_up,
        "reps": args.reps, "seconds": args.seconds, "writers": args.writers,
        "cores": os.cpu_count() or 0, "busy_before": others(), **disk(work)})
    if figs.context["fs"] in ("tmpfs", "ramfs"):
        print(f"warning: {work} is on {figs.context['fs']}: fsync costs nothing there",
              flush=True)
    print(f"generating {args.entries:,} entries and the writes in {work} ...", flush=True)
    with ctx.Pool(1) as gen:
        w = gen.apply(make_workload, (args, work))
    figs.context.update(w["info"])
    cluster = NatsCluster(work / "nats")
    servers: list[Any] = []
    nats = ["--nats", cluster.urls, "--stream", STREAM, "--replicas", "3",
            "--nats-timeout", f"{args.nats_timeout:g}"]
    try:
        cluster.start()
        cluster.wait_ready(60)
        replicas = []
        for name in ("a", "b", "c"):  # one at a time: the first makes the stream
            replicas.append(AnningServer(work / name, 1, tuple(nats), name=f"replica {name}"))
            servers.append(replicas[-1])
            wait_ready(replicas[-1])
        local = AnningServer(work / "local", 1, name="local log")
        servers.append(local)
        wait_ready(local)
        with ctx.Pool(2) as pool:  # the load generators: two client processes
            b = Bench(args, pool, w, figs, cluster, replicas, local, STREAM, RAW_STREAM)
            for step in (b.visible, b.opt_out_rate, b.write_batch, b.check_latency,
                         b.catch_up, b.failover):
                if args.only and step.__name__ not in args.only:
                    continue
                try:
                    step()
                except Exception:
                    figs.fail(f"{step.__name__}: {traceback.format_exc()}")
            b.verify_all()
    except Exception:
        figs.fail(f"replica runs: {traceback.format_exc()}")
    finally:
        stop_all(servers)
        cluster.stop()
    figs.context["busy_after"] = others()
    figs.context["wall_s"] = round(time.monotonic() - started)
    return figs.close_run(args.json, work, "data, NATS and server logs")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="CI size: 100k entries, 200 visible writes, a 100k-event catch-up, "
                         "one failover, 1 s windows, 1 repetition")
    ap.add_argument("--entries", type=int, default=1_000_000, help="snapshot entries (1M)")
    ap.add_argument("--visible", type=int, default=1000,
                    help="writes timed from A's ack to B's and C's first seeing check (1,000)")
    ap.add_argument("--catch-up", type=int, default=1_000_000,
                    help="events written while a replica is stopped (1M)")
    ap.add_argument("--catch-up-reps", type=int, default=3, help="catch-ups (3)")
    ap.add_argument("--failover-reps", type=int, default=5,
                    help="stream leaders killed under writes (5)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each rate (3)")
    ap.add_argument("--seconds", type=float, default=3.0, help="closed-loop window (3 s)")
    ap.add_argument("--writers", type=int, default=16, help="OptOut callers (16)")
    ap.add_argument("--batch-callers", type=int, default=4, help="WriteBatch callers (4)")
    ap.add_argument("--failover-callers", type=int, default=4,
                    help="callers writing while the leader is killed (4)")
    ap.add_argument("--rate", type=float, default=1000.0,
                    help="paced OptOut/s of the second Check-under-load run (1,000)")
    ap.add_argument("--nats-timeout", type=float, default=5.0,
                    help="the replicas' --nats-timeout (5 s, anning's default)")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the data and NATS directories go (default: the temp dir)")
    ap.add_argument("--only", type=lambda s: s.split(","), default=[],
                    help="run only these (comma-separated): visible, opt_out_rate, "
                         "write_batch, check_latency, catch_up, failover")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.entries, args.visible = min(args.entries, 100_000), min(args.visible, 200)
        args.catch_up, args.catch_up_reps = min(args.catch_up, 100_000), 1
        args.failover_reps, args.reps = 1, 1
        args.seconds = min(args.seconds, 1.0)
    if args.entries < 10_000 or args.visible < 10 or args.catch_up < 1000 or \
            min(args.catch_up_reps, args.failover_reps, args.reps, args.writers,
                args.batch_callers, args.failover_callers) < 1 or \
            min(args.seconds, args.rate, args.nats_timeout) <= 0:
        ap.error("--entries >= 10,000, --visible >= 10, --catch-up >= 1,000, the rest positive")
    if (why := nats_server_available()) is not None:
        print(f"replica_bench: {why}", file=sys.stderr)
        return 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())


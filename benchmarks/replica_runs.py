"""The runs of benchmarks/replica_bench.py, one method a target, on the cluster, replicas and
local-log server it started (see that script and benchmarks/README.md)."""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from anning.storage.nats.stream import api_request
from anning.testing.nats import NatsCluster, eventually
from anning.testing.server import accepts
from benchmarks.lib import datagen
from benchmarks.lib.figures import Figures
from benchmarks.lib.jetstream import (
    RawWriter,
    connect,
    make_stream,
    task_raw_batches,
    task_raw_read,
)
from benchmarks.lib.loadgen import (
    OPT_OUT,
    WARM,
    WRITE_BATCH,
    task_closed,
    task_latency,
    task_paced_threads,
)
from benchmarks.lib.machine import cpu_of
from benchmarks.lib.replicas import (
    FailoverWriters,
    scopes,
    suppressed,
    task_visible,
    task_write_batches,
)
from benchmarks.lib.servers import CALL_TIMEOUT, AnningServer

__all__ = ["Bench"]

FAILOVER_WRITES = 30_000  # fresh numbers a failover repetition may take, each side

CAUGHT_UP = re.compile(r"caught up (\d+) events from stream \S+ in ([\d.]+) s \((\d+)/s\)")


def _ms(ns: np.ndarray) -> np.ndarray:
    return ns.astype(np.float64) / 1e6


def _pct(values: np.ndarray, p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, pool: Any, w: dict, figs: Figures,
                 cluster: NatsCluster, replicas: list[AnningServer], local: AnningServer,
                 stream: str, raw_stream: str) -> None:
        self.args, self.pool, self.w, self.figs = args, pool, w, figs
        self.cluster, self.replicas, self.local = cluster, replicas, local
        self.stream, self.raw_stream = stream, raw_stream
        self.subject = f"anning.{stream.lower()}.events"
        self.raw_subject = make_stream(cluster.urls, raw_stream)
        self.written: list[tuple[str, str]] = []  # acknowledged by a replica (or raw, in STREAM)
        self.local_written: list[tuple[str, str]] = []
        self.sequences: list[np.ndarray] = []  # of every acknowledgement in STREAM
        self.raw: dict[str, Any] = {}
        self.idle_checks: list[dict] = []  # Check on C idle, before the catch-ups

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.replicas]

    def fail(self, message: str) -> None:
        self.figs.fail(message)

    def _get(self, label: str, pending: Any, limit: float) -> dict | None:
        res = pending.get(timeout=limit)
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

    def _keep(self, to: str, pairs: list[tuple[str, str]], res: dict | None,
              items: int = 1, batches: list[list[tuple[str, str]]] | None = None) -> None:
        """Keep what a closed or paced run had acknowledged, to read it back afterwards."""
        if not res or "acked" not in res:
            return
        acked = np.unique(res["acked"]).tolist()
        got = [p for k in acked for p in batches[k]] if batches else [pairs[k] for k in acked]
        (self.local_written if to == "local" else self.written).extend(got)
        if to != "local":
            self.sequences.append(np.asarray(res["sequences"], np.uint64))

    def _cpu(self) -> dict[str, float]:
        nats = sum(cpu_of(p.pid) for p in self.cluster.procs.values())
        return {"replicas": sum(sum(s.cpu().values()) for s in self.replicas),
                "nats": nats, "local": sum(self.local.cpu().values())}

    def _counted(self, run: Callable[[], dict | None], events: int) -> dict | None:
        """`run`, with the servers' CPU (every thread; the 3 replicas together, the 3 NATS
        nodes together, the local log) an event it had acknowledged, in us."""
        c0 = self._cpu()
        res = run()
        if res and res["calls"]:
            c1 = self._cpu()
            res["cpu_us"] = {k: (c1[k] - c0[k]) / (res["calls"] * events) * 1e6 for k in c0}
        return res

    @staticmethod
    def _cpu_note(r: dict[str, list[dict]]) -> str:
        """The servers' CPU an event, median over repetitions, of each run that used any."""
        out = []
        for name, reps in r.items():
            used = [x["cpu_us"] for x in reps if "cpu_us" in x]
            if used:
                med = {k: statistics.median(u[k] for u in used) for k in used[0]}
                out.append(f"{name}: " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()
                                                    if v >= 1))
        return "servers' CPU an acknowledged event (us): " + "; ".join(out) if out else ""

    def interleaved(self, label: str, runs: list[tuple[str, Callable[[], dict | None]]]
                    ) -> dict[str, list[dict]]:
        """Each run once a repetition, the order reversed every other one."""
        out: dict[str, list[dict]] = {name: [] for name, _ in runs}
        for rep in range(self.args.reps):
            for name, fn in runs if rep % 2 == 0 else runs[::-1]:
                if res := fn():
                    out[name].append(res)
        print(f"  {label}: " + "; ".join(
            f"{name} " + ", ".join(f"p99 {r['p99']:.2f} ms" if "p99" in r else
                                   f"{r['rate']:,.0f}/s" for r in reps)
            for name, reps in out.items()), flush=True)
        self.raw[label] = out
        return out

    def row(self, target: str, unit: str, r: dict[str, list[dict]], key: str, pair: tuple[str,
            str], goal: str = "", note: str = "") -> None:
        name, peer = pair
        self.figs.compare(target, unit, name, [x[key] for x in r[name]], peer,
                          [x[key] for x in r[peer]], goal, note,
                          "higher" if key == "rate" else "lower")

    # -- 1. write-to-visible ------------------------------------------------------------------
    def visible(self) -> None:
        a, w = self.args, self.w
        print(f"1. write-to-visible: {a.visible:,} OptOuts on A, B and C polled", flush=True)
        pairs = w["visible_pairs"]
        res = self._get("write-to-visible", self.pool.apply_async(task_visible, (
            self.ports, self.cluster.urls, self.raw_stream, self.raw_subject, pairs,
            w["raw_events"][:1000], 60 + a.visible * 0.2)), 120 + a.visible * 0.3)
        if res is None:
            return
        if res["calls"] < len(pairs):
            self.fail(f"write-to-visible: {res['calls']} of {len(pairs)} writes timed")
        self.written.extend(pairs[:res["calls"]])
        self.sequences.append(res["sequences"])
        seen, sent, acked, probes = res["seen"], res["sent"], res["acked"], res["probes"]
        from_ack = _ms(seen - acked)  # (2, n): B, C
        peer_ack = _ms(probes[:, 2] - probes[:, 1])
        early = int((from_ack < 0).sum()), int((peer_ack < 0).sum())
        ours, peer = np.maximum(from_ack, 0).ravel(), np.maximum(peer_ack, 0)
        both = np.maximum(from_ack, 0).max(axis=0)
        from_send, peer_send = _ms(seen - sent).ravel(), _ms(probes[:, 2] - probes[:, 0])
        seconds = (acked[-1] - sent[0]) / 1e9
        note = (f"B p50 {_pct(np.maximum(from_ack[0], 0), 50):.2f} / p99 "
                f"{_pct(np.maximum(from_ack[0], 0), 99):.2f} ms, C p50 "
                f"{_pct(np.maximum(from_ack[1], 0), 50):.2f} / p99 "
                f"{_pct(np.maximum(from_ack[1], 0), 99):.2f} ms, both seen p50 "
                f"{_pct(both, 50):.2f} / p99 {_pct(both, 99):.2f} / max {both.max():.2f} ms; "
                f"seen before the ack came back: {early[0]} of {from_ack.size} "
                f"(raw: {early[1]} of {len(peer_ack)}), counted as 0; pollers "
                f"{res['polls'][0] / seconds:,.0f} and {res['polls'][1] / seconds:,.0f} "
                f"Checks/s")
        for p, goal in ((50, "<= 5"), (99, "<= 50")):
            self.figs.compare(f"write-to-visible p{p}: ack on A → first Check on B, C seeing "
                              "it", "ms", "replicas", [_pct(ours, p)],
                              "raw publish → delivery", [_pct(peer_send, p)], goal,
                              f"raw ack → delivery p50 {_pct(peer, 50):.2f} / p99 "
                              f"{_pct(peer, 99):.2f} ms; " + note if p == 99 else "")
        for p in (50, 99):
            self.figs.compare(f"write-to-visible p{p}, from the OptOut sent", "ms", "replicas",
                              [_pct(from_send, p)], "raw publish → delivery",
                              [_pct(peer_send, p)], "",
                              "OptOut sent → A's ack (p50) "
                              f"{_pct(_ms(acked - sent), 50):.2f} ms; raw publish → ack "
                              f"{_pct(_ms(probes[:, 1] - probes[:, 0]), 50):.2f} ms"
                              if p == 50 else "")

    # -- 2. replicated OptOut rate --------------------------------------------------------------
    def opt_out_rate(self) -> None:
        a, w = self.args, self.w
        print(f"2. OptOut, {a.writers} callers: over the 3 replicas, on A, on the local log",
              flush=True)
        targets = {"3 replicas": self.ports, "replica A": self.ports[0],
                   "local log": self.local.port}

        def closed(name: str) -> dict | None:
            res = self._counted(lambda: self._get(f"OptOut {name}", self.pool.apply_async(
                task_closed, (targets[name], OPT_OUT, w["opt_outs"], 1, a.writers, 1,
                              time.time() + 0.3, a.seconds)), a.seconds + 120), 1)
            self._keep("local" if name == "local log" else "replicas", w["opt_out_pairs"], res)
            return res

        r = self.interleaved("OptOut closed", [(n, lambda n=n: closed(n)) for n in targets])
        note = self._cpu_note(r)
        target = f"OptOut, {a.writers} callers"
        self.row(target, "writes/s", r, "rate", ("3 replicas", "local log"), "ratio >= 0.5",
                 note)
        self.row(target, "writes/s", r, "rate", ("replica A", "local log"), "ratio >= 0.5")

    # -- 3. WriteBatch of 1,000 ----------------------------------------------------------------
    def write_batch(self) -> None:
        a, w = self.args, self.w
        print(f"3. WriteBatch 1,000, {a.batch_callers} callers", flush=True)
        raw_batches = [w["raw_events"][i:i + 1000] for i in range(0, 8000, 1000)]
        if len(raw_batches[-1]) < 1000:
            raise RuntimeError("too few raw events for the batch peer")

        def ours(to: Any, label: str) -> dict | None:
            res = self._counted(lambda: self._get(f"WriteBatch {label}", self.pool.apply_async(
                task_closed, (to, WRITE_BATCH, w["batches"], 1000, a.batch_callers, 1,
                              time.time() + 0.3, a.seconds)), a.seconds + 120), 1000)
            self._keep("local" if label == "local log" else "replicas", [], res, 1000,
                       w["batch_pairs"])
            return res

        def raw(readers: int) -> dict | None:
            return self._counted(lambda: self._get(
                "raw batches", self.pool.apply_async(task_raw_batches, (
                    self.cluster.urls, self.raw_stream, self.raw_subject, raw_batches,
                    a.batch_callers, time.time() + 0.3, a.seconds, WARM, readers)),
                a.seconds + 120), 1000)

        r = self.interleaved("WriteBatch 1000", [
            ("3 replicas", lambda: ours(self.ports, "3 replicas")),
            ("raw atomic batches", lambda: raw(0)),
            ("raw, 3 readers", lambda: raw(3)),
            ("local log", lambda: ours(self.local.port, "local log"))])
        target = f"WriteBatch 1,000, {a.batch_callers} callers"
        self.row(target, "events/s", r, "rate", ("3 replicas", "raw atomic batches"),
                 ">= 50000", "raw: the same events' bytes and headers, published by as many "
                 "threads, each its own connection, to a stream of the same settings; with 3 "
                 "readers: and 3 push consumers reading every message, as the 3 replicas do; "
                 + self._cpu_note(r))
        self.row(target, "events/s", r, "rate", ("3 replicas", "raw, 3 readers"))
        self.row(target, "events/s", r, "rate", ("3 replicas", "local log"))

    # -- 6. Check latency under replicated writes ---------------------------------------------
    def check_latency(self) -> None:
        a = self.args
        print(f"6. Check on C, sequential, {2 * a.seconds:g} s: idle, under {a.writers} OptOut "
              f"callers on A and B, under OptOut paced {a.rate:,.0f}/s on A", flush=True)
        local = self.local.port
        r = self.interleaved("Check on C", [
            ("C under writers", lambda: self._checks_on_c("closed")),
            ("C idle", lambda: self._checks_on_c("idle")),
            ("C under paced writes", lambda: self._checks_on_c("paced")),
            ("local log under writers", lambda: self._checks_on_c("closed", local)),
            ("local log idle", lambda: self._checks_on_c("idle", local))])
        self.idle_checks = r["C idle"]
        for label, key in ((f"{a.writers} closed-loop OptOut callers on A and B",
                            "C under writers"),
                           (f"OptOut paced {a.rate:,.0f}/s on A", "C under paced writes")):
            rate = statistics.median([x.get("load_rate", 0) for x in r[key]] or [0])
            for p in ("p50", "p99"):
                self.row(f"Check {p} on replica C, under {label}", "ms", r, p, (key, "C idle"),
                         "ratio <= 1.5", f"writes meanwhile (median) {rate:,.0f}/s"
                         if p == "p99" else "")
        for p in ("p50", "p99"):
            self.row(f"Check {p} on the local-log server (nothing replicated to it), under "
                     "the same callers on A and B", "ms", r, p,
                     ("local log under writers", "local log idle"), "",
                     "the machine's share: the same load, on a server that applies none of "
                     "it" if p == "p99" else "")

    def _checks_on_c(self, load: str, port: int | None = None) -> dict | None:
        """Sequential unary Checks on replica C (or `port`) for 2 x --seconds (every answer
        checked), with `load` beside them from the other client process: "closed" (--writers
        OptOut callers on A and B), "paced" (OptOut at --rate on A) or "idle"."""
        a, w = self.args, self.w
        seconds = 2 * a.seconds
        start_at = time.time() + 0.3
        pending = None
        if load == "closed":
            pending = self.pool.apply_async(task_closed, (
                self.ports[:2], OPT_OUT, w["opt_outs"], 1, a.writers, 1, start_at,
                seconds + 1.5))
        elif load == "paced":
            pending = self.pool.apply_async(task_paced_threads, (
                self.ports[0], OPT_OUT, w["opt_outs"], None, a.rate, seconds + WARM + 2, 8,
                start_at))
        if pending is not None:
            time.sleep(max(0.0, start_at + WARM - time.time()))
        res = self._get(f"Check on {port or 'C'} ({load})", self.pool.apply_async(
            task_latency, (port or self.ports[2], w["check_pairs"], w["check_expected"],
                           10**7, seconds, 200)),
            seconds + 120)
        if pending is not None:
            bg = self._get(f"writers on A, B ({load})", pending, seconds + 120)
            self._keep("replicas", w["opt_out_pairs"], bg)
            if res and bg:
                res["load_rate"] = bg.get("rate") or bg["calls"] / (seconds + WARM + 2)
        if res:
            lat = _ms(res.pop("lat_ns"))
            res["p50"], res["p99"] = _pct(lat, 50), _pct(lat, 99)
        return res

    # -- 4. catch-up on restart ----------------------------------------------------------------
    def _status(self, port: int) -> Any:
        from anning.client import Client

        with Client(f"127.0.0.1:{port}", timeout=CALL_TIMEOUT) as client:
            return client.status()

    def _same_position(self, timeout: float = 60.0) -> int:
        def same() -> int:
            last = {self._status(p).last_sequence for p in self.ports}
            return last.pop() if len(last) == 1 else 0
        return int(eventually(same, timeout, 0.05))  # type: ignore[arg-type]

    def _restart(self, server: AnningServer, pair: tuple[str, str]) -> tuple[float, str]:
        """Seconds from the process start to health SERVING and a Check of `pair` answering
        SENDER; and what the server logged meanwhile."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from anning.v1 import anning_pb2 as pb
        from anning.v1 import anning_pb2_grpc as rpc

        offset = len(server.output())
        t0 = time.perf_counter()
        server.start()
        while not accepts(server.port):
            if not server.alive() or time.perf_counter() - t0 > 600:
                raise RuntimeError(f"replica not listening\n{server.log_tail()}")
            time.sleep(0.002)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="anning.v1.Suppression")
            check = rpc.SuppressionStub(channel).Check
            while True:
                if health.Check(request, timeout=CALL_TIMEOUT).status == \
                        health_pb2.HealthCheckResponse.SERVING and check(pb.CheckRequest(
                            sender=pair[0], number=pair[1]), timeout=CALL_TIMEOUT).scope == 1:
                    break
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError("the restarted replica never answered SENDER")
                time.sleep(0.002)
        return time.perf_counter() - t0, server.output()[offset:]

    def catch_up(self) -> None:
        a, w = self.args, self.w
        n, c = a.catch_up, self.replicas[2]
        print(f"4. catch-up: {n:,} events written while C is stopped, {a.catch_up_reps}x",
              flush=True)
        ours: dict[str, list[float]] = {"log": [], "restart": [], "empty": []}
        peers: dict[str, list[float]] = {"bulk": [], "nats-py": []}
        notes = []
        for rep in range(a.catch_up_reps):
            rows = slice(rep * n, (rep + 1) * n)
            numbers, index = w["catch_numbers"][rows], w["catch_index"][rows]
            national = datagen.national(numbers)
            before = self._same_position()
            c.stop()
            res = self.pool.apply_async(task_write_batches, (
                self.ports[0], w["catch_senders"], index, national, 1000,
                a.batch_callers)).get(timeout=3600)
            if res["errors"]:
                self.fail(f"catch-up writes: {res['errors'][:3]}")
                c.start()
                c.wait_health(timeout=600)
                return
            seqs = np.array([s for _, _, s in res["acks"]], np.uint64)
            self.sequences.append(seqs)
            first, last = before + 1, int(seqs.max())
            if last - first + 1 != n:
                self.fail(f"catch-up: {n:,} events acknowledged up to {last}, from {first}")
            last_pair = (w["catch_senders"][index[-1]], national[-1])
            seconds, log = self._restart(c, last_pair)
            found = CAUGHT_UP.findall(log)
            if not found or int(found[-1][0]) != n:
                self.fail(f"catch-up: no 'caught up {n} events' in the log: {found}")
                continue
            ours["log"].append(float(found[-1][2]))
            ours["restart"].append(seconds)
            if (got := self._status(c.port).last_sequence) < last:
                self.fail(f"catch-up: C serves at {got}, the stream at {last}")
            bad = np.flatnonzero(scopes(c.port, w["catch_senders"], index, numbers) != 1)
            if bad.size:
                self.fail(f"catch-up: {bad.size:,} of {n:,} events do not check SENDER on C")
            for how in peers:
                got_peer = self._get(f"raw read ({how})", self.pool.apply_async(task_raw_read, (
                    self.cluster.urls, self.stream, self.subject, first, n, how, 600)), 700)
                if got_peer:
                    peers[how].append(got_peer["rate"])
            c.stop()
            empty, _ = self._restart(c, last_pair)
            ours["empty"].append(empty)
            notes.append(f"{res['seconds']:.1f} s to write, restart {seconds:.2f} s "
                         f"(caught up in {found[-1][1]} s)")
        self.written.extend(list(zip([w["catch_senders"][i] for i in w["catch_index"][
            :len(ours["log"]) * n].tolist()], datagen.national(w["catch_numbers"][
                :len(ours["log"]) * n]), strict=True))[::97])  # a sample, read back at the end
        target = f"catch-up of {n:,} events on restart"
        self.figs.compare(f"{target}: the log's rate", "events/s", "replica C", ours["log"],
                          "raw bulk read (our client)", peers["bulk"], ">= 200000",
                          "; ".join(notes), "higher")
        self.figs.compare(f"{target}: the log's rate", "events/s", "replica C", ours["log"],
                          "nats-py ordered consumer", peers["nats-py"], "", "", "higher")
        self.figs.compare(f"{target}: {n:,} / (restart − restart with nothing missed)",
                          "events/s", "replica C", [n / max(r - e, 1e-9) for r, e in zip(
                              ours["restart"], ours["empty"], strict=True)],
                          "raw bulk read (our client)", peers["bulk"], "",
                          "what the missed events add to a restart", "higher")
        self.figs.compare(f"restart to serving, {n:,} events missed", "s", "replica C",
                          ours["restart"], "nothing missed", ours["empty"], "",
                          "process start → health SERVING and the last event checks SENDER")
        # the replica now holds every event of the run (none folded by a load): idle again
        held = self._status(c.port).events
        after = [x for x in (self._checks_on_c("idle") for _ in range(a.reps)) if x]
        if self.idle_checks:
            for p in ("p50", "p99"):
                self.figs.compare(f"Check {p} on replica C idle, holding {held:,} events",
                                  "ms", "after catch-ups", [x[p] for x in after],
                                  "before (idle runs of 6.)", [x[p] for x in self.idle_checks])

    # -- 5. stream leader killed ---------------------------------------------------------------
    def _stream_current(self, timeout: float = 120.0) -> str:
        """Until the stream has a leader and every other replica of it is current; its leader."""
        connection = connect(self.cluster.urls, "bench-watch")
        try:
            def current() -> str:
                try:
                    info = api_request(connection, f"$JS.API.STREAM.INFO.{self.stream}",
                                       None, 2.0).get("cluster", {})
                except Exception:
                    return ""
                peers = info.get("replicas", [])
                ok = info.get("leader") and len(peers) == 2 and all(
                    p.get("current") and not p.get("offline") for p in peers)
                return str(info["leader"]) if ok else ""
            return str(eventually(current, timeout, 0.2))
        finally:
            connection.close()

    def failover(self) -> None:
        a = self.args
        print(f"5. stream leader SIGKILLed under writes, {a.failover_reps}x", flush=True)
        ours: list[float] = []
        peer: list[float] = []
        notes = []
        for rep in range(a.failover_reps):
            got = self._failover_once(rep)
            if got is not None:
                ours.append(got[0])
                peer.append(got[1])
                notes.append(got[2])
                print(f"  {got[2]}", flush=True)
        self.figs.compare("stream leader SIGKILLed: kill → next acknowledged write", "s",
                          "replicas", ours, "raw publisher", peer, "<= 10", "; ".join(notes))

    def _failover_once(self, rep: int) -> tuple[float, float, str] | None:
        """Callers writing through A, B, C in turn and the raw publisher into the same stream;
        its leader SIGKILLed; seconds from the kill to the first acknowledgement of a write
        sent after it, each side; the node started again; every acknowledged write read back
        from every replica."""
        a, w = self.args, self.w
        leader = self._stream_current()
        via = {self._status(p).event_log.split(" via ")[-1].split(",")[0] for p in self.ports}
        rows = slice(rep * FAILOVER_WRITES, (rep + 1) * FAILOVER_WRITES)
        pairs, raw_pairs = w["failover_pairs"][rows], w["raw_pairs"][rows]
        with FailoverWriters(self.ports, pairs, 0, a.failover_callers,
                             a.nats_timeout + 5) as wr, \
                RawWriter(self.cluster.urls, self.stream, self.subject,
                          w["raw_events"][rows]) as raw:
            eventually(lambda: len(wr.acked) >= 100 and len(raw.acked) >= 20, 60)
            t_kill = time.monotonic()
            self.cluster.kill(leader)
            eventually(lambda: wr.first_ack_sent_after(t_kill) and any(
                sent > t_kill for _, sent, _, _ in raw.acked), 120, 0.01)
            time.sleep(1.0)
        if wr.unexpected:
            self.fail(f"failover: {wr.unexpected[:3]}")
        first, any_ack = wr.first_ack_sent_after(t_kill), wr.first_ack_after(t_kill)
        raw_first = min(t for _, sent, t, _ in raw.acked if sent > t_kill)
        assert first is not None and any_ack is not None
        failed = sum(wr.failed.values())
        where = "the replicas' node" if self.cluster.node(leader).client_url in via \
            else "not the replicas' node"
        note = (f"rep {rep + 1}: {leader} killed ({where}), next ack {first - t_kill:.2f} s "
                f"(any ack {any_ack - t_kill:.2f} s), raw {raw_first - t_kill:.2f} s; failed "
                f"{failed} ({', '.join(f'{k} {v}' for k, v in wr.failed.items())}) of "
                f"{failed + len(wr.acked)} calls, raw failed {sum(raw.failed.values())}")
        self.cluster.start(leader)
        self.cluster.wait_ready(60, [leader])
        self._stream_current()
        done = [pairs[j] for j, *_ in wr.acked] + [raw_pairs[k] for k, *_ in raw.acked]
        self.sequences.append(np.array([s for *_, s in wr.acked] + [s for *_, s in raw.acked],
                                       np.uint64))
        self.written.extend(done)
        for name, port in zip("ABC", self.ports, strict=True):
            if left := self._read_back(port, done, 60):
                self.fail(f"failover rep {rep + 1}: {left[0]} of {len(done)} acknowledged "
                          f"writes not suppressed on {name}, e.g. {left[1]}")
                return None
        return first - t_kill, raw_first - t_kill, \
            f"{note}; all {len(done):,} acknowledged writes SENDER on A, B, C"

    def _read_back(self, port: int, pairs: list[tuple[str, str]],
                   timeout: float) -> tuple[int, str] | None:
        """None once every pair checks SENDER on the replica (within `timeout`: it may still
        be reading the stream), else how many do not and the first of them."""
        deadline = time.monotonic() + timeout
        while (left := suppressed(port, pairs))[0]:
            if time.monotonic() > deadline:
                return left
            time.sleep(0.5)
        return None

    # -- the end -------------------------------------------------------------------------------
    def verify_all(self) -> None:
        """Every write acknowledged in the runs checks SENDER on every replica (the local
        log's on it); no two acknowledgements in the stream share a sequence; the replicas
        end at one last sequence."""
        t0 = time.perf_counter()
        sequences = np.concatenate(self.sequences or [np.empty(0, np.uint64)])
        if (shared := len(sequences) - len(np.unique(sequences))) or not sequences.all():
            self.fail(f"{shared} acknowledgements repeat another's sequence (or one is 0)")
        written = sorted(set(self.written))
        for name, port in zip("ABC", self.ports, strict=True):
            if left := self._read_back(port, written, 60):
                self.fail(f"{left[0]:,} of {len(written):,} acknowledged writes do not check "
                          f"SENDER on replica {name}, e.g. {left[1]}")
        local = sorted(set(self.local_written))
        if (bad := suppressed(self.local.port, local))[0]:
            self.fail(f"{bad[0]:,} of {len(local):,} local-log writes do not check SENDER, "
                      f"e.g. {bad[1]}")
        try:
            last = self._same_position()
        except AssertionError:
            self.fail("the replicas do not end at one last sequence: " + ", ".join(
                str(self._status(p).last_sequence) for p in self.ports))
            last = 0
        self.figs.notes.append(
            f"verified: {len(sequences):,} acknowledgements in the stream, each its own "
            f"sequence; {len(written):,} distinct acknowledged opt-outs (catch-ups sampled) "
            f"check SENDER on A, B and C, {len(local):,} on the local log; the replicas end at "
            f"sequence {last:,} ({time.perf_counter() - t0:.1f} s)")

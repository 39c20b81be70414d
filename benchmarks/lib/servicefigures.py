"""The report's service figures: unary Check latency (h2load and the Python client) against a
grpc.aio constant-answer servicer, and checks/s of each client mode there is.

Both servers run together, one process each (`anning serve --workers 1`, `constant-aio x1`),
and the repetitions alternate between them (the order reversed every other time), so that the
machine's other work falls on both alike. Every h2load request to anning is accounted for in
its metrics (checks by scope, errors) as an exact delta; the Python clients check every
answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from anning import write_snapshot
from anning.client import Client
from anning.testing.server import free_port, metrics_text, samples
from benchmarks.lib import datagen, h2load
from benchmarks.lib.figures import Figures
from benchmarks.lib.loadgen import task_latency, task_paced_futures
from benchmarks.lib.peers import ConstantServer
from benchmarks.lib.servers import AnningServer, stop_all, wait_ready

__all__ = ["client_modes", "unary_latency"]

CHECK = "/anning.v1.Suppression/Check"
REPS = 3
WARMUP = 2_000  # h2load calls before each timed run: connection, caches, the loop warm


def _served_list(work: Path, entries: int) -> tuple[Path, list[tuple[str, str]], np.ndarray]:
    """A data directory with a generated list, and 1,000 query pairs with their answers (scope
    codes from the index itself, checked against the generator's truth)."""
    data_dir = work / f"served-{entries}"
    data = datagen.generate(entries, 1_000)
    index = datagen.build_index(data.universe, data.entries)
    if not (data_dir / "index.anx").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_snapshot(index, data_dir / "index.anx")
    q = data.queries
    senders = q.sender_strings(data.universe)
    pairs = list(zip(senders, datagen.national(q.numbers), strict=True))
    expected = index.check_ids(index.sender_ids(senders), q.numbers)
    hit = q.present & ((q.entry_mask & 1) == 1)
    assert np.all(expected[hit] >= 1) and np.all(expected[hit] <= q.entry_kind[hit])
    return data_dir, pairs, expected


def _checks_by_scope(port: int) -> tuple[dict[str, float], float]:
    text = metrics_text(port)
    checks = {dict(k)["scope"]: v for k, v in samples(text, "anning_checks_total").items()}
    errors = sum(samples(text, "anning_errors_total").values())
    return checks, errors


def unary_latency(ctx: Any, work: Path, entries: int, calls: int, rate: int, seconds: float,
                  figures: Figures, series: dict, reps: int = REPS) -> None:
    from anning.v1 import anning_pb2 as pb

    data_dir, pairs, expected = _served_list(work, entries)
    k = int(np.flatnonzero(expected == 1)[0])  # a sender-scoped opt-out: the full path
    pair, want = pairs[k], 1
    body = h2load.grpc_body(pb.CheckRequest(sender=pair[0], number=pair[1]).SerializeToString())
    metrics = free_port()
    anning = AnningServer(data_dir, 1, ("--metrics", f"127.0.0.1:{metrics}"), name="anning w1")
    constant = ConstantServer(ctx, 1, 16, "aio")
    servers = [anning, constant]
    runs: dict[tuple[str, str], list[np.ndarray]] = {}
    try:
        for server in servers:
            wait_ready(server)
        for rep in range(reps):
            for server in servers if rep % 2 == 0 else servers[::-1]:
                is_anning = server is anning
                answer = want if is_anning else 0  # the constant answers SCOPE_NONE
                if h2load.available():
                    before = _checks_by_scope(metrics) if is_anning else None
                    h2load.run(server.port, CHECK, body, requests=WARMUP)
                    seq = h2load.run(server.port, CHECK, body, requests=calls)
                    paced = h2load.run(server.port, CHECK, body, seconds=seconds, rate=rate,
                                       streams=16, warmup=1.0)
                    sent = WARMUP + calls + len(paced.latencies_us)
                    for run in (seq, paced):
                        if run.succeeded != len(run.latencies_us) or not len(run.latencies_us):
                            figures.fail(f"h2load {server.name}: statuses {run.statuses}")
                    if before is not None:
                        # every request answered as a check of that pair (h2load's warm-up
                        # second of the paced run included: it is not in the log)
                        after = _checks_by_scope(metrics)
                        grown = after[0]["sender"] - before[0]["sender"]
                        if not sent <= grown <= sent + 2 * rate or after[1] != before[1]:
                            figures.fail(f"anning counted {grown:,.0f} sender checks for "
                                         f"{sent:,} h2load requests, errors "
                                         f"{after[1] - before[1]:+.0f}")
                    runs.setdefault((server.name, "h2load sequential"), []).append(
                        seq.latencies_us)
                    runs.setdefault((server.name, "h2load paced"), []).append(
                        paced.latencies_us)
                for name, result in (
                    ("python sequential",
                     task_latency(server.port, [pair], [answer], calls, 120.0, 200)),
                    ("python paced",
                     task_paced_futures(server.port, [pair], [answer], rate, seconds, 200)),
                ):
                    if result["wrong"] or result["errors"]:
                        figures.fail(f"{server.name} {name}: {result['wrong']} wrong answers, "
                                     f"errors {result['errors'][:3]}")
                    runs.setdefault((server.name, name), []).append(result["lat_ns"] / 1e3)
    finally:
        stop_all(servers)
    _latency_rows(figures, runs, anning.name, constant.name, rate)
    series["latency"] = {f"{server} · {how}": np.concatenate(reps)
                         for (server, how), reps in runs.items()}


def _latency_rows(figures: Figures, runs: dict, ours: str, peer: str, rate: int) -> None:
    def reps(server: str, how: str, q: float) -> list[float]:
        return [float(np.percentile(r, q)) for r in runs.get((server, how), []) if len(r)]

    paced = f"paced {rate:,}/s"
    rows = [("h2load sequential", "p50", 50, "ratio <= 1.2"),
            ("h2load sequential", "p99", 99, "ratio <= 1.2"),
            ("h2load paced", "p50", 50, ""),
            ("h2load paced", "p99", 99, "<= 1000"),
            ("h2load paced", "p99.9", 99.9, "<= 2000"),
            ("python sequential", "p50", 50, ""),
            ("python sequential", "p99", 99, ""),
            ("python paced", "p99", 99, ""),
            ("python paced", "p99.9", 99.9, "")]
    for how, label, q, goal in rows:
        if (ours, how) not in runs:
            continue
        target = f"Check {how.replace('paced', paced)} {label}"
        figures.compare(target, "us", ours, reps(ours, how, q), peer, reps(peer, how, q),
                        goal=goal, note=f"{sum(map(len, runs[(ours, how)])):,} calls")


def client_modes(work: Path, entries: int, seconds: float, figures: Figures,
                 series: dict) -> None:
    """checks/s of each way the client can check, one connection, against anning w1."""
    data_dir, pairs, expected = _served_list(work, entries)
    suppressed = expected > 0
    server = AnningServer(data_dir, 1, name="anning w1")
    rates: dict[str, float] = {}
    try:
        wait_ready(server)
        target = f"127.0.0.1:{server.port}"
        with Client(target, timeout=30.0) as client:
            modes = _modes(client, pairs, suppressed)
            for name, (run, per_call) in modes.items():
                run(5)  # warm
                done, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    done += run(done)
                rates[name] = done * per_call / (time.perf_counter() - t0)
    except AssertionError as exc:
        figures.fail(f"client modes: {exc}")
    finally:
        stop_all([server])
    series["client checks/s"] = rates
    for name, rate in rates.items():  # each beside the unary call, one connection
        if name != "unary check" and "unary check" in rates:
            figures.compare(f"client: {name}", "checks/s", name, [rate], "unary check",
                            [rates["unary check"]], better="higher")


def _modes(client: Client, pairs: list[tuple[str, str]], suppressed: np.ndarray) -> dict:
    """name -> (run(i) doing some calls from item i on and returning how many, checks a call)."""
    n = len(pairs)
    modes: dict[str, tuple[Any, int]] = {}

    def unary(i: int) -> int:
        s, x = pairs[i % n]
        assert client.check(s, x).suppressed == suppressed[i % n], (s, x)
        return 1

    modes["unary check"] = (unary, 1)
    stream = client.stream()

    def streamed(i: int) -> int:
        s, x = pairs[i % n]
        assert stream.check(s, x).suppressed == suppressed[i % n], (s, x)
        return 1

    modes["stream, one at a time"] = (streamed, 1)

    def pipelined(i: int) -> int:
        got = stream.check_many(pairs)
        assert [r.suppressed for r in got] == suppressed.tolist()
        return 1

    modes[f"stream, {n:,} pipelined"] = (pipelined, n)

    def batch(i: int) -> int:
        got = client.check_batch(pairs)
        assert [r.suppressed for r in got] == suppressed.tolist()
        return 1

    modes[f"check_batch of {n:,}"] = (batch, n)
    table = sorted({s for s, _ in pairs})
    index = np.array([table.index(s) for s, _ in pairs], np.uint32)
    from anning import normalize_numbers

    numbers = np.asarray(normalize_numbers([x for _, x in pairs]), np.uint64)
    reps = 100  # 100,000 numbers a call
    big_index, big_numbers = np.tile(index, reps), np.tile(numbers, reps)

    def columns(i: int) -> int:
        got = client.check_columns(table, big_index, big_numbers)
        assert np.array_equal(got > 0, np.tile(suppressed, reps))
        return 1

    modes[f"check_columns of {n * reps:,}"] = (columns, n * reps)
    checker = getattr(client, "checker", None)
    if checker is not None:  # the coalescing client (issue 17 item 2), where there is one
        coalesced = checker()

        def many_threads(i: int) -> int:
            def one(k: int) -> None:
                for j in range(k, k + 200):
                    s, x = pairs[j % n]
                    assert coalesced.check(s, x).suppressed == suppressed[j % n]

            threads = [threading.Thread(target=one, args=(t * 200,)) for t in range(64)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return 1

        modes["checker() from 64 threads"] = (many_threads, 64 * 200)
    return modes

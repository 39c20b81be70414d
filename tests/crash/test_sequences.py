"""Dense sequences (SPEC §4, issue 13): the n-th event of a data directory has sequence n, with
no gap and no duplicate, whichever of two worker processes took it, across log rotations,
checkpoints (the server's own and `anning checkpoint` beside it), a SIGTERM restart and kill -9
of the whole server; and the change feed (`anning events export`) gives every event once, in
order, with the sequence its write was acknowledged with."""

from __future__ import annotations

import io
import itertools
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import grpc

from anning.engine.export import CSV_HEADER, export_csv
from anning.storage.layout import DataDir
from anning.testing import server as h
from anning.v1 import anning_pb2 as pb

T = 10.0
SEED = 1313
WRITERS = 8
NOW_MS = int(time.time() * 1000)
OUT, IN, REASSIGN = pb.EVENT_KIND_OPT_OUT, pb.EVENT_KIND_OPT_IN, pb.EVENT_KIND_REASSIGN
ACTIONS = {OUT: "opt_out", IN: "opt_in", REASSIGN: "reassign"}
CATEGORY_ROW = {"": "marketing", "marketing": "marketing", "notification": "notification",
                "all": "all"}
SOURCES = ["", "api", "reply", "customer_service", "regulator"]
# how each phase of writes ends, and after how many seconds: SIGTERM (calls in flight are
# answered), kill -9 early, kill -9 about when the server's own checkpoint runs (every 5 s),
# and a quiet stop of the writers
PHASES = [("sigterm", 2.5), ("sigkill", 1.2), ("sigkill", 5.3), ("sigkill", 0.6),
          ("quiet", 1.5)]
_numbers = itertools.count(8615000000000)  # one number an event: a row tells its write


@dataclass(frozen=True)
class Sent:
    """One event as sent: its number is its own."""

    number: int
    kind: int
    scope: str
    category: str
    at_ms: int
    source: str

    def row(self, sequence: int) -> bytes:
        """The export row it must come back as."""
        at = datetime.fromtimestamp(self.at_ms // 1000, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S") + f".{self.at_ms % 1000:03d}Z"
        sender, category = ("*", "") if self.kind == REASSIGN else \
            (self.scope, CATEGORY_ROW[self.category])
        return f"{self.number},{sender},{category},{ACTIONS[self.kind]},{at}," \
            f"{self.source or 'api'},{sequence}".encode()

    def message(self) -> pb.WriteEvent:
        return pb.WriteEvent(kind=self.kind, number=f"+{self.number}", scope=self.scope,
                             category=self.category, at_ms=self.at_ms, source=self.source)


class Writer(threading.Thread):
    """OptOut, OptIn, Reassign and WriteBatch calls (of 1 to 6 events) on a connection of its
    own, until told to stop or a call fails (the server went: the write's fate is unknown)."""

    def __init__(self, w: int, target: str, rng: random.Random, stop: threading.Event) -> None:
        super().__init__(name=f"writer-{w}", daemon=True)
        self.w, self.target, self.rng, self.stop = w, target, rng, stop
        self.acked: list[tuple[int, list[Sent]]] = []  # (acknowledged sequence, events)
        self.unknown: list[Sent] | None = None
        self.failure: grpc.StatusCode | None = None

    def event(self) -> Sent:
        rng = self.rng
        kind = rng.choice((OUT, OUT, IN, REASSIGN))
        return Sent(next(_numbers), kind,
                    "" if kind == REASSIGN else rng.choice((f"s{self.w}", "entity:e1", "*")),
                    "" if kind == REASSIGN else rng.choice(list(CATEGORY_ROW)),
                    NOW_MS - rng.randrange(86_400_000), rng.choice(SOURCES))

    def call(self, s: h.Stubs, events: list[Sent]) -> int:
        if len(events) > 1 or self.rng.random() < 0.2:
            ack = s.opt_outs.WriteBatch(pb.WriteBatchRequest(
                events=[e.message() for e in events]), timeout=T)
            assert ack.events == len(events), ack
            return ack.sequence
        e = events[0]
        if e.kind == REASSIGN:
            return s.opt_outs.Reassign(pb.ReassignRequest(
                number=f"+{e.number}", at_ms=e.at_ms, source=e.source), timeout=T).sequence
        request = pb.OptOutRequest(number=f"+{e.number}", scope=e.scope, category=e.category,
                                   at_ms=e.at_ms, source=e.source)
        return (s.opt_outs.OptOut if e.kind == OUT else s.opt_outs.OptIn)(request,
                                                                           timeout=T).sequence

    def run(self) -> None:
        with h.Stubs(self.target, use_local_subchannel_pool=1) as s:
            while not self.stop.is_set():
                events = [self.event() for _ in range(
                    1 if self.rng.random() < 0.5 else self.rng.randint(2, 6))]
                try:
                    sequence = self.call(s, events)
                except grpc.RpcError as exc:
                    self.unknown, self.failure = events, exc.code()
                    return
                self.acked.append((sequence, events))


def checkpoints(data: Path, stop: threading.Event, reports: list[str]) -> None:
    """`anning checkpoint --data` beside the server, again and again."""
    while not stop.wait(0.3):
        done = subprocess.run([sys.executable, "-m", "anning.cli", "checkpoint", "--data",
                               str(data)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        reports.append(done.stdout)


def exported(data: Path, since: int, until: int | None = None) -> list[bytes]:
    out = io.BytesIO()
    export_csv(DataDir(data), since, until, out)
    lines = out.getvalue().split(b"\n")
    assert lines[0] + b"\n" == CSV_HEADER and lines[-1] == b"", lines[:2]
    return lines[1:-1]


def test_sequences_are_dense_and_exported_as_acknowledged(tmp_path):
    """8 writer threads against 2 workers over 5 phases (SIGTERM, three kill -9, a quiet
    end), checkpoints every few hundred ms: the acknowledged sequences never overlap; with the
    events of unacknowledged calls that made it to disk they are exactly 1..n; every exported
    row is its event with the sequence its write was acknowledged with (a batch of k covering
    sequence-k+1..sequence in request order); `--since S` gives exactly the rows after S."""
    rng = random.Random(SEED)
    data = tmp_path / "data"
    h.write_snapshot(data, [8613500000001], ["*"], ["all"], {"s0": "e1"}, NOW_MS - 3_600_000)
    server = h.Server(data, workers=2, demo=False, max_batch=16,
                      extra_args=["--checkpoint-bytes", "4096"])
    acked: list[tuple[int, list[Sent]]] = []
    unknown: list[list[Sent]] = []
    reports: list[str] = []
    logs = []
    try:
        for how, seconds in PHASES:
            server.serve()
            stop, stop_checkpoints = threading.Event(), threading.Event()
            writers = [Writer(w, server.target, random.Random(rng.random()), stop)
                       for w in range(WRITERS)]
            checkpointer = threading.Thread(target=checkpoints,
                                            args=(data, stop_checkpoints, reports))
            for thread in [*writers, checkpointer]:
                thread.start()
            time.sleep(seconds)
            if how == "sigterm":
                server.terminate()
                assert server.wait() == 0, server.output()
            elif how == "sigkill":
                server.sigkill()
            else:
                stop.set()
            for writer in writers:
                writer.join(T + 5)
                assert not writer.is_alive(), f"{how}: {writer.name} hangs"
                acked += writer.acked
                if writer.unknown is not None:
                    assert how != "quiet", (writer.name, writer.failure)
                    unknown.append(writer.unknown)
            stop_checkpoints.set()
            checkpointer.join(60)
            assert len([w for w in writers if w.acked]) == WRITERS, how
        # beside the running server (the last phase's): the server's own view and the feed
        with h.Stubs(server.target) as s:
            last = s.admin.Status(pb.StatusRequest(), timeout=T).last_sequence
        rows = exported(data, 0)
        server.stop()
        logs.append(server.output())
    finally:
        server.kill()

    n = len(rows)
    sequence_of = {}  # number -> the sequence its acknowledgement gives it
    for sequence, events in acked:
        for i, e in enumerate(events):
            sequence_of[e.number] = sequence - len(events) + 1 + i
    taken = sorted(sequence_of.values())
    assert len(set(taken)) == len(taken), "two acknowledged events share a sequence"
    assert last == n and n >= len(taken) > 2000, (last, n, len(taken))
    assert [int(r.rsplit(b",", 1)[1]) for r in rows] == list(range(1, n + 1))
    by_number = {int(r.split(b",", 1)[0]): r for r in rows}
    assert len(by_number) == n, "an event exported twice"
    for sequence, events in acked:
        for i, e in enumerate(events):
            assert by_number.get(e.number) == e.row(sequence - len(events) + 1 + i), e
    # each unacknowledged call is all on disk, as consecutive sequences, or not at all
    found = 0
    for events in unknown:
        there = [by_number.get(e.number) for e in events]
        if there[0] is None:
            assert there == [None] * len(events), events
            continue
        first = int(there[0].rsplit(b",", 1)[1])
        assert there == [e.row(first + i) for i, e in enumerate(events)], events
        found += len(events)
    assert len(taken) + found == n, "an exported event that no call wrote"
    print(f"\n{n} events in {len(acked)} acknowledged calls; {len(unknown)} calls cut off by "
          f"a signal, {found} of their events on disk; "
          f"{sum(bool(r.strip()) for r in reports)} checkpoints by `anning checkpoint`")

    # the feed from any point: exactly what follows it (every S near the ends, 200 between)
    points = sorted({*range(0, 20), *range(n - 20, n + 3),
                     *random.Random(SEED).sample(range(n), 200)})
    for since in points:
        assert exported(data, since) == rows[since:], since
    for since in points[::10]:
        until = random.Random(since).randint(since, n + 2)
        assert exported(data, since, until) == rows[since:until], (since, until)
    # and by the command line, to a file
    out = tmp_path / "feed.csv"
    done = subprocess.run([sys.executable, "-m", "anning.cli", "events", "export", "--data",
                           str(data), "--since", str(n // 2), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == CSV_HEADER + b"".join(r + b"\n" for r in rows[n // 2:])
    assert f"{n - n // 2:,} events, sequences {n // 2 + 1} to {n}" in done.stderr
    checkpointed = [r for r in reports if r.strip()]
    assert len(checkpointed) >= 5, reports  # the log rotated and was retired again and again
    bad = re.compile(r"Traceback|Exception calling application|anning\.server \w+ failed: |"
                     r"checkpoint failed")
    assert not [log for log in logs if bad.search(log)], logs

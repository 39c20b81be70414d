"""The live change feed, OptOuts.Changes (SPEC §4, issue 13): from any sequence, while writes go
on in both workers and checkpoints retire the log under it, every event exactly once, in
sequence order, as `anning events export` has it, several a message; a follower that
disconnects (or whose server is killed) resumes from the last sequence it has and misses and
repeats nothing; `until` ends the stream."""

from __future__ import annotations

import io
import itertools
import random
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import grpc
import pytest

from anning.engine.export import CSV_HEADER, export_csv
from anning.storage.layout import DataDir
from anning.testing import server as h
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode
T = 10.0
NOW_MS = int(time.time() * 1000)
OUT, IN, REASSIGN = pb.EVENT_KIND_OPT_OUT, pb.EVENT_KIND_OPT_IN, pb.EVENT_KIND_REASSIGN
ACTIONS = {OUT: "opt_out", IN: "opt_in", REASSIGN: "reassign"}
PRE = 3000  # events written before any follower starts
_numbers = itertools.count(8615100000000)


def random_events(rng: random.Random, k: int) -> list[pb.WriteEvent]:
    events = []
    for _ in range(k):
        kind = rng.choice((OUT, OUT, IN, REASSIGN))
        events.append(pb.WriteEvent(
            kind=kind, number=f"+{next(_numbers)}",
            scope="" if kind == REASSIGN else rng.choice(("shop", "【京东】", "entity:e1", "*")),
            category="" if kind == REASSIGN else rng.choice(("", "notification", "all")),
            at_ms=NOW_MS - rng.randrange(86_400_000),
            source=rng.choice(("", "reply", "customer_service", "complaint_12321"))))
    return events


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{ms % 1000:03d}Z"


def rows_of(change: pb.Change) -> list[bytes]:
    """A Change as the export rows of its event (one a category; `all` as is)."""
    if change.kind == REASSIGN:
        assert (change.sender, list(change.categories)) == ("", []), change
        cells = [("*", "")]
    else:
        assert change.categories, change
        cells = [(change.sender, c) for c in change.categories]
    return [f"{change.number},{sender},{category},{ACTIONS[change.kind]},{iso(change.at_ms)},"
            f"{change.source},{change.sequence}".encode() for sender, category in cells]


def exported(data, since: int = 0) -> list[bytes]:
    out = io.BytesIO()
    export_csv(DataDir(data), since, None, out)
    assert out.getvalue().startswith(CSV_HEADER)
    return out.getvalue()[len(CSV_HEADER):].splitlines()


def sequence_of(row: bytes) -> int:
    return int(row.rsplit(b",", 1)[1])


class Follower(threading.Thread):
    """Changes from `since`, live, until told its target; with `cut`, it cancels its call after
    a random few messages and asks again from the last sequence it has (a disconnect)."""

    def __init__(self, target: str, since: int, max_batch: int = 0, cut: bool = False,
                 seed: int = 0) -> None:
        super().__init__(daemon=True, name=f"follower-{since}-{max_batch}-{cut}")
        self.target, self.since, self.max_batch, self.cut = target, since, max_batch, cut
        self.rng = random.Random(seed)
        self.last = since
        self.changes: list[pb.Change] = []
        self.sizes: list[int] = []
        self.calls = 0
        self.unavailable = 0  # calls that failed for want of a server
        self.until: int | None = None  # set when the writers are done: stop once there
        self.error: BaseException | None = None
        self.call = None

    def run(self) -> None:
        try:
            with h.Stubs(self.target, use_local_subchannel_pool=1) as s:
                while self.until is None or self.last < self.until:
                    self.follow(s)
        except BaseException as exc:  # raised again by the test
            self.error = exc

    def follow(self, s: h.Stubs) -> None:
        self.calls += 1
        self.call = s.opt_outs.Changes(pb.ChangesRequest(since=self.last,
                                                         max_batch=self.max_batch), timeout=60)
        stop_after = self.rng.randint(1, 6) if self.cut else None
        try:
            for got, message in enumerate(self.call, 1):
                assert message.changes, "an empty message"
                self.changes += message.changes
                self.sizes.append(len(message.changes))
                self.last = message.changes[-1].sequence
                if got == stop_after or (self.until is not None and self.last >= self.until):
                    self.call.cancel()
                    return
        except grpc.RpcError as exc:
            if exc.code() == Code.UNAVAILABLE:  # the server is gone: ask again soon
                self.unavailable += 1
                time.sleep(0.1)
            elif exc.code() != Code.CANCELLED:
                raise
            return
        raise AssertionError("a live stream ended by itself")

    def finish(self, until: int, timeout: float = 30.0) -> None:
        self.until = until
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            if self.last >= until and self.call is not None:
                self.call.cancel()  # it may be waiting for an event that will not come
            self.join(0.05)
        assert not self.is_alive(), f"{self.name} stuck at {self.last} of {until}"
        if self.error is not None:
            raise self.error


def write_on(target: str, stop: threading.Event, acked: list[int], seed: int) -> None:
    rng = random.Random(seed)
    with h.Stubs(target, use_local_subchannel_pool=1) as s:
        while not stop.is_set():
            k = rng.choice((1, 1, 2, 5, 40))
            try:
                ack = s.opt_outs.WriteBatch(pb.WriteBatchRequest(
                    events=random_events(rng, k)), timeout=T)
            except grpc.RpcError as exc:  # the server was killed
                assert exc.code() == Code.UNAVAILABLE, exc
                return
            acked.append(ack.sequence)
            time.sleep(rng.random() * 0.004)


def checkpoint_on(data, stop: threading.Event, count: list[int]) -> None:
    while not stop.wait(0.4):
        done = subprocess.run([sys.executable, "-m", "anning.cli", "checkpoint", "--data",
                               str(data)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        count[0] += bool(done.stdout.strip())


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    h.write_snapshot(data, [8613500000001], ["*"], ["all"], {"shop": "e1"}, NOW_MS - 3_600_000)
    server = h.Server(data, workers=2, demo=False, max_batch=100,
                      extra_args=["--checkpoint-bytes", "4096"])
    with h.running(server):
        with h.Stubs(server.target) as s:
            rng = random.Random(7)
            for _ in range(PRE // 100):
                s.opt_outs.WriteBatch(pb.WriteBatchRequest(events=random_events(rng, 100)),
                                      timeout=T)
        yield server


def test_followers_see_every_event_once_in_order_while_writes_go_on(server):
    """Followers from 0, from the middle and from the end (live only), with the server's batch
    size and small ones, and one that disconnects every few messages and resumes, all while
    two writer threads write through both workers and `anning checkpoint` retires the log: each
    gets exactly the events after its start, in order, as the export has them."""
    stop, stop_checkpoints, acked, checkpoints = threading.Event(), threading.Event(), [], [0]
    followers = [Follower(server.target, 0), Follower(server.target, PRE // 2 + 7, 100),
                 Follower(server.target, PRE, 1), Follower(server.target, 0, 37, cut=True),
                 Follower(server.target, PRE - 1, 0, cut=True, seed=1)]
    threads = [threading.Thread(target=write_on, args=(server.target, stop, acked, w))
               for w in range(2)]
    threads.append(threading.Thread(target=checkpoint_on,
                                    args=(server.data, stop_checkpoints, checkpoints)))
    for t in [*followers[:3], *threads, *followers[3:]]:
        t.start()
    time.sleep(3.0)
    stop.set()
    for t in threads[:2]:
        t.join(T + 5)
    time.sleep(0.8)  # a checkpoint or two after the last write
    stop_checkpoints.set()
    threads[2].join(60)
    with h.Stubs(server.target) as s:
        last = s.admin.Status(pb.StatusRequest(), timeout=T).last_sequence
    assert last == max(acked) > PRE + 200, (last, len(acked))
    for f in followers:
        f.finish(last)
    rows = exported(server.data)
    assert [sequence_of(r) for r in rows] == sorted(sequence_of(r) for r in rows)
    assert {sequence_of(r) for r in rows} == set(range(1, last + 1))
    for f in followers:
        assert [c.sequence for c in f.changes] == list(range(f.since + 1, last + 1)), f.name
        assert [r for c in f.changes for r in rows_of(c)] == \
            [r for r in rows if sequence_of(r) > f.since], f.name
    assert max(followers[0].sizes) > 100  # the backlog comes many events a message
    assert max(followers[1].sizes) == 100 and set(followers[2].sizes) == {1}
    assert followers[3].calls > 10 and max(followers[3].sizes) <= 37
    assert checkpoints[0] >= 3, "the log was hardly retired under the followers"


def test_a_follower_resumes_across_a_kill_of_the_server(server):
    """A live follower whose server is killed (kill -9) mid-stream asks again, from its last
    sequence, once the server is back: with the writes before, during and after, it has every
    event on disk exactly once, in order."""
    follower = Follower(server.target, 10, 50)
    follower.start()
    stop, acked = threading.Event(), []
    writer = threading.Thread(target=write_on, args=(server.target, stop, acked, 3))
    writer.start()
    time.sleep(1.0)
    server.sigkill()
    writer.join(T + 5)  # its call failed: the server is gone
    assert not writer.is_alive()
    time.sleep(0.3)
    server.serve()
    stop2, acked2 = threading.Event(), []
    writer = threading.Thread(target=write_on, args=(server.target, stop2, acked2, 4))
    writer.start()
    time.sleep(1.0)
    stop2.set()
    writer.join(T + 5)
    with h.Stubs(server.target) as s:
        last = s.admin.Status(pb.StatusRequest(), timeout=T).last_sequence
    assert last == max(acked2) and acked and min(acked2) > max(acked)
    follower.finish(last)
    assert follower.calls >= 2 and follower.unavailable >= 1
    assert [c.sequence for c in follower.changes] == list(range(11, last + 1))
    assert [r for c in follower.changes for r in rows_of(c)] == exported(server.data, 10)


def test_until_ends_the_stream(server):
    """`until` ends the stream once the events up to it that there are have gone out: exactly
    since+1..until, or up to the last there is; an `all` opt-out says `all`, as the export."""
    with h.Stubs(server.target) as s:
        def changes(since: int, until: int, max_batch: int = 0) -> list[list[int]]:
            call = s.opt_outs.Changes(pb.ChangesRequest(since=since, until=until,
                                                        max_batch=max_batch), timeout=T)
            messages = [[c.sequence for c in m.changes] for m in call]
            assert call.code() == Code.OK
            return messages

        assert [q for m in changes(10, 50) for q in m] == list(range(11, 51))
        assert changes(10, 50, 15) == [list(range(a, min(a + 15, 51))) for a in range(11, 51, 15)]
        assert changes(0, 1) == [[1]]
        assert [q for m in changes(PRE - 5, PRE + 1000) for q in m] == \
            list(range(PRE - 4, PRE + 1))
        assert changes(PRE, PRE + 10) == []
        assert changes(PRE + 50, PRE + 60) == []
        ack = s.opt_outs.OptOut(pb.OptOutRequest(number="13900000001", scope="shop",
                                                 category="all"), timeout=T)
        (message,) = s.opt_outs.Changes(pb.ChangesRequest(since=ack.sequence - 1,
                                                          until=ack.sequence), timeout=T)
        (change,) = message.changes
        assert (change.number, change.sender, list(change.categories)) == \
            ("8613900000001", "shop", ["all"]), change
        assert rows_of(change) == exported(server.data, ack.sequence - 1)

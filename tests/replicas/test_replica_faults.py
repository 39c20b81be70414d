"""Faults, failing closed (SPEC §6, §8): NATS nodes and replicas killed under continuous writes
lose no acknowledged write and leave every replica answering the same; without a quorum,
writes answer UNAVAILABLE while checks go on; each on a cluster of its own."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from anning.testing import server as h
from anning.testing.nats import NatsCluster, eventually, replica
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode


@pytest.fixture
def own_cluster(tmp_path) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path / "nats")
    nats.start()
    try:
        nats.wait_ready()
        yield nats
    finally:
        nats.stop()


@pytest.fixture
def three(own_cluster, tmp_path) -> Iterator[list[h.Server]]:
    servers = [replica(tmp_path, name, own_cluster, "FAULTS") for name in ("a", "b", "c")]
    for s in servers:
        s.start()
    try:
        for s in servers:
            s.wait_health(h.SERVING, 60)
        yield servers
    finally:
        for s in servers:
            s.kill()


class Writers:
    """Callers writing opt-outs of numbers of their own through every replica in turn, each
    acknowledged write kept with its sequence; failures (UNAVAILABLE while a node or a replica
    is down) are not acknowledgements and are counted."""

    def __init__(self, servers: list[h.Server], callers: int = 4) -> None:
        self.servers = servers
        self.acked: dict[str, int] = {}
        self.tried: list[str] = []
        self.failed: dict[str, int] = {}
        self.ack_times: list[float] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.numbers = itertools.count(10_000_000)  # 1391xxxxxxx
        self.threads = [threading.Thread(target=self.run, args=(k,)) for k in range(callers)]

    def run(self, k: int) -> None:
        channels = {}
        try:
            for i in itertools.count():
                if self.stop.is_set():
                    return
                server = self.servers[(i + k) % len(self.servers)]
                if server.target not in channels:
                    channels[server.target] = h.Stubs(server.target)
                with self.lock:
                    number = f"139{next(self.numbers):08d}"
                    self.tried.append(number)
                try:
                    ack = channels[server.target].opt_outs.OptOut(
                        pb.OptOutRequest(number=number, scope="京东"), timeout=5)
                except grpc.RpcError as exc:
                    assert exc.code() in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED), exc
                    with self.lock:
                        self.failed[exc.code().name] = self.failed.get(exc.code().name, 0) + 1
                    time.sleep(0.02)
                    continue
                with self.lock:
                    self.acked[number] = ack.sequence
                    self.ack_times.append(time.monotonic())
        finally:
            for stubs in channels.values():
                stubs.close()

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def answers(server: h.Server, numbers: list[str]) -> list[int]:
    with h.Stubs(server.target) as s:
        out: list[int] = []
        for i in range(0, len(numbers), 1000):
            reply = s.suppression.CheckBatch(pb.CheckBatchRequest(checks=[
                pb.CheckRequest(sender="京东", number=n) for n in numbers[i:i + 1000]]),
                timeout=h.T)
            out += [r.scope for r in reply.results]
        return out


@pytest.mark.parametrize("which", ["leader", "follower"])
def test_nodes_and_a_replica_killed_under_writes_lose_nothing(own_cluster, three, which):
    a, b, c = three
    with Writers(three) as writers:
        eventually(lambda: len(writers.acked) > 200, 30)
        leader = own_cluster.stream_leader("FAULTS")
        victim = leader if which == "leader" else next(
            n.name for n in own_cluster.nodes if n.name != leader)
        own_cluster.kill(victim)
        killed_at = time.monotonic()
        c.sigkill()
        eventually(lambda: any(t > killed_at for t in writers.ack_times), 30)
        time.sleep(1.0)
        own_cluster.start(victim)
        c.start()
        c.wait_health(h.SERVING, 60)
        before = len(writers.acked)
        eventually(lambda: len(writers.acked) > before + 200, 30)
    assert writers.acked, "no write was acknowledged"
    acked = sorted(writers.acked)
    # every acknowledged write is in force on every replica (0 lost)...
    for server in (a, b, c):
        eventually(lambda server=server: all(
            s == pb.SCOPE_SENDER for s in answers(server, acked)), 30)
    # ...and all three answer alike on every key written, acknowledged or not
    eventually(lambda: answers(a, writers.tried) == answers(b, writers.tried)
               == answers(c, writers.tried), 30)
    sequences = sorted(writers.acked.values())
    assert len(set(sequences)) == len(sequences), "two acknowledgements share a sequence"
    for server in (a, b, c):
        assert server.stop() == 0
        h.assert_clean_log(server)


def test_without_a_quorum_writes_are_unavailable_and_checks_go_on(own_cluster, three):
    a, b, _ = three
    with h.Stubs(a.target) as s:
        s.opt_outs.OptOut(pb.OptOutRequest(number="13900000041", scope="京东"), timeout=h.T)
        down = [n.name for n in own_cluster.nodes][:2]
        for name in down:
            own_cluster.kill(name)
        error = h.rpc_error(s.opt_outs.OptOut, pb.OptOutRequest(number="13900000042",
                                                                scope="京东"), timeout=h.T)
        assert error.code() == Code.UNAVAILABLE and "not written" in error.details()
        # checks are answered from what the replica has, writes' health says so
        reply = s.suppression.Check(pb.CheckRequest(sender="京东", number="13900000041"),
                                    timeout=h.T)
        assert reply.scope == pb.SCOPE_SENDER
        eventually(lambda: a.health("anning.v1.OptOuts") == h.NOT_SERVING, 15)
        assert a.health("anning.v1.Suppression") == h.SERVING
        status = s.admin.Status(pb.StatusRequest(), timeout=h.T)
        assert not status.writes_ok and status.writes_error
        own_cluster.start(down[0])
        eventually(lambda: code_of_opt_out(s) == Code.OK, 60, step=0.2)
        eventually(lambda: a.health("anning.v1.OptOuts") == h.SERVING, 15)
    eventually(lambda: b.health("anning.v1.OptOuts") == h.SERVING, 15)
    own_cluster.start(down[1])


def code_of_opt_out(s: h.Stubs) -> Code:
    return h.code_of(s.opt_outs.OptOut, pb.OptOutRequest(number="13900000043", scope="京东"),
                     timeout=5)


def test_a_replica_killed_mid_write_comes_back_with_its_acknowledged_writes(own_cluster,
                                                                            three):
    a, _, _ = three
    with h.Stubs(a.target) as s:
        acks = [s.opt_outs.OptOut(pb.OptOutRequest(number=f"1390000005{i}", scope="淘宝"),
                                  timeout=h.T).sequence for i in range(5)]
    a.sigkill()
    a.start()
    a.wait_health(h.SERVING, 60)
    assert answers(a, [f"1390000005{i}" for i in range(5)]) == [pb.SCOPE_NONE] * 5  # 京东
    with h.Stubs(a.target) as s:
        got = s.suppression.CheckBatch(pb.CheckBatchRequest(checks=[
            pb.CheckRequest(sender="淘宝", number=f"1390000005{i}") for i in range(5)]),
            timeout=h.T)
        assert [r.scope for r in got.results] == [pb.SCOPE_SENDER] * 5
        assert s.admin.Status(pb.StatusRequest(), timeout=h.T).last_sequence >= max(acks)


def test_a_replica_started_without_nats_answers_checks_and_writes_when_it_comes(
        own_cluster, tmp_path):
    for node in own_cluster.nodes:
        own_cluster.kill(node.name)
    a = replica(tmp_path, "a", own_cluster, "LATE")
    a.start()
    try:
        a.wait_health(h.SERVING, 60)  # checks: from the list it has
        assert a.health("anning.v1.OptOuts") == h.NOT_SERVING
        with h.Stubs(a.target) as s:
            reply = s.suppression.Check(pb.CheckRequest(sender="京东", number="13800000006"),
                                        timeout=h.T)
            assert reply.scope == pb.SCOPE_SENDER
            assert h.code_of(s.opt_outs.OptOut, pb.OptOutRequest(
                number="13900000061", scope="京东"), timeout=h.T) == Code.UNAVAILABLE
            own_cluster.start()
            eventually(lambda: code_of_opt_out(s) == Code.OK, 60, step=0.2)
            eventually(lambda: a.health("anning.v1.OptOuts") == h.SERVING, 15)
            assert "stream LATE" in s.admin.Status(pb.StatusRequest(), timeout=h.T).event_log
        assert a.stop() == 0
        h.assert_clean_log(a)
    finally:
        a.kill()

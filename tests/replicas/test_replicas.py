"""Three replicas on one stream: a write on any of them is seen by a check on each of the
others (every kind of write), the stream's sequence is the sequence, and once idle every
replica reports the same position."""

from __future__ import annotations

import subprocess
import sys

import pytest

from anning.client import Client
from anning.testing import server as h
from anning.testing.nats import eventually, replica
from anning.v1 import anning_pb2 as pb

STREAM = "BASIC"


@pytest.fixture(scope="module")
def replicas(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    servers = [replica(root, name, cluster, STREAM) for name in ("a", "b", "c")]
    for s in servers:
        s.start()
    try:
        for s in servers:
            s.wait_health(h.SERVING, 60)
        clients = [h.recorded_client(s.target, timeout=h.T) for s in servers]
        yield servers, clients
        for c in clients:
            c.close()
        for s in servers:
            assert s.stop() == 0, s.output()
            h.assert_clean_log(s)
    finally:
        for s in servers:
            s.kill()


def seen_everywhere(clients: list[Client], sender: str, number: str, scope: str,
                    timeout: float = 10.0) -> None:
    for c in clients:
        eventually(lambda c=c: c.check(sender, number).scope == scope, timeout)


def test_an_opt_out_on_any_replica_is_seen_on_the_others(replicas):
    _, clients = replicas
    for i, writer in enumerate(clients):
        number = f"1390000000{i}"
        ack = writer.opt_out(number, "京东")
        # the replica that took it answers from it at once (SPEC §6)...
        assert writer.check("京东", number).scope == "SENDER"
        # ...and the others as soon as they have read the stream
        seen_everywhere(clients, "京东", number, "SENDER")
        assert ack.sequence > 0


def test_opt_in_reassign_batch_and_reply_travel_too(replicas):
    _, (a, b, c) = replicas
    b.opt_out("13900000011", "淘宝")
    seen_everywhere([a, c], "淘宝", "13900000011", "SENDER")
    c.opt_in("13900000011", "淘宝")
    seen_everywhere([a, b], "淘宝", "13900000011", "NONE")

    a.opt_out("13900000012", "*")
    seen_everywhere([b, c], "anyone", "13900000012", "GLOBAL")
    b.reassign("13900000012")
    seen_everywhere([a, c], "anyone", "13900000012", "NONE")

    events = [pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number=f"139001{i:05d}", scope="京东")
              for i in range(500)]
    ack = c.write_batch(events)
    assert ack.events == 500
    for client in (a, b):
        eventually(lambda client=client: all(
            r.scope == "SENDER"
            for r in client.check_batch([("京东", e.number) for e in events])))

    reply = a.report_reply("京东", "13900000013", "退订")
    assert reply.recognised and reply.scope == "entity:京东集团"
    seen_everywhere([b, c], "京东超市", "13900000013", "ENTITY")


def test_a_batch_takes_consecutive_sequences_of_the_stream(replicas):
    servers, (a, b, _) = replicas
    first = a.opt_out("13900000021", "京东").sequence
    ack = b.write_batch([pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number=f"139002{i:05d}",
                                       scope="淘宝") for i in range(100)])
    after = a.opt_out("13900000022", "京东").sequence
    assert first < ack.sequence - 99 and ack.sequence < after  # no write inside the batch
    # the change feed of another replica gives the batch's 100 events at those sequences
    changes = list(h.Stubs(servers[0].target).opt_outs.Changes(
        pb.ChangesRequest(since=ack.sequence - 100, until=ack.sequence), timeout=h.T))
    got = [(ch.sequence, ch.number) for resp in changes for ch in resp.changes]
    assert [s for s, _ in got] == list(range(ack.sequence - 99, ack.sequence + 1))
    assert [n for _, n in got] == [f"86139002{i:05d}" for i in range(100)]


def test_idle_replicas_report_the_same_position(replicas):
    _, clients = replicas
    last = clients[0].opt_out("13900000031", "京东").sequence

    def same() -> bool:
        statuses = [c.status() for c in clients]
        return all(s.last_sequence == last and s.current and s.replica_lag_events == 0
                   and s.events_through == statuses[0].events_through for s in statuses)

    eventually(same)
    status = clients[1].status()
    assert f"stream {STREAM}" in status.event_log and status.stale == ""


def test_nats_config_writes_a_cluster_that_starts(tmp_path):
    out = subprocess.run([sys.executable, "-m", "anning.cli", "nats-config", "--nodes", "3",
                          "--dir", str(tmp_path / "c"), "--client-port", "4300"],
                         capture_output=True, text=True, check=True)
    for i in (1, 2, 3):
        text = (tmp_path / "c" / f"n{i}.conf").read_text()
        assert "sync_interval: always" in text and f"127.0.0.1:{4300 + i - 1}" in text
    assert "anning serve --nats nats://127.0.0.1:4300,nats://127.0.0.1:4301," in out.stdout
    bad = subprocess.run([sys.executable, "-m", "anning.cli", "nats-config", "--nodes", "0",
                          "--dir", str(tmp_path / "d")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--nodes: 0" in bad.stderr


def test_a_bad_nats_url_is_named_at_start(tmp_path):
    h.write_main_snapshot(tmp_path / "d")
    out = subprocess.run([sys.executable, "-m", "anning.cli", "serve", "--data",
                          str(tmp_path / "d"), "--nats", "http://x:1"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "'http://x:1' is not a NATS URL" in out.stderr
    out = subprocess.run([sys.executable, "-m", "anning.cli", "serve", "--data",
                          str(tmp_path / "d"), "--nats", "nats://127.0.0.1:1", "--workers",
                          "2"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "a replica is one worker" in out.stderr

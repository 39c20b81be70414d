"""A replica's position in the stream (SPEC §8): one stopped while 100,000 events are written
catches up on restart, from where its checkpoint ends; one whose checkpoint is older than the
stream's first event, or whose stream was made again, says so and answers nothing as if
current until a snapshot load covers the gap; each replica loads the same nightly file with the
stream's sequence as its watermark and all converge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from anning.testing import server as h
from anning.testing.nats import NatsCluster, eventually, replica
from anning.v1 import anning_pb2 as pb

Code = grpc.StatusCode


def batches(start: int, count: int, scope: str = "京东") -> Iterator[pb.WriteBatchRequest]:
    for first in range(start, start + count, 1000):
        yield pb.WriteBatchRequest(events=[
            pb.WriteEvent(kind=pb.EVENT_KIND_OPT_OUT, number=f"137{n:08d}", scope=scope)
            for n in range(first, min(first + 1000, start + count))])


def replica_current(server: h.Server) -> float:
    """The replica's anning_replica_current, as Prometheus scrapes it."""
    assert server.metrics_port
    for line in h.metrics_text(server.metrics_port).splitlines():
        if line.startswith("anning_replica_current "):
            return float(line.split()[1])
    raise AssertionError("anning_replica_current is not exported")


def write(server: h.Server, start: int, count: int) -> int:
    with h.Stubs(server.target) as s:
        last = 0
        for request in batches(start, count):
            last = s.opt_outs.WriteBatch(request, timeout=30).sequence
        return last


def scopes(server: h.Server, numbers: list[int], sender: str = "京东") -> list[int]:
    with h.Stubs(server.target) as s:
        reply = s.suppression.CheckBatch(pb.CheckBatchRequest(checks=[
            pb.CheckRequest(sender=sender, number=f"137{n:08d}") for n in numbers]),
            timeout=h.T)
        return [r.scope for r in reply.results]


def status(server: h.Server) -> pb.StatusReply:
    with h.Stubs(server.target) as s:
        return s.admin.Status(pb.StatusRequest(), timeout=h.T)


def nats_stream(cluster: NatsCluster, stream: str, action: str,
                **changes: Any) -> dict[str, Any]:
    """Change the stream from outside, with nats-py (an operator's tool): `limit` its kept
    messages, or `recreate` it (deleted and made again with the same settings)."""
    import nats

    async def run() -> dict[str, Any]:
        nc = await nats.connect(servers=cluster.urls.split(","))
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            config = info.config
            if action == "limit":
                for key, value in changes.items():
                    setattr(config, key, value)
                await js.update_stream(config)
            elif action == "recreate":
                await js.delete_stream(stream)
                await js.add_stream(config)
            info = await js.stream_info(stream)
            return {"first": info.state.first_seq, "last": info.state.last_seq}
        finally:
            await nc.close()

    return asyncio.run(run())


def main_list_csv(directory: Path) -> tuple[Path, Path]:
    """The main list of the service tests as the nightly CSV and its entities file."""
    rows = ["number,sender,category"] + [f"{n},{s},{c}" for n, s, c in h.SNAPSHOT]
    csv = directory / "nightly.csv"
    csv.write_text("\n".join(rows) + "\n")
    entities = directory / "entities.csv"
    entities.write_text("sender,entity\n" + "".join(f"{s},{e}\n"
                                                     for s, e in h.ENTITIES.items()))
    return csv, entities


def test_a_replica_away_while_100k_events_are_written_catches_up(cluster, tmp_path):
    a, c = (replica(tmp_path, name, cluster, "CATCHUP") for name in ("a", "c"))
    with h.running(a), h.running(c):
        first = write(a, 0, 1000)
        eventually(lambda: status(c).last_sequence == first)
        c.stop()
        last = write(a, 1000, 100_000)
        assert last == first + 100_000
        c.start()
        c.wait_health(h.SERVING, 120)
        assert status(c).last_sequence == last  # caught up before it served
        sample = list(range(0, 101_000, 997))
        assert scopes(c, sample) == [pb.SCOPE_SENDER] * len(sample)
        assert "caught up 100000 events" in c.output()
        assert status(a).last_sequence == status(c).last_sequence


def test_a_checkpoint_older_than_the_stream_needs_a_load(cluster, tmp_path):
    a, c = (replica(tmp_path, name, cluster, "EXPIRED") for name in ("a", "c"))
    csv, entities = main_list_csv(tmp_path)
    with h.running(a):
        c.start()
        try:
            c.wait_health(h.SERVING, 60)
            seen = write(a, 0, 10)
            eventually(lambda: status(c).last_sequence == seen)
            assert c.stop() == 0
            # the operator caps the stream: what c has not read goes before it comes back
            nats_stream(cluster, "EXPIRED", "limit", max_msgs=1000)
            last = write(a, 10, 3000)
            state = nats_stream(cluster, "EXPIRED", "limit")
            assert state["first"] == last - 999
            c.start()
            c.wait_health(h.NOT_SERVING, 60)
            eventually(lambda: "position lost" in status(c).stale, 15)
            stale = status(c).stale
            assert f"--events-through {state['first'] - 1}" in stale, stale
            assert not status(c).current
            assert c.health("anning.v1.Suppression") == h.NOT_SERVING
            # what the alert AnningReplicaNotCurrent (deploy/prometheus) watches
            eventually(lambda: replica_current(c) == 0.0)
            with h.Stubs(c.target) as s:
                error = h.rpc_error(s.suppression.Check, pb.CheckRequest(
                    sender="京东", number="13700000005"), timeout=h.T)
                assert error.code() == Code.UNAVAILABLE and "position" in error.details()
                error = h.rpc_error(s.opt_outs.OptOut, pb.OptOutRequest(
                    number="13700000005", scope="京东"), timeout=h.T)
                assert error.code() == Code.UNAVAILABLE
                # a load that covers the gap: the stream's events after it apply again
                s.admin.LoadSnapshot(pb.LoadSnapshotRequest(
                    paths=[str(csv)], entities=str(entities),
                    events_through=state["first"] - 1), timeout=60)
            c.wait_health(h.SERVING, 60)
            assert status(c).stale == ""
            eventually(lambda: status(c).last_sequence == last and
                       status(c).replica_lag_events == 0)
            eventually(lambda: replica_current(c) == 1.0)
            kept = list(range(3010 - 1000, 3010, 7))
            assert scopes(c, kept) == [pb.SCOPE_SENDER] * len(kept)
            assert scopes(c, [5]) == [pb.SCOPE_NONE]  # the load declared it has taken it in
            assert write(c, 5000, 1) == last + 1  # and it writes again
        finally:
            c.kill()


def test_a_stream_made_again_is_not_served_as_if_nothing_happened(cluster, tmp_path):
    a = replica(tmp_path, "a", cluster, "AGAIN")
    with h.running(a):
        write(a, 0, 20)
    nats_stream(cluster, "AGAIN", "recreate")
    a.start()
    try:
        a.wait_health(h.NOT_SERVING, 60)
        eventually(lambda: "made again" in status(a).stale, 15)
        with h.Stubs(a.target) as s:
            error = h.rpc_error(s.suppression.Check, pb.CheckRequest(
                sender="京东", number="13700000005"), timeout=h.T)
            assert error.code() == Code.UNAVAILABLE
        assert "made again" in a.output()
    finally:
        a.kill()


def test_every_replica_loads_the_nightly_file_and_converges(cluster, tmp_path):
    a, b, c = (replica(tmp_path, name, cluster, "NIGHTLY") for name in ("a", "b", "c"))
    csv, entities = main_list_csv(tmp_path)
    with h.running(a), h.running(b), h.running(c):
        write(a, 0, 100)
        watermark = write(b, 100, 50)
        write(c, 150, 30)  # past the watermark: stays on top of the new list
        for server in (a, b, c):
            eventually(lambda server=server: status(server).last_sequence == watermark + 30
                       and status(server).replica_lag_events == 0)
            with h.Stubs(server.target) as s:
                s.admin.LoadSnapshot(pb.LoadSnapshotRequest(
                    paths=[str(csv)], entities=str(entities), events_through=watermark),
                    timeout=60)
        answers = [scopes(server, list(range(180))) for server in (a, b, c)]
        assert answers[0] == answers[1] == answers[2]
        assert answers[0] == [pb.SCOPE_NONE] * 150 + [pb.SCOPE_SENDER] * 30
        positions = {(st.events_through, st.last_sequence, st.folded_through)
                     for st in map(status, (a, b, c))}
        assert positions == {(watermark, watermark + 30, watermark + 30)}

"""The stream's own figures, the peers of the replica benchmark: raw JetStream publishes and
deliveries on the same cluster, with no anning in between.

They speak NATS through anning's own small client (`anning.storage.nats.client`, the one the
replicas use: a thread reading each connection, deliveries handed on by the batch), or nats-py
where said, and make the same requests a replica makes (`anning.storage.nats.source`): a
message an event (`encode_event`, the same bytes), `Nats-Msg-Id` on each, a write of several
events one atomic batch (`Nats-Batch-Id` / `-Sequence` / `-Commit`), a push consumer with flow
control and idle heartbeats, acknowledgements none.

- `DeliveryProbe`: a publish on one connection, its delivery to a push consumer on another
  (the floor of write-to-visible);
- `task_raw_batches`: atomic batches from several threads, each its own connection (the
  ceiling of WriteBatch);
- `task_raw_read`: a consumer reading a range of the stream, counting messages without
  decoding them (the ceiling of a catch-up), with our client or nats-py's ordered consumer;
- `RawWriter`: a thread publishing one event at a time, as long as it is let, counting failures
  (the stream's own time to recover from a lost leader).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from anning._stream import DATA
from anning.storage.nats.client import (
    Connection,
    control_status,
    encode_publish,
    header_value,
    parse_urls,
)
from anning.storage.nats.stream import NANOS, StreamSettings, api_request, ensure_stream

__all__ = ["DeliveryProbe", "RawWriter", "batch_bytes", "connect", "make_stream",
           "task_raw_batches", "task_raw_read"]

REQUEST_SECONDS = 2.0  # one publish attempt (the replicas' StreamSettings.request_seconds)


def connect(urls: str, name: str) -> Connection:
    connection = Connection(parse_urls(urls), name)
    connection.connect()
    return connection


def make_stream(urls: str, name: str) -> str:
    """A stream with anning's settings (R=3, file storage, atomic batches...) beside anning's
    own, for the peers that must not write events into it; its subject."""
    settings = StreamSettings(urls, stream=name)
    connection = connect(urls, "bench-setup")
    try:
        ensure_stream(connection, settings)
    finally:
        connection.close()
    return settings.subject


class PushConsumer:
    """A push consumer of `stream` from `start` (0: new messages only), as a replica makes it,
    read by the same compiled scanner (`Connection.subscribe_bulk`);
    `on_messages(stream_sequences, now_ns)` gets the sequences of each run of deliveries,
    control messages answered here."""

    def __init__(self, connection: Connection, stream: str, subject: str, start: int,
                 on_messages: Any) -> None:
        self.connection = connection
        inbox = connection.new_inbox()
        self.sid = connection.subscribe_bulk(inbox, self._deliveries)
        self.on_messages = on_messages
        config = {
            "deliver_subject": inbox, "ack_policy": "none", "replay_policy": "instant",
            "flow_control": True, "idle_heartbeat": NANOS, "mem_storage": True,
            "num_replicas": 1, "filter_subject": subject, "inactive_threshold": 30 * NANOS,
            **({"deliver_policy": "by_start_sequence", "opt_start_seq": start} if start
               else {"deliver_policy": "new"})}
        answer = api_request(connection, f"$JS.API.CONSUMER.CREATE.{stream}",
                             {"stream_name": stream, "config": config}, 10.0)
        if answer.get("error"):
            raise RuntimeError(f"consumer of {stream}: {answer['error']}")
        self.stream, self.name = stream, str(answer.get("name", ""))

    def _deliveries(self, buf: bytearray, run: dict[str, npt.NDArray[Any]]) -> None:
        now = time.perf_counter_ns()
        kinds = run["kind"]
        for row in np.flatnonzero(kinds != DATA).tolist():  # flow control, heartbeats
            off, length = run["header"][row].tolist()
            headers = bytes(buf[off:off + length])
            at, size = run["reply"][row].tolist()
            reply = bytes(buf[at:at + size])
            if "FlowControl" in control_status(headers)[1] and reply:
                self.connection.publish(reply.decode(), b"")
            stalled = header_value(headers, b"Nats-Consumer-Stalled")
            if stalled:
                self.connection.publish(stalled.decode(), b"")
        sequences = run["stream_sequence"][kinds == DATA]
        if len(sequences):
            self.on_messages(sequences.copy(), now)

    def close(self) -> None:
        self.connection.unsubscribe(self.sid)
        self.connection.publish(f"$JS.API.CONSUMER.DELETE.{self.stream}.{self.name}", b"")


class DeliveryProbe:
    """A raw publish of one event on one connection and its delivery to a push consumer on
    another, as replica A writes and replica B reads: (sent, acknowledged, delivered) in
    perf_counter ns."""

    def __init__(self, urls: str, stream: str, subject: str) -> None:
        self.stream, self.subject = stream, subject
        self.writer = connect(urls, "bench-probe-writer")
        self.reader = connect(urls, "bench-probe-reader")
        self.delivered: dict[int, int] = {}
        self.arrived = threading.Condition()
        self.consumer = PushConsumer(self.reader, stream, subject, 0, self._on_messages)
        self.prefix = os.urandom(4).hex()
        self.count = 0

    def _on_messages(self, sequences: npt.NDArray[np.uint64], now: int) -> None:
        with self.arrived:
            for seq in sequences.tolist():
                self.delivered[seq] = now
            self.arrived.notify_all()

    def publish(self, payload: bytes, timeout: float = 10.0) -> tuple[int, int, int]:
        self.count += 1
        sent = time.perf_counter_ns()
        reply = self.writer.request_start(self.subject, payload, {
            "Nats-Msg-Id": f"{self.prefix}.{self.count}", "Nats-Expected-Stream": self.stream,
        }).wait(REQUEST_SECONDS, "probe publish")
        acked = time.perf_counter_ns()
        ack = json.loads(reply.data)
        if reply.status or "seq" not in ack:
            raise RuntimeError(f"probe publish not acknowledged: {reply.status} {ack}")
        seq = int(ack["seq"])
        with self.arrived:
            if not self.arrived.wait_for(lambda: seq in self.delivered, timeout):
                raise RuntimeError(f"probe message {seq} not delivered in {timeout} s")
            return sent, acked, self.delivered.pop(seq)

    def close(self) -> None:
        self.consumer.close()
        self.writer.close()
        self.reader.close()


def batch_bytes(subject: str, payloads: Sequence[bytes], batch_id: str) -> tuple[bytes, bytes,
                                                                                  dict[str, str]]:
    """An atomic batch as a replica publishes one: every message but the last encoded (sent
    ahead in the same write), the last one's payload and headers (sent as the request)."""
    n = len(payloads)
    before = b"".join(encode_publish(subject, p, {
        "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i),
        "Nats-Msg-Id": f"{batch_id}.{i}"}) for i, p in enumerate(payloads[:-1], 1))
    return before, payloads[-1], {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n),
                                  "Nats-Batch-Commit": "1", "Nats-Msg-Id": f"{batch_id}.{n}"}


def task_raw_batches(urls: str, stream: str, subject: str, batches: list[list[bytes]],
                     threads: int, start_at: float, seconds: float, warm: float,
                     readers: int = 0) -> dict:
    """Closed loop of atomic batches from `threads` threads, each its own connection: events
    a second, each batch credited by its overlap with the window [start_at + warm,
    + seconds] (as benchmarks.lib.loadgen.task_closed credits calls). With `readers`, as
    many push consumers (each its own connection, as each replica has) read every message
    published meanwhile; each must have them all at the end."""
    reader_connections = [connect(urls, f"bench-reader-{r}") for r in range(readers)]
    read = [0] * readers

    def counter(r: int) -> Any:
        def on_messages(sequences: npt.NDArray[np.uint64], now: int) -> None:
            read[r] += len(sequences)
        return on_messages

    consumers = [PushConsumer(c, stream, subject, 0, counter(r))
                 for r, c in enumerate(reader_connections)]
    connections = [connect(urls, f"bench-batches-{t}") for t in range(threads)]
    w0 = start_at + warm
    w1 = w0 + seconds
    credit, total = [0.0] * threads, [0] * threads
    errors: list[str] = []
    prefix = os.urandom(4).hex()

    def loop(t: int) -> None:
        connection, k = connections[t], t
        while time.time() < start_at:
            time.sleep(0.001)
        while (sent := time.time()) < w1 and len(errors) <= 10:
            payloads = batches[k % len(batches)]
            before, last, headers = batch_bytes(subject, payloads, f"{prefix}{t}x{k}")
            try:
                reply = connection.request_start(subject, last, headers, before=before).wait(
                    REQUEST_SECONDS * 5, "batch")
                ack = json.loads(reply.data)
                if reply.status or ack.get("error") or int(ack.get("count", 0)) != len(
                        payloads) or ack.get("stream") != stream:
                    errors.append(f"batch not acknowledged: {reply.status} {ack}")
                    continue
            except Exception as exc:
                errors.append(repr(exc))
                continue
            done = time.time()
            if (overlap := min(done, w1) - max(sent, w0)) > 0:
                credit[t] += len(payloads) * overlap / max(done - sent, 1e-9)
            total[t] += 1
            k += threads

    cpu0 = time.process_time()
    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    for c in connections:
        c.close()
    published = sum(total) * len(batches[0])
    deadline = time.monotonic() + 60
    while min(read, default=published) < published and time.monotonic() < deadline:
        time.sleep(0.01)
    if min(read, default=published) != published:
        errors.append(f"{published:,} messages acknowledged, the readers got {read}")
    for consumer, connection in zip(consumers, reader_connections, strict=True):
        consumer.close()
        connection.close()
    return {"calls": sum(total), "rate": sum(credit) / seconds, "wrong": 0, "errors": errors,
            "cpu": time.process_time() - cpu0, "pid": os.getpid()}


def task_raw_read(urls: str, stream: str, subject: str, first: int, count: int,
                  how: str, timeout: float) -> dict:
    """Read messages first..first+count-1 of the stream without decoding them: seconds from
    asking for the consumer to the last message, and messages a second. `how`: "bulk" (our
    client's bulk subscription, as a replica reads) or "nats-py" (its ordered consumer)."""
    if how == "nats-py":
        return asyncio.run(_read_nats_py(urls, subject, first, count, timeout))
    connection = connect(urls, "bench-reader")
    done = threading.Event()
    state = {"n": 0, "last": 0}

    def on_messages(sequences: npt.NDArray[np.uint64], now: int) -> None:
        state["n"] += len(sequences)
        state["last"] = int(sequences[-1])
        if state["n"] >= count:
            state["t1"] = now
            done.set()

    t0 = time.perf_counter_ns()
    consumer = PushConsumer(connection, stream, subject, first, on_messages)
    ok = done.wait(timeout)
    consumer.close()
    connection.close()
    if not ok:
        return {"error": f"bulk read: {state['n']:,} of {count:,} messages in {timeout} s"}
    if state["last"] < first + count - 1:
        return {"error": f"bulk read ended at {state['last']}, not {first + count - 1}"}
    seconds = (state["t1"] - t0) / 1e9
    return {"seconds": seconds, "rate": count / seconds, "errors": [], "wrong": 0,
            "calls": count, "pid": os.getpid()}


async def _read_nats_py(urls: str, subject: str, first: int, count: int,
                        timeout: float) -> dict:
    import nats
    from nats.js.api import ConsumerConfig, DeliverPolicy

    nc = await nats.connect(servers=urls.split(","))
    done = asyncio.Event()
    state = {"n": 0, "last": 0}

    async def on_message(msg: Any) -> None:
        state["n"] += 1
        if state["n"] >= count:
            state["last"] = msg.metadata.sequence.stream
            state["t1"] = time.perf_counter_ns()
            done.set()

    try:
        t0 = time.perf_counter_ns()
        sub = await nc.jetstream().subscribe(subject, cb=on_message, ordered_consumer=True,
                                             config=ConsumerConfig(
                                                 deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                                 opt_start_seq=first))
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            return {"error": f"nats-py read: {state['n']:,} of {count:,} in {timeout} s"}
        await sub.unsubscribe()
    finally:
        await nc.close()
    if state["last"] != first + count - 1:
        return {"error": f"nats-py read ended at {state['last']}, not {first + count - 1}"}
    seconds = (state["t1"] - t0) / 1e9
    return {"seconds": seconds, "rate": count / seconds, "errors": [], "wrong": 0,
            "calls": count, "pid": os.getpid()}


class RawWriter:
    """A thread publishing one event at a time to the stream (each a message id of its own),
    as fast as acknowledgements come; a failed publish (no answer in REQUEST_SECONDS, no
    responders, an error) is counted and followed by the next after 20 ms, as the benchmark's
    anning callers do. Keeps (payload index, sent, acknowledged, sequence) in monotonic
    seconds."""

    def __init__(self, urls: str, stream: str, subject: str, payloads: list[bytes]) -> None:
        self.stream, self.subject, self.payloads = stream, subject, payloads
        self.connection = connect(urls, "bench-raw-writer")
        self.acked: list[tuple[int, float, float, int]] = []
        self.failed: dict[str, int] = {}
        self.next = 0
        self.prefix = os.urandom(4).hex()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="raw-writer", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set() and self.next < len(self.payloads):
            k, self.next = self.next, self.next + 1
            sent = time.monotonic()
            try:
                reply = self.connection.request_start(self.subject, self.payloads[k], {
                    "Nats-Msg-Id": f"{self.prefix}.{k}", "Nats-Expected-Stream": self.stream,
                }).wait(REQUEST_SECONDS, "publish")
                ack = json.loads(reply.data) if not reply.status else {}
                if reply.status or "seq" not in ack:
                    raise RuntimeError(f"status {reply.status} {ack.get('error', '')}")
            except Exception as exc:
                why = type(exc).__name__
                self.failed[why] = self.failed.get(why, 0) + 1
                time.sleep(0.02)
                continue
            self.acked.append((k, sent, time.monotonic(), int(ack["seq"])))

    def __enter__(self) -> RawWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.connection.close()

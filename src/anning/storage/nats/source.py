"""Events on a NATS JetStream stream, as an EventSource: every replica publishes its writes there
and applies the whole stream, in order, from where its local checkpoint ends (SPEC §8).

A write is one message per event (`anning.storage.nats.messages`); a write of several events is
one atomic batch, so its events take consecutive sequences, all or none. Each message carries a
`Nats-Msg-Id` of this write, so a publish retried after a lost acknowledgement is a no-op within
the stream's duplicate window. A write is acknowledged to the caller only after the stream's
acknowledgement (R=3, each node syncing to disk first) and after this replica has taken it
(the engine takes a write's events the moment `append` returns).

Each replica reads the stream through a push consumer of its own, ordered by construction: a
delivery whose consumer sequence skips one means a delivery was lost (the consumer is made again
from the last event applied); one whose stream sequence skips one means events are gone from
the stream (expired past its retention) - the replica's position is lost, said plainly, and it
answers nothing until a snapshot load covers the gap. So does a stream that was deleted and
made again (its creation time differs from the one the checkpoint names).

The local checkpoint (`events.ckpt`, the same format as the local log's) holds the events past
the serving list's watermark up to the last one applied, with the stream's name and creation
time; a restart reads it and asks the stream only for what came after.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from anning._stream import DATA
from anning.errors import AnningError, Refused, TooLarge, Unavailable
from anning.model.events import Event, EventColumns
from anning.storage.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from anning.storage.fileio import OS_IO, FileIO
from anning.storage.layout import DataDir, segment_number
from anning.storage.nats.client import (
    Connection,
    PendingReply,
    TlsFiles,
    control_status,
    encode_publish,
    header_value,
    parse_urls,
)
from anning.storage.nats.messages import BadMessage, decode_run, encode_event
from anning.storage.nats.stream import (
    NANOS,
    StreamInfo,
    StreamSettings,
    api_request,
    ensure_stream,
    stream_info,
)
from anning.storage.snapshot import snapshot_summary
from anning.storage.source import CheckpointReport, SourceCondition, Update

__all__ = ["NatsEventSource", "NatsFeed", "PositionLost"]

log = logging.getLogger("anning.nats")

BULK = 10_000  # past this many waiting, the engine takes them in bulk (catch_up)
HEARTBEAT_SECONDS = 1.0  # the consumer's idle heartbeat...
SILENT_SECONDS = 3.5  # ...and how long without one before it is made again
WATCH_SECONDS = 0.25  # how often the stream's state is asked for
FAILED_WRITE_SECONDS = 10.0  # a write not acknowledged says writes are down for so long
EVENT_BYTES = 40  # about what an event costs in a checkpoint (for min_bytes)
CHECKPOINT_SECONDS = 60.0  # new events are written down at least this often
OWN_IDS = 4096  # the ids of this process's last batches, to find one a retry says is there
OWN_HEADER = "Anning-Batch"  # on a batch's last message: the batch's id


class PositionLost(Unavailable):
    """This replica cannot go on from where it stands in the stream: it needs a snapshot load."""


@dataclass
class _Write:
    events: Sequence[Event]
    id: str
    outcome: int | Exception | None = None


class NatsEventSource:
    """The replicated log of one replica: publishes its writes, applies everyone's."""

    def __init__(self, data: DataDir, settings: StreamSettings, io: FileIO = OS_IO,
                 tls: TlsFiles | None = None, *, applied: int = 0, origin: str = "",
                 checkpoint: Checkpoint | None = None) -> None:
        settings.check()
        self.data = data
        self.settings = settings
        self.io = io
        self.tls = tls
        self.servers = parse_urls(settings.urls)
        self.origin = origin  # "nats:STREAM:created" of the stream the position is in
        self.applied = applied  # the last stream sequence taken, every one before it too
        self.known_last = applied  # the stream's last sequence, as last heard
        self.first = 0  # the stream's first sequence, as last heard
        self.leader = ""
        self.quorum = False
        self._ensured = False  # the stream checked (or made) on this connection's cluster
        self._refused = ""  # why the stream there will not do
        self._write_ok_at = 0.0  # the last write the stream acknowledged...
        self._write_failed_at = 0.0  # ...and the last it did not, and why
        self._write_error = ""
        self.lost = ""  # why the position is lost ("" while it is not)
        self.connection: Connection | None = None
        self._lock = threading.Lock()  # the fields below, and the consumer's
        self._queue: list[EventColumns] = []  # applied, not yet taken by the engine
        self._queued = 0
        self._checkpoint = checkpoint  # the one on disk, as last read or written
        self._since: list[EventColumns] = []  # applied since that checkpoint
        self._since_count = 0
        self._heard: deque[tuple[int, float]] = deque()  # (a last sequence, when heard)
        self._stream_ok_at = 0.0  # the last time the stream answered
        self._generation = 0  # of the consumer: deliveries of an older one are dropped
        self._sid = 0
        self._consumer = ""
        self._dseq = 0  # the consumer sequence of the last delivery
        self._activity = 0.0  # the last delivery or heartbeat
        self._restart = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._prefix = os.urandom(4).hex()  # of this process's message ids
        self._own_pattern = re.compile(rb"\r\n" + OWN_HEADER.encode() + rb": (" +
                                       self._prefix.encode() + rb"[0-9a-f]+)\r\n")
        self._own: OrderedDict[str, int] = OrderedDict()  # a batch's last id -> sequence
        self._own_lock = threading.Lock()
        self._checkpointing = threading.Lock()
        self._checkpointed_at = time.monotonic()

    # -- start and stop ---------------------------------------------------------------------
    def start(self) -> None:
        """Connect, check (or make) the stream, and read it from the position on, in the
        background; when NATS cannot be reached, go on trying (checks answer meanwhile)."""
        self.connection = Connection(self.servers, f"anning {os.getpid()}", self.tls,
                                     on_reconnect=self._restart.set)
        try:
            self.connection.connect()
            self._ensure()
            self._start_consumer()
        except Unavailable as exc:
            log.warning("NATS stream %s: %s; trying again in the background",
                        self.settings.stream, exc)
            self._restart.set()
        self._watcher = threading.Thread(target=self._watch, name="nats-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self.connection is not None:
            self.connection.close()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(5)

    def reopen(self) -> NatsEventSource:
        """The same position for a forked process, with a connection of its own."""
        with self._lock:
            source = NatsEventSource(self.data, self.settings, self.io, self.tls,
                                     applied=self.applied, origin=self.origin,
                                     checkpoint=self._checkpoint)
            source._since = list(self._since)
            source._since_count = self._since_count
            source.known_last = self.known_last
        source.start()
        return source

    # -- the EventSource ----------------------------------------------------------------------
    @property
    def failure(self) -> str | None:
        return f"position lost: {self.lost}" if self.lost else None

    @property
    def last_sequence(self) -> int:
        return max(self.applied, self.known_last)

    def condition(self) -> SourceCondition:
        now = time.monotonic()
        connection = self.connection
        connected = connection is not None and connection.is_connected
        stream_ok = connected and now - self._stream_ok_at < 3 * WATCH_SECONDS + \
            self.settings.request_seconds
        lag, seconds = self.lag(), self._lag_seconds(now)
        stale = ""
        if self.lost:
            stale = f"position lost: {self.lost}"
        elif lag > self.settings.max_lag_events:
            stale = f"{lag} events behind the stream (more than {self.settings.max_lag_events})"
        elif seconds > self.settings.max_lag_seconds:
            stale = f"behind the stream for {seconds:.1f} s (more than " \
                f"{self.settings.max_lag_seconds:g} s)"
        if self._refused:
            writes = self._refused
        elif not connected:
            writes = f"NATS not reachable ({connection.last_error if connection else ''})"
        elif not stream_ok:
            writes = f"stream {self.settings.stream} not answering"
        elif not self.quorum:
            writes = f"stream {self.settings.stream} has no quorum (leader " \
                f"{self.leader or 'none'})"
        elif self._write_failed_at > self._write_ok_at and \
                now - self._write_failed_at < FAILED_WRITE_SECONDS:
            writes = f"the last write was not acknowledged: {self._write_error}"
        else:
            writes = stale if self.lost else ""
        via = connection.connected_to if connected and connection is not None else "-"
        detail = f"stream {self.settings.stream} via {via}, leader {self.leader or '-'}, " \
            f"applied {self.applied} of {self.known_last}"
        return SourceCondition(writable=not writes, current=not stale,
                               writes_problem=writes, stale=stale, lost=self.lost,
                               lag_events=lag, lag_seconds=seconds, detail=detail)

    def lag(self) -> int:
        return max(0, self.known_last - self.applied)

    def recover(self) -> EventColumns:
        """The checkpoint's events, then the stream's from where it ends to the stream's end
        now (a restart's catch-up); the reader goes on from there."""
        path = self.data.checkpoint
        checkpoint = read_checkpoint(path) if path.exists() else Checkpoint.empty()
        self._refuse_local_log()
        self._checkpoint = checkpoint
        self.origin = checkpoint.origin
        floor = checkpoint.last_sequence
        if self.data.snapshot.exists():
            floor = max(floor, snapshot_summary(self.data.snapshot).folded_through)
        self.applied = self.known_last = floor
        self.start()
        target = self.known_last
        started = time.monotonic()
        while not self.lost and self.connection is not None and \
                self.connection.is_connected and self.applied < target:
            if self._stop.wait(0.01):
                break
            if time.monotonic() - self._activity > 2 * SILENT_SECONDS and \
                    time.monotonic() - started > 2 * SILENT_SECONDS:
                break  # the consumer is silent: the watcher makes it again; serve meanwhile
        if target > floor:
            seconds = time.monotonic() - started
            log.info("caught up %d events from stream %s in %.2f s (%.0f/s)",
                     self.applied - floor, self.settings.stream, seconds,
                     (self.applied - floor) / max(seconds, 1e-9))
        if self.lost:
            log.error("%s", self.failure)
        taken = self._drain()
        return EventColumns.concat([checkpoint.events, taken])

    def poll(self) -> Update:
        if self._queued > BULK:
            return Update([], behind=True)
        if not self._queued:
            return Update([])
        return Update(self._drain().events())

    def behind(self) -> bool:
        return self._queued > BULK

    def catch_up(self) -> EventColumns:
        return self._drain()

    def events_after(self, sequence: int) -> EventColumns:
        """Every event applied past `sequence` (the checkpoint's and those since)."""
        with self._lock:
            checkpoint = self._checkpoint or Checkpoint.empty()
            parts = [checkpoint.events.after(sequence),
                     *[chunk.after(sequence) for chunk in self._since]]
        return EventColumns.concat(parts)

    def feed(self, after: int) -> NatsFeed:
        return NatsFeed(self, after)

    def served(self, folded_through: int) -> None:
        """A list that holds every event up to `folded_through` serves now: a position lost
        to a gap that ends there is found again."""
        if not self.lost or folded_through < self.first - 1 or \
                self.lost.startswith("stream"):
            return
        with self._lock:
            log.warning("position found again: the list serving folds events up to %d; "
                        "reading the stream from %d", folded_through, folded_through + 1)
            self.applied = max(self.applied, folded_through)
            self.lost = ""
        self._restart.set()

    def append(self, writes: Sequence[Sequence[Event]]) -> list[int | Exception]:
        """Publish each write (one message, or one atomic batch) and wait for the stream's
        acknowledgements; each write's outcome: the sequence of its last event, or why it was
        not acknowledged (Unavailable: the caller may retry; the publish may yet have been kept,
        and then a retry is a second event)."""
        if self.lost:
            error: Exception = Unavailable(f"writes refused: {self.failure}")
            return [error for _ in writes]
        jobs = [_Write(events, f"{self._prefix}{os.urandom(8).hex()}") for events in writes]
        deadline = time.monotonic() + self.settings.write_timeout_seconds
        waiting = list(jobs)
        while waiting:
            sent = []
            for job in waiting:
                try:
                    sent.append((job, self._publish(job)))
                except AnningError as exc:
                    job.outcome = exc
            retry = []
            for job, pending in sent:
                left = max(0.001, min(self.settings.request_seconds,
                                      deadline - time.monotonic()))
                try:
                    reply = pending.wait(left, "publish")
                    if reply.status:
                        why = "no responders (no leader: no quorum?)" if reply.status == 503 \
                            else f"status {reply.status} {reply.description}"
                        raise Unavailable(f"stream {self.settings.stream}: {why}")
                    job.outcome = self._acknowledged(job, reply.data)
                except Unavailable as exc:
                    job.outcome = exc
                    retry.append(job)
                except AnningError as exc:
                    job.outcome = exc
            waiting = [job for job in retry if time.monotonic() < deadline]
            if waiting:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        outcomes: list[int | Exception] = []
        for job in jobs:
            assert job.outcome is not None
            outcomes.append(job.outcome)
            if isinstance(job.outcome, int):
                with self._lock:
                    self._heard_of(job.outcome)
                self._write_ok_at = time.monotonic()
            elif isinstance(job.outcome, Unavailable):
                self._write_failed_at = time.monotonic()
                self._write_error = str(job.outcome)
        return outcomes

    def _publish(self, job: _Write) -> PendingReply:
        connection = self.connection
        if connection is None:
            raise Unavailable("not connected to NATS")
        subject = self.settings.subject
        events = job.events
        if len(events) == 1:
            return connection.request_start(
                subject, encode_event(events[0]),
                {"Nats-Msg-Id": f"{job.id}.1", "Nats-Expected-Stream": self.settings.stream})
        n = len(events)
        before = b"".join(
            encode_publish(subject, encode_event(e), {
                "Nats-Batch-Id": job.id, "Nats-Batch-Sequence": str(i),
                "Nats-Msg-Id": f"{job.id}.{i}"})
            for i, e in enumerate(events[:-1], 1))
        return connection.request_start(
            subject, encode_event(events[-1]),
            {"Nats-Batch-Id": job.id, "Nats-Batch-Sequence": str(n), "Nats-Batch-Commit": "1",
             "Nats-Msg-Id": f"{job.id}.{n}", OWN_HEADER: job.id}, before=before)

    def _acknowledged(self, job: _Write, data: bytes) -> int:
        try:
            ack = json.loads(data)
        except ValueError:
            raise Unavailable(f"an acknowledgement that is not JSON: {data[:80]!r}") from None
        error = ack.get("error")
        n = len(job.events)
        if error:
            code = error.get("err_code")
            text = error.get("description", str(error))
            if code == 10201:  # the batch was kept by an earlier attempt: find where
                return self._own_batch(job.id)
            if code == 10199:
                raise TooLarge(f"events: a write of {n} events is more than the stream's "
                               f"atomic batch limit ({text}; nats-server jetstream.limits."
                               "batch.max_msgs)")
            raise Unavailable(f"stream {self.settings.stream}: {text}")
        if ack.get("stream") != self.settings.stream:
            raise Unavailable(f"acknowledged by stream {ack.get('stream')!r}, not "
                              f"{self.settings.stream}")
        last = int(ack["seq"])
        if n > 1 and not ack.get("duplicate") and int(ack.get("count", n)) != n:
            raise Unavailable(f"a batch of {n} acknowledged as {ack.get('count')} messages")
        return last

    def _own_batch(self, last_id: str) -> int:
        """The sequence of a batch this process published before, as its consumer saw it."""
        deadline = time.monotonic() + self.settings.write_timeout_seconds
        while time.monotonic() < deadline:
            with self._own_lock:
                if last_id in self._own:
                    return self._own[last_id]
            time.sleep(0.005)
        raise Unavailable(f"the batch {last_id} was kept, but its sequence was not seen")

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, watermark: int, min_bytes: int = 0) -> CheckpointReport | None:
        """Write the events applied past `watermark` (the checkpoint's and those since) with
        the position, when there are `min_bytes` of them; one process at a time."""
        if self.lost:
            return None
        with self._checkpointing, self.data.lock("checkpoint") as mine:
            due = self._since_count and time.monotonic() - self._checkpointed_at > \
                CHECKPOINT_SECONDS
            if not mine or (self._since_count * EVENT_BYTES < max(min_bytes, 1) and not due):
                return None
            self._checkpointed_at = time.monotonic()
            started = time.monotonic()
            with self._lock:
                since = list(self._since)
                applied = self.applied
                old = self._checkpoint or Checkpoint.empty()
            path = self.data.checkpoint
            if path.exists():  # another worker of this replica may have written one since
                on_disk = read_checkpoint(path)
                if on_disk.origin == self.origin and on_disk.last_sequence > old.last_sequence:
                    old = on_disk
            fresh = EventColumns.concat([chunk.after(old.last_sequence) for chunk in since])
            events = EventColumns.concat([old.events.after(watermark), fresh.after(watermark)])
            last = max(old.last_sequence, applied)
            checkpoint = Checkpoint(events, 0, last, max(watermark, old.watermark),
                                    self.origin)
            write_checkpoint(path, checkpoint, self.io)
            with self._lock:
                self._checkpoint = checkpoint
                self._since = [c.after(last) for c in self._since]
                self._since = [c for c in self._since if len(c)]
                self._since_count = sum(len(c) for c in self._since)
        return CheckpointReport(rows=len(events), covers=last, retired_bytes=0,
                                seconds=time.monotonic() - started)

    # -- reading the stream -------------------------------------------------------------------
    def _drain(self) -> EventColumns:
        with self._lock:
            queue, self._queue, self._queued = self._queue, [], 0
        return EventColumns.concat(queue)

    def _refuse_local_log(self) -> None:
        names = [n for n in os.listdir(self.data.path) if segment_number(n) is not None] \
            if self.data.path.exists() else []
        if names:
            raise PositionLost(
                f"{self.data.path} holds a local write log ({', '.join(sorted(names)[:3])}"
                f"{'...' if len(names) > 3 else ''}): its events are not in stream "
                f"{self.settings.stream}. Export them (anning events export), fold them into "
                "the snapshot, and start from a data directory without a log")

    def _adopt(self, info: StreamInfo) -> None:
        """Take the stream's state in; a stream made again, or one that no longer holds the
        events after the position, loses the position."""
        origin = f"nats:{self.settings.stream}:{info.created}"
        with self._lock:
            self._stream_ok_at = time.monotonic()
            self.first, self.leader, self.quorum = info.first_sequence, info.leader, \
                info.quorum
            self._heard_of(info.last_sequence)
            if not self.origin:
                if self.applied > info.last_sequence:
                    self._lose(f"the list or checkpoint folds events up to {self.applied}, "
                               f"past the stream's last ({info.last_sequence}): they are of "
                               "another log. Load a snapshot with --events-through")
                self.origin = origin
            elif self.origin != origin:
                self._lose(f"stream {self.settings.stream} was made again (created "
                           f"{info.created}; the checkpoint is of {self.origin}): its "
                           "sequences are not the ones applied here")
            elif self.applied + 1 < info.first_sequence:
                self._lose(f"the stream starts at {info.first_sequence}, after the last event "
                           f"applied here ({self.applied}): events {self.applied + 1}.."
                           f"{info.first_sequence - 1} expired. Load a snapshot with "
                           f"--events-through {info.first_sequence - 1} or later")

    def _lose(self, why: str) -> None:
        if not self.lost:
            self.lost = why
            log.error("replica position lost: %s", why)

    def _heard_of(self, last: int) -> None:
        if last > self.known_last:
            self.known_last = last
            self._heard.append((last, time.monotonic()))

    def _lag_seconds(self, now: float) -> float:
        with self._lock:
            while self._heard and self._heard[0][0] <= self.applied:
                self._heard.popleft()
            return now - self._heard[0][1] if self._heard else 0.0

    def _start_consumer(self) -> None:
        """A push consumer of the stream from the event after the position."""
        connection = self.connection
        assert connection is not None
        with self._lock:
            if self._sid:
                connection.unsubscribe(self._sid)
            self._generation += 1
            generation = self._generation
            start = self.applied + 1
            self._dseq = 0
            self._activity = time.monotonic()
        old = self._consumer
        if old:  # (it goes by itself after its inactive threshold anyway)
            with contextlib.suppress(Unavailable):
                connection.publish(f"$JS.API.CONSUMER.DELETE.{self.settings.stream}.{old}",
                                   b"")
        inbox = connection.new_inbox()
        sid = connection.subscribe_bulk(
            inbox, lambda buf, run: self._on_messages(generation, buf, run))
        config = {
            "deliver_subject": inbox, "deliver_policy": "by_start_sequence",
            "opt_start_seq": start, "ack_policy": "none", "replay_policy": "instant",
            "flow_control": True, "idle_heartbeat": int(HEARTBEAT_SECONDS * NANOS),
            "mem_storage": True, "num_replicas": 1, "filter_subject": self.settings.subject,
            "inactive_threshold": int(30 * NANOS),
        }
        answer = api_request(connection, f"$JS.API.CONSUMER.CREATE.{self.settings.stream}",
                             {"stream_name": self.settings.stream, "config": config},
                             self.settings.request_seconds)
        error = answer.get("error")
        if error:
            connection.unsubscribe(sid)
            raise Unavailable(f"consumer of {self.settings.stream}: "
                              f"{error.get('description', error)}")
        with self._lock:
            self._sid = sid
            self._consumer = str(answer.get("name", ""))
            self._activity = time.monotonic()

    def _on_messages(self, generation: int, buf: bytearray,
                     run: dict[str, npt.NDArray[Any]]) -> None:
        """On the connection's reader thread: a run of what the consumer sent (data and,
        now and then, a heartbeat or a flow control request), its columns pointing into
        `buf`."""
        if generation != self._generation or self.lost:
            return
        kinds = run["kind"]
        control = np.flatnonzero(kinds != DATA)
        edges = [*control.tolist(), len(kinds)]
        begin = 0
        for edge in edges:
            if edge > begin and not self._take_data(generation, buf, run, begin, edge):
                return
            if edge < len(kinds) and not self._take_control(buf, run, edge):
                return
            begin = edge + 1

    def _take_data(self, generation: int, buf: bytearray, run: dict[str, npt.NDArray[Any]],
                   begin: int, end: int) -> bool:
        """Rows begin..end of a run, all deliveries: in order, or the consumer is made
        again (a delivery lost) or the position is lost (events gone from the stream)."""
        cseq = run["consumer_sequence"][begin:end]
        sseq = run["stream_sequence"][begin:end]
        expected = np.arange(self._dseq + 1, self._dseq + 1 + len(cseq), dtype=np.uint64)
        gap = ""
        wrong = np.flatnonzero(cseq != expected)
        if len(wrong):
            cut = int(wrong[0])
            gap = f"consumer sequence {int(cseq[cut])} after {self._dseq + cut}"
            cseq, sseq = cseq[:cut], sseq[:cut]
            end = begin + cut
        applied = self.applied
        fresh = np.flatnonzero(sseq > applied)  # a consumer made again may repeat some
        lost = ""
        if len(fresh):
            first = int(fresh[0])
            want = np.arange(applied + 1, applied + 1 + len(sseq) - first, dtype=np.uint64)
            skip = np.flatnonzero(sseq[first:] != want)
            if len(skip):
                at = first + int(skip[0])
                lost = (f"the stream went from event {applied + int(skip[0])} to "
                        f"{int(sseq[at])}: events {applied + int(skip[0]) + 1}.."
                        f"{int(sseq[at]) - 1} are no longer in it. Load a snapshot with "
                        f"--events-through {int(sseq[at]) - 1} or later")
                stop = at
            else:
                stop = len(sseq)
            rows = np.arange(begin + first, begin + stop)
        else:
            rows = np.arange(0)
        events = None
        if len(rows):
            try:
                events = decode_run(self.settings.stream, buf, run["stream_sequence"][rows],
                                    run["data"][rows])
            except BadMessage as exc:
                with self._lock:
                    self._lose(f"{exc}")
                return False
            self._note_own(buf, run, rows)
        heard = int((run["stream_sequence"][begin:end] + run["pending"][begin:end]).max()) \
            if end > begin else 0
        with self._lock:
            if generation != self._generation:
                return False
            self._activity = time.monotonic()
            if len(cseq):
                self._dseq = int(cseq[-1])
            if events is not None:
                self._queue.append(events)
                self._queued += len(events)
                self._since.append(events)
                self._since_count += len(events)
                self.applied = int(events.sequence[-1])
            self._heard_of(heard)
            if lost:
                self._lose(lost)
        if gap:
            log.warning("stream %s: %s; making the consumer again from %d",
                        self.settings.stream, gap, self.applied + 1)
            self._restart.set()
        return not gap and not lost

    def _note_own(self, buf: bytearray, run: dict[str, npt.NDArray[Any]],
                  rows: npt.NDArray[np.intp]) -> None:
        """The batches this process wrote among rows (their last message names them), with
        the sequence of their last event: a retried batch the stream says it has is found
        here. One search of the bytes, not a look at every message."""
        headers = run["header"][rows]
        low, high = int(headers[0, 0]), int(headers[-1, 0] + headers[-1, 1])
        found = []
        for m in self._own_pattern.finditer(buf, low, high):
            row = int(np.searchsorted(headers[:, 0], m.start(), "right")) - 1
            found.append((m.group(1).decode(), int(run["stream_sequence"][rows[row]])))
        if found:
            with self._own_lock:
                for own_id, sseq in found:
                    self._own[own_id] = sseq
                while len(self._own) > OWN_IDS:
                    self._own.popitem(last=False)

    def _take_control(self, buf: bytearray, run: dict[str, npt.NDArray[Any]],
                      row: int) -> bool:
        """A heartbeat or flow control request (or a message that is neither: ignored)."""
        connection = self.connection
        assert connection is not None
        off, length = int(run["header"][row, 0]), int(run["header"][row, 1])
        headers = bytes(buf[off:off + length])
        _, description = control_status(headers)
        reply_at, reply_length = int(run["reply"][row, 0]), int(run["reply"][row, 1])
        reply = bytes(buf[reply_at:reply_at + reply_length]).decode()
        with contextlib.suppress(Unavailable):
            if "FlowControl" in description and reply:
                connection.publish(reply, b"")
            stalled = header_value(headers, b"Nats-Consumer-Stalled")
            if stalled:
                connection.publish(stalled.decode(), b"")
        with self._lock:
            self._activity = time.monotonic()
        consumed = header_value(headers, b"Nats-Last-Consumer")
        if consumed is not None and int(consumed) != self._dseq:
            log.warning("stream %s: a heartbeat says consumer sequence %d, seen %d; making "
                        "the consumer again from %d", self.settings.stream, int(consumed),
                        self._dseq, self.applied + 1)
            self._restart.set()
            return False
        return True

    def _watch(self) -> None:
        """Ask the stream's state now and then; make the consumer again when it fell silent,
        was lost with its node, or the connection came back."""
        while not self._stop.wait(WATCH_SECONDS):
            connection = self.connection
            if connection is None or not connection.is_connected:
                continue
            try:
                if not self._ensured:
                    self._ensure()
                info = stream_info(connection, self.settings)
                if info is None:
                    self._lose(f"stream {self.settings.stream} no longer exists")
                    continue
                self._adopt(info)
                silent = time.monotonic() - self._activity > SILENT_SECONDS
                if (self._restart.is_set() or silent or not self._sid) and not self.lost:
                    self._restart.clear()
                    if silent:
                        log.warning("stream %s: the consumer is silent; making it again from "
                                    "%d", self.settings.stream, self.applied + 1)
                    self._start_consumer()
            except Unavailable as exc:
                log.debug("stream %s: %s", self.settings.stream, exc)
            except Refused as exc:  # a stream made meanwhile, not as anning needs it
                if exc.args[0] != self._refused:
                    log.error("%s", exc)
                self._refused = exc.args[0]
            except Exception:
                log.exception("watching stream %s", self.settings.stream)

    def _ensure(self) -> None:
        """The stream made or checked (Refused when it is not as anning needs it)."""
        assert self.connection is not None
        self._adopt(ensure_stream(self.connection, self.settings))
        self._ensured = True
        self._refused = ""


class NatsFeed:
    """The change feed of a replica: the events it applied past a sequence, then those it
    applies as they come."""

    def __init__(self, source: NatsEventSource, after: int) -> None:
        self.source = source
        self.sent = after

    def read(self, max_events: int) -> EventColumns:
        events = self.source.events_after(self.sent)
        if len(events) > max_events:
            events = events.take(np.arange(max_events))
        if len(events):
            self.sent = int(events.sequence[-1])
        return events

    def close(self) -> None:
        pass


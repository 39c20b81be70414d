"""The servicers of anning.v1 (grpc.aio): thin over the engine, one place that maps errors to
codes.

Checks run on the event loop: each is a few microseconds of compiled code, quicker than any
hand-off to a thread. Writes go to the server's one writing thread (anning.server.writes) and
wait on a future; a snapshot load, the one long call, runs in a thread of its own.

Every method takes its request as raw bytes and decodes it itself (anning.server.requests):
bytes that are not its request type are INVALID_ARGUMENT naming the fault, counted and logged
sparingly, never UNKNOWN with a traceback. CheckBatch's and CheckBatchStream's requests are
decoded and their answers encoded by the compiled codec (anning._wire), not a Python loop over
protobuf messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import wraps
from typing import Any, TypeAlias

import grpc
import numpy as np

from anning import __version__, _wire
from anning._normalize import normalize_number
from anning.engine import Engine, ServingState
from anning.engine.export import ChangeEncoder
from anning.errors import InvalidInput, TooLarge
from anning.load import LoadOptions, SnapshotRefused, parse_time
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.model.scopes import DEFAULT_CATEGORIES
from anning.server.loaddirs import LoadDirs
from anning.server.metrics import Metrics
from anning.server.requests import (
    BadRequests,
    UndecodableRequest,
    abort,
    brief,
    decode,
    fault,
    send,
)
from anning.server.writes import WriteQueue
from anning.v1 import anning_pb2 as pb

__all__ = ["CallsInFlight", "Limits", "build_handlers"]

log = logging.getLogger("anning.server")
Context: TypeAlias = Any  # grpc.aio.ServicerContext (grpc has no type information)
_RESPONSES = tuple(pb.CheckResponse(suppressed=bool(code), scope=pb.Scope.Name(code))
                   for code in range(4))


class Limits:
    def __init__(self, max_batch: int = 10_000, max_columns: int = 1_000_000,
                 max_message_bytes: int = 64 << 20, inline_bytes: int = 256 << 10,
                 inline_events: int = 100, load_dirs: LoadDirs | None = None) -> None:
        self.max_batch = max_batch
        self.max_columns = max_columns
        self.max_message_bytes = max_message_bytes
        # A batch request past this size is checked in a thread (the core lets go of the
        # GIL), not on the event loop: a 1M-number call is tens of milliseconds that every
        # other call would otherwise wait behind. Under it, the hand-off costs more than it saves.
        self.inline_bytes = inline_bytes
        self.inline_events = inline_events  # a WriteBatch past it is validated in a thread
        self.changes_batch = 4096  # events a Changes message, unless the follower asks
        self.max_changes = 65536
        self.changes_poll = 0.02  # seconds between looks for new events when caught up
        self.stream_window = 16  # CheckBatchStream answers checked ahead of the writes
        self.max_reply_chars = 1 << 16  # a reply's text: a long SMS is some thousands
        # where LoadSnapshot may read (and write its rejects): nowhere unless told
        self.load_dirs = load_dirs or LoadDirs([])


class CallsInFlight:
    """The unary calls being answered, and when the last one ended (only the event loop
    touches it). SIGTERM's drain waits for a quiet moment before gRPC says goodbye: gRPC
    closes a connection as soon as its last call after the goodbye ends, and an answer still
    on its way to a caller that reads slowly is then cut off (the caller sees UNAVAILABLE,
    "Connection reset by peer"); an answer that ended before the goodbye has had time to go."""

    def __init__(self) -> None:
        self.count = 0
        self.last_ended = time.monotonic()

    def __enter__(self) -> None:
        self.count += 1

    def __exit__(self, *_exc: object) -> None:
        self.count -= 1
        self.last_ended = time.monotonic()

    async def quiet(self, settle: float, limit: float) -> bool:
        """Wait until no unary call has been in flight for `settle` seconds; give up after
        `limit`. True when it came quiet."""
        deadline = time.monotonic() + limit
        while True:
            now = time.monotonic()
            if self.count == 0 and now - self.last_ended >= settle:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(0.02, deadline - now))


def _rpc(name: str, request_type: Any = None) -> Callable[..., Any]:
    """Around a unary method: its request decoded from raw bytes (as `request_type`; raw when
    None), errors to status codes, latency and error metrics."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        async def run(self: _Base, raw: bytes, context: Context) -> Any:
            started = time.perf_counter()
            try:
                with self.calls:
                    request = raw if request_type is None else decode(request_type, raw)
                    return await method(self, request, context)
            except Exception as exc:
                await abort(context, self.bad, name, exc)
            finally:
                self.metrics.latency_of(name).observe(time.perf_counter() - started)

        return run

    return decorate


class _Base:
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight, bad: BadRequests) -> None:
        self.engine = engine
        self.metrics = metrics
        self.limits = limits
        self.calls = calls
        self.bad = bad


class Suppression(_Base):
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight, bad: BadRequests) -> None:
        super().__init__(engine, metrics, limits, calls, bad)
        self._codec: tuple[tuple[Any, int], _wire.BatchCodec] | None = None

    @_rpc("Check", pb.CheckRequest)
    async def Check(self, request: pb.CheckRequest, context: Context) -> pb.CheckResponse:
        code = int(self.engine.check(request.sender, request.number, request.category))
        self.metrics.count_checks(code)
        return _RESPONSES[code]

    @_rpc("CheckBatch")
    async def CheckBatch(self, request: bytes, context: Context) -> bytes:
        if len(request) > self.limits.inline_bytes:
            return await asyncio.to_thread(self._check_batch, request, "CheckBatch")
        return self._check_batch(request, "CheckBatch")

    async def CheckBatchStream(self, requests: AsyncIterator[bytes], context: Context) -> None:
        """CheckBatch on one stream: each message decoded, checked and encoded by the same
        compiled codec, answered in order. Bad items get their errors; a message that cannot
        be taken (malformed, too many items, no list) ends the stream with its code.

        A task takes the messages in and checks them while this coroutine writes the answers
        out: reading, checking and writing in one loop would leave the stream idle during each
        write (measured: half the checks/s of CheckBatch with as many calls in flight). The
        answers are written, not yielded (see anning.server.requests.send)."""
        answers: asyncio.Queue[Any] = asyncio.Queue(self.limits.stream_window)
        taker = asyncio.ensure_future(self._take_batches(requests, answers))
        try:
            while True:
                answer = await answers.get()
                if answer is None:
                    return
                if answer is _GONE:
                    raise asyncio.CancelledError("the caller has gone")
                if isinstance(answer, Exception):
                    await abort(context, self.bad, "CheckBatchStream", answer)
                    return
                await send(context, answer)
        finally:
            taker.cancel()

    async def _take_batches(self, requests: AsyncIterator[bytes],
                            answers: asyncio.Queue[Any]) -> None:
        latency = self.metrics.latency_of("CheckBatchStream")
        while True:
            try:
                request = await anext(requests)
            except StopAsyncIteration:
                await answers.put(None)
                return
            except Exception:  # the caller has gone: see requests.send
                await answers.put(_GONE)
                return
            started = time.perf_counter()
            try:
                if len(request) > self.limits.inline_bytes:
                    answer = await asyncio.to_thread(self._check_batch, request,
                                                     "CheckBatchStream")
                else:
                    answer = self._check_batch(request, "CheckBatchStream")
            except Exception as exc:  # the stream ends with its code, after the answers before
                await answers.put(exc)
                return
            latency.observe(time.perf_counter() - started)
            await answers.put(answer)

    def _check_batch(self, request: bytes, method: str) -> bytes:
        engine = self.engine
        state = engine.serving()  # one list for the whole batch: its sender ids are this one's
        index = state.index
        codec = self._codec_for(state)
        try:
            ids, numbers, bits, errors = codec.decode(request, self.limits.max_batch)
        except _wire.MalformedRequest as exc:  # the compiled codec says where, not why
            why = fault(pb.CheckBatchRequest.DESCRIPTOR, request)
            raise UndecodableRequest(f"request: not a valid anning.v1.CheckBatchRequest: "
                                     f"{why or exc}") from None
        if errors:  # bad items get a stand-in number and their error; the rest are checked
            bad = np.fromiter(errors, np.int64, len(errors))
            numbers[bad] = 8613800000000
            ids[bad] = 0xFFFFFFFF
        first = int(bits[0]) if len(bits) else 0
        if not (bits != first).any():  # one category, the common case: no splitting
            codes = engine.check_ids(ids, numbers, index.categories[first], state)
        else:
            codes = np.zeros(len(numbers), np.uint8)
            for bit in np.unique(bits):
                where = np.flatnonzero(bits == bit)
                codes[where] = engine.check_ids(ids[where], numbers[where],
                                                index.categories[bit], state)
        if errors:
            codes[bad] = 0
            # a bad item is an error of its own, not a check that answered "none"
            self.metrics.errors.labels(method, "INVALID_ARGUMENT").inc(len(errors))
            self._count(np.delete(codes, bad))
        else:
            self._count(codes)
        return _wire.encode_results(codes, errors)

    def _count(self, codes: np.ndarray) -> None:
        counts = np.bincount(codes, minlength=4)
        for code, n in enumerate(counts.tolist()):
            if n:
                self.metrics.checks_by_code[code].inc(n)

    def _codec_for(self, state: ServingState) -> _wire.BatchCodec:
        """The codec of this serving pair: it caches each sender's id by its raw bytes, so a
        new one is made for a new pair, or when events brought senders the list does not know
        (they get ids of their own)."""
        key = (state.overlay, len(state.overlay.extra_senders))
        cached = self._codec
        if cached is not None and cached[0] == key:
            return cached[1]
        index = state.index
        codec = _wire.BatchCodec(state.sender_id, index.category_bit, normalize_number,
                                 index.category_bit(""), index.default_country)
        self._codec = (key, codec)
        return codec

    @_rpc("CheckColumns")
    async def CheckColumns(self, raw: bytes, context: Context) -> pb.CheckColumnsResponse:
        # by the whole request's size: a million senders and no numbers is work too
        if len(raw) > self.limits.inline_bytes:
            return await asyncio.to_thread(self._check_columns, raw)
        return self._check_columns(raw)

    def _check_columns(self, raw: bytes) -> pb.CheckColumnsResponse:
        request = decode(pb.CheckColumnsRequest, raw)
        if len(request.senders) > self.limits.max_columns:
            raise TooLarge(f"senders: more than {self.limits.max_columns} in one call")
        if len(request.numbers) % 8 or len(request.sender_index) % 4:
            raise InvalidInput("numbers / sender_index: not whole uint64 / uint32 items")
        numbers = np.frombuffer(request.numbers, "<u8")
        which = np.frombuffer(request.sender_index, "<u4")
        if len(numbers) != len(which):
            raise InvalidInput(f"sender_index: {len(which)} items for {len(numbers)} numbers")
        if len(numbers) > self.limits.max_columns:
            raise TooLarge(f"numbers: more than {self.limits.max_columns} in one call")
        if len(which) and int(which.max()) >= len(request.senders):
            raise InvalidInput(f"sender_index: {int(which.max())} is past the "
                               f"{len(request.senders)} senders")
        state = self.engine.serving()  # one list: its sender ids are this one's
        ids = state.sender_ids(list(request.senders))[which] if len(which) else \
            np.empty(0, np.uint32)
        codes = self.engine.check_ids(ids, numbers, request.category, state)
        self._count(codes)
        return pb.CheckColumnsResponse(scopes=codes.tobytes())

    async def CheckStream(self, requests: AsyncIterator[bytes], context: Context) -> None:
        """One answer per request, in order; a bad one (undecodable too) answered with its
        error, and the stream goes on."""
        engine = self.engine
        while True:
            try:
                raw = await anext(requests)
            except StopAsyncIteration:
                return
            except Exception:  # the caller has gone: see requests.send
                raise asyncio.CancelledError("the caller has gone") from None
            try:
                request = decode(pb.CheckRequest, raw)
                code = int(engine.check(request.sender, request.number, request.category))
            except UndecodableRequest as exc:
                self.bad.refused("CheckStream", "undecodable", exc, context.peer())
                answer = pb.CheckResponse(error=brief(str(exc)))
            except InvalidInput as exc:
                # a bad item is an error of its own, not a check that answered "none"
                self.metrics.errors.labels("CheckStream", "INVALID_ARGUMENT").inc()
                answer = pb.CheckResponse(error=brief(str(exc)))
            except Exception as exc:  # not ready (UNAVAILABLE), or a bug
                await abort(context, self.bad, "CheckStream", exc)
                return
            else:
                self.metrics.count_checks(code)
                answer = _RESPONSES[code]
            await send(context, answer)


_GONE = object()  # what the taker of a stream's messages says when its caller has gone

_KINDS = {pb.EVENT_KIND_OPT_OUT: OPT_OUT, pb.EVENT_KIND_OPT_IN: OPT_IN,
          pb.EVENT_KIND_REASSIGN: REASSIGN}


class OptOuts(_Base):
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight, bad: BadRequests, writes: WriteQueue) -> None:
        super().__init__(engine, metrics, limits, calls, bad)
        self.writes = writes

    def _event(self, request: Any, kind: int) -> Any:
        return self.engine.make_event(
            request.number, getattr(request, "scope", ""),
            getattr(request, "category", ""), kind, request.at_ms or None,
            request.source or "api")

    async def _ack(self, request: Any, kind: int) -> pb.WriteAck:
        event = self._event(request, kind)
        sequence = await self.writes.write([event])
        return pb.WriteAck(sequence=sequence, at_ms=event.at_ms)

    @_rpc("OptOut", pb.OptOutRequest)
    async def OptOut(self, request: pb.OptOutRequest, context: Context) -> pb.WriteAck:
        return await self._ack(request, OPT_OUT)

    @_rpc("OptIn", pb.OptOutRequest)
    async def OptIn(self, request: pb.OptOutRequest, context: Context) -> pb.WriteAck:
        return await self._ack(request, OPT_IN)

    @_rpc("Reassign", pb.ReassignRequest)
    async def Reassign(self, request: pb.ReassignRequest, context: Context) -> pb.WriteAck:
        return await self._ack(request, REASSIGN)

    @_rpc("WriteBatch", pb.WriteBatchRequest)
    async def WriteBatch(self, request: pb.WriteBatchRequest,
                         context: Context) -> pb.WriteBatchAck:
        if len(request.events) > self.limits.max_batch:
            raise TooLarge(f"events: {len(request.events)} in one call, more than "
                                f"{self.limits.max_batch}")
        if len(request.events) > self.limits.inline_events:
            # ~10 us an event of Python: a 10,000-event batch built on the loop would hold
            # every check behind it for 100 ms; in a thread it yields the GIL every
            # switch interval
            events = await asyncio.to_thread(self._events, request)
        else:
            events = self._events(request)
        sequence = await self.writes.write(events)
        return pb.WriteBatchAck(sequence=sequence, events=len(events))

    def _events(self, request: pb.WriteBatchRequest) -> list[Event]:
        events = []
        for i, item in enumerate(request.events):
            try:
                kind = _KINDS.get(item.kind)
                if kind is None:
                    raise InvalidInput(f"kind: {item.kind!r} is not an opt-out, opt-in or "
                                       "reassignment")
                events.append(self._event(item, kind))
            except InvalidInput as exc:  # all or none: nothing is written
                raise InvalidInput(f"events[{i}].{exc}") from None
        return events

    @_rpc("ReportReply", pb.ReplyRequest)
    async def ReportReply(self, request: pb.ReplyRequest,
                          context: Context) -> pb.ReplyResult:
        if len(request.text) > self.limits.max_reply_chars:  # reading it is linear, on the loop
            raise InvalidInput(f"text: {len(request.text):,} characters, more than a reply has "
                               f"({self.limits.max_reply_chars:,})")
        outcome = self.engine.read_reply(request.sender, request.number, request.text,
                                         request.at_ms or None)
        if outcome.event is not None:
            outcome = replace(outcome, sequence=await self.writes.write([outcome.event]))
        ack = pb.WriteAck(sequence=outcome.sequence,
                          at_ms=outcome.event.at_ms if outcome.event else 0)
        return pb.ReplyResult(recognised=outcome.recognised, action=outcome.action,
                              scope=outcome.scope, keyword=outcome.keyword, ack=ack)

    async def Changes(self, raw: bytes, context: Context) -> None:
        """The change feed: the events after `since` in order, several a message, each once;
        then, unless `until` is set, the new ones as they come. With `until`, the stream ends
        once every event up to it that there is has gone out."""
        try:
            request = decode(pb.ChangesRequest, raw)
            batch = min(request.max_batch or self.limits.changes_batch, self.limits.max_changes)
            until = request.until or None
            feed = self.engine.feed(request.since)
            encoder = ChangeEncoder(self.engine.index.categories if self.engine.ready
                                    else DEFAULT_CATEGORIES)
        except Exception as exc:  # never a traceback for a bad request
            await abort(context, self.bad, "Changes", exc)
            return
        try:
            while True:
                events = await asyncio.to_thread(feed.read, batch)
                if until is not None:
                    events = events.until(until)
                if len(events):
                    self.metrics.changes.inc(len(events))
                    await send(context, encoder.encode(events))
                    if until is not None and int(events.sequence[-1]) >= until:
                        return
                    continue
                if until is not None:  # caught up with what there is
                    return
                await asyncio.sleep(self.limits.changes_poll)
        except Exception as exc:
            await abort(context, self.bad, "Changes", exc)
        finally:
            feed.close()

    @_rpc("Explain", pb.CheckRequest)
    async def Explain(self, request: pb.CheckRequest, context: Context) -> pb.Explanation:
        why = self.engine.explain(request.sender, request.number, request.category)
        return pb.Explanation(
            suppressed=why.suppressed, scope=pb.Scope.Name(int(why.scope)), matched=why.matched,
            categories=why.categories, origin=why.origin, source=why.source,
            at_ms=why.at_ms, snapshot_as_of=why.snapshot_as_of or "",
        )


class Admin(_Base):
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight, bad: BadRequests, workers: int) -> None:
        super().__init__(engine, metrics, limits, calls, bad)
        self.workers = workers

    @_rpc("LoadSnapshot", pb.LoadSnapshotRequest)
    async def LoadSnapshot(self, request: pb.LoadSnapshotRequest,
                           context: Context) -> pb.LoadReport:
        if not request.paths:
            raise InvalidInput("paths: no snapshot file given")
        ratio = request.max_reject_ratio
        if not 0 <= ratio <= 1:  # NaN too: it would switch the reject guard off
            raise InvalidInput(f"max_reject_ratio: {ratio!r} is not a share between 0 and 1")
        if request.as_of:
            parse_time(request.as_of)  # bad input, not a refused snapshot
        # only under the directories the operator allowed (--load-dir), resolved first
        allowed = self.limits.load_dirs
        paths = [allowed.resolve(f"paths[{i}]", p) for i, p in enumerate(request.paths)]
        entities = allowed.resolve("entities", request.entities) if request.entities else None
        rejects = allowed.resolve("rejects", request.rejects) if request.rejects else None
        options = LoadOptions(
            entities=entities, as_of=request.as_of or None, rejects=rejects,
            max_reject_ratio=request.max_reject_ratio or 0.001,
            allow_shrink=request.allow_shrink,
            events_through=request.events_through if request.HasField("events_through")
            else None,
        )
        try:
            # seconds to minutes of parsing and building: checks go on meanwhile
            report = await asyncio.to_thread(self.engine.load_snapshot, paths, options)
        except SnapshotRefused:
            self.metrics.refusals.inc()
            raise
        return pb.LoadReport(
            rows=report.rows, loaded=report.loaded, duplicates=report.duplicates,
            rejected=report.rejected, rejected_by_reason=report.rejected_by_reason,
            entries_before=report.entries_before or 0, entries_after=report.entries_after or 0,
            as_of=report.as_of or "", seconds=report.seconds,
            rejects_file=report.rejects_file or "", refused=report.refused or "",
            events_through=report.events_through, events_folded=report.events_folded,
        )

    @_rpc("Status", pb.StatusRequest)
    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusReply:
        self.engine.refresh()
        s = self.engine.status()
        return pb.StatusReply(
            ready=s.ready, entries=s.entries, senders=s.senders, bytes=s.bytes,
            snapshot_as_of=s.as_of or "", snapshot_age_seconds=s.age_seconds, events=s.events,
            writes_ok=s.writes_ok, writes_error=s.writes_error, last_refusal=s.last_refusal,
            workers=self.workers, version=__version__, last_sequence=s.last_sequence,
            events_through=s.events_through, folded_through=s.folded_through,
            feed_lag=s.feed_lag, oldest_uncovered_age_seconds=s.oldest_uncovered_age_seconds,
            current=s.source.current, stale=s.source.stale,
            replica_lag_events=s.source.lag_events, replica_lag_seconds=s.source.lag_seconds,
            event_log=s.source.detail,
        )


def _identity(x: bytes) -> bytes:
    return x


def build_handlers(engine: Engine, metrics: Metrics, limits: Limits, calls: CallsInFlight,
                   workers: int, writes: WriteQueue, health: Any = None,
                   reflection: list[str] | None = None,
                   ) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """service name -> method name -> handler (for server.add_registered_method_handlers,
    grpc's fast path that skips the per-call search of generic handlers). Every request comes
    in as raw bytes, decoded by the method; `health` (grpc_health's servicer) and
    `reflection` (the service names it lists), when given, are served the same way: they
    answer without a token (anning.server.openservices)."""
    from anning.server.openservices import health_handlers, reflection_handlers

    bad = BadRequests(metrics.bad_requests, metrics.errors)
    suppression = Suppression(engine, metrics, limits, calls, bad)
    opt_outs = OptOuts(engine, metrics, limits, calls, bad, writes)
    admin = Admin(engine, metrics, limits, calls, bad, workers)

    def unary(fn: Callable[..., Any], resp: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_identity, response_serializer=resp.SerializeToString)

    handlers = {
        "anning.v1.Suppression": {
            "Check": unary(suppression.Check, pb.CheckResponse),
            "CheckBatch": grpc.unary_unary_rpc_method_handler(
                suppression.CheckBatch, request_deserializer=_identity,
                response_serializer=_identity),
            "CheckStream": grpc.stream_stream_rpc_method_handler(
                suppression.CheckStream, request_deserializer=_identity,
                response_serializer=pb.CheckResponse.SerializeToString),
            "CheckColumns": unary(suppression.CheckColumns, pb.CheckColumnsResponse),
            "CheckBatchStream": grpc.stream_stream_rpc_method_handler(
                suppression.CheckBatchStream, request_deserializer=_identity,
                response_serializer=_identity),
        },
        "anning.v1.OptOuts": {
            "OptOut": unary(opt_outs.OptOut, pb.WriteAck),
            "OptIn": unary(opt_outs.OptIn, pb.WriteAck),
            "ReportReply": unary(opt_outs.ReportReply, pb.ReplyResult),
            "Reassign": unary(opt_outs.Reassign, pb.WriteAck),
            "WriteBatch": unary(opt_outs.WriteBatch, pb.WriteBatchAck),
            "Explain": unary(opt_outs.Explain, pb.Explanation),
            "Changes": grpc.unary_stream_rpc_method_handler(
                opt_outs.Changes, request_deserializer=_identity,
                response_serializer=_identity),
        },
        "anning.v1.Admin": {
            "LoadSnapshot": unary(admin.LoadSnapshot, pb.LoadReport),
            "Status": unary(admin.Status, pb.StatusReply),
        },
    }
    if health is not None:
        handlers["grpc.health.v1.Health"] = health_handlers(health, bad)
    if reflection is not None:
        handlers.update(reflection_handlers(reflection, bad))
    return handlers

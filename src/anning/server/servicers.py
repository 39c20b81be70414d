"""The servicers of anning.v1 (grpc.aio): thin over the engine, one place that maps errors to
codes.

Checks run on the event loop: each is a few microseconds of compiled code, quicker than any
hand-off to a thread. Writes go to the server's one writing thread (anning.server.writes) and
wait on a future; a snapshot load, the one long call, runs in a thread of its own.

CheckBatch is registered with raw-bytes (de)serialisers: its request is decoded and its answer
encoded by the compiled codec (anning._wire), not a Python loop over protobuf messages.
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
from anning.engine import Engine
from anning.errors import InvalidInput, NotReady, TooLarge
from anning.load import LoadOptions, SnapshotRefused, parse_time
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
from anning.server.metrics import Metrics
from anning.server.status import status_of
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
                 inline_events: int = 100) -> None:
        self.max_batch = max_batch
        self.max_columns = max_columns
        self.max_message_bytes = max_message_bytes
        # A batch request past this size is checked in a thread (the core lets go of the
        # GIL), not on the event loop: a 1M-number call is tens of milliseconds that every
        # other call would otherwise wait behind. Under it, the hand-off costs more than it saves.
        self.inline_bytes = inline_bytes
        self.inline_events = inline_events  # a WriteBatch past it is validated in a thread


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


def _rpc(name: str) -> Callable[..., Any]:
    """Errors to status codes, latency and error metrics around a unary method."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(method)
        async def run(self: _Base, request: Any, context: Context) -> Any:
            started = time.perf_counter()
            try:
                with self.calls:
                    return await method(self, request, context)
            except Exception as exc:
                mapped = status_of(exc)
                if mapped is None:
                    log.error("%s failed: %r", name, exc)
                    mapped = (grpc.StatusCode.INTERNAL, f"{name} failed: {exc}")
                self.metrics.errors.labels(name, mapped[0].name).inc()
                await context.abort(*mapped)
            finally:
                self.metrics.latency_of(name).observe(time.perf_counter() - started)

        return run

    return decorate


class _Base:
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight) -> None:
        self.engine = engine
        self.metrics = metrics
        self.limits = limits
        self.calls = calls


class Suppression(_Base):
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight) -> None:
        super().__init__(engine, metrics, limits, calls)
        self._codec: tuple[Any, _wire.BatchCodec] | None = None

    @_rpc("Check")
    async def Check(self, request: pb.CheckRequest, context: Context) -> pb.CheckResponse:
        code = int(self.engine.check(request.sender, request.number, request.category))
        self.metrics.count_checks(code)
        return _RESPONSES[code]

    @_rpc("CheckBatch")
    async def CheckBatch(self, request: bytes, context: Context) -> bytes:
        if len(request) > self.limits.inline_bytes:
            return await asyncio.to_thread(self._check_batch, request)
        return self._check_batch(request)

    def _check_batch(self, request: bytes) -> bytes:
        engine = self.engine
        state = engine.serving()  # one list for the whole batch: its sender ids are this one's
        index = state.index
        codec = self._codec_for(index)
        ids, numbers, bits, errors = codec.decode(request, self.limits.max_batch)
        if errors:  # bad items get a stand-in number and their error; the rest are checked
            bad = np.fromiter(errors, np.int64, len(errors))
            numbers[bad] = 8613800000000
            ids[bad] = 0xFFFFFFFF
        senders: list[str] = []

        def sender_of(i: int) -> str:  # only for unknown senders with real-time events
            if not senders:  # decode's own walk: protobuf refuses a request for one bad string
                senders.extend(_wire.item_senders(request))
            return senders[i]

        first = int(bits[0]) if len(bits) else 0
        if not (bits != first).any():  # one category, the common case: no splitting
            codes = engine.check_ids(ids, numbers, index.categories[first], sender_of, state)
        else:
            codes = np.zeros(len(numbers), np.uint8)
            for bit in np.unique(bits):
                where = np.flatnonzero(bits == bit)
                def sender_in(j: int, where: np.ndarray = where) -> str:
                    return sender_of(int(where[j]))

                codes[where] = engine.check_ids(ids[where], numbers[where],
                                                index.categories[bit], sender_in, state)
        if errors:
            codes[bad] = 0
        self._count(codes)
        return _wire.encode_results(codes, errors)

    def _count(self, codes: np.ndarray) -> None:
        counts = np.bincount(codes, minlength=4)
        for code, n in enumerate(counts.tolist()):
            if n:
                self.metrics.checks_by_code[code].inc(n)

    def _codec_for(self, index: Any) -> _wire.BatchCodec:
        cached = self._codec
        if cached is not None and cached[0] is index:
            return cached[1]
        codec = _wire.BatchCodec(index._sender_id, index.category_bit, normalize_number,
                                 0, index.default_country)
        self._codec = (index, codec)
        return codec

    @_rpc("CheckColumns")
    async def CheckColumns(self, request: pb.CheckColumnsRequest,
                           context: Context) -> pb.CheckColumnsResponse:
        if len(request.numbers) > self.limits.inline_bytes:
            return await asyncio.to_thread(self._check_columns, request)
        return self._check_columns(request)

    def _check_columns(self, request: pb.CheckColumnsRequest) -> pb.CheckColumnsResponse:
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
        ids = state.index.sender_ids(request.senders)[which] if len(which) else \
            np.empty(0, np.uint32)
        codes = self.engine.check_ids(ids, numbers, request.category,
                                      lambda i: request.senders[int(which[i])], state)
        self._count(codes)
        return pb.CheckColumnsResponse(scopes=codes.tobytes())

    async def CheckStream(self, requests: AsyncIterator[pb.CheckRequest],
                          context: Context) -> AsyncIterator[pb.CheckResponse]:
        engine = self.engine
        async for request in requests:
            try:
                code = int(engine.check(request.sender, request.number, request.category))
            except InvalidInput as exc:
                yield pb.CheckResponse(error=str(exc))
                continue
            except NotReady as exc:
                self.metrics.errors.labels("CheckStream", "UNAVAILABLE").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"not ready: {exc}")
            self.metrics.count_checks(code)
            yield _RESPONSES[code]


_KINDS = {pb.EVENT_KIND_OPT_OUT: OPT_OUT, pb.EVENT_KIND_OPT_IN: OPT_IN,
          pb.EVENT_KIND_REASSIGN: REASSIGN}


class OptOuts(_Base):
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight, writes: WriteQueue) -> None:
        super().__init__(engine, metrics, limits, calls)
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

    @_rpc("OptOut")
    async def OptOut(self, request: pb.OptOutRequest, context: Context) -> pb.WriteAck:
        return await self._ack(request, OPT_OUT)

    @_rpc("OptIn")
    async def OptIn(self, request: pb.OptOutRequest, context: Context) -> pb.WriteAck:
        return await self._ack(request, OPT_IN)

    @_rpc("Reassign")
    async def Reassign(self, request: pb.ReassignRequest, context: Context) -> pb.WriteAck:
        return await self._ack(request, REASSIGN)

    @_rpc("WriteBatch")
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

    @_rpc("ReportReply")
    async def ReportReply(self, request: pb.ReplyRequest,
                          context: Context) -> pb.ReplyResult:
        outcome = self.engine.read_reply(request.sender, request.number, request.text,
                                         request.at_ms or None)
        if outcome.event is not None:
            outcome = replace(outcome, sequence=await self.writes.write([outcome.event]))
        ack = pb.WriteAck(sequence=outcome.sequence,
                          at_ms=outcome.event.at_ms if outcome.event else 0)
        return pb.ReplyResult(recognised=outcome.recognised, action=outcome.action,
                              scope=outcome.scope, keyword=outcome.keyword, ack=ack)

    @_rpc("Explain")
    async def Explain(self, request: pb.CheckRequest, context: Context) -> pb.Explanation:
        why = self.engine.explain(request.sender, request.number, request.category)
        return pb.Explanation(
            suppressed=why.suppressed, scope=pb.Scope.Name(int(why.scope)), matched=why.matched,
            categories=why.categories, origin=why.origin, source=why.source,
            at_ms=why.at_ms, snapshot_as_of=why.snapshot_as_of or "",
        )


class Admin(_Base):
    def __init__(self, engine: Engine, metrics: Metrics, limits: Limits,
                 calls: CallsInFlight, workers: int) -> None:
        super().__init__(engine, metrics, limits, calls)
        self.workers = workers

    @_rpc("LoadSnapshot")
    async def LoadSnapshot(self, request: pb.LoadSnapshotRequest,
                           context: Context) -> pb.LoadReport:
        if not request.paths:
            raise InvalidInput("paths: no snapshot file given")
        ratio = request.max_reject_ratio
        if not 0 <= ratio <= 1:  # NaN too: it would switch the reject guard off
            raise InvalidInput(f"max_reject_ratio: {ratio!r} is not a share between 0 and 1")
        if request.as_of:
            parse_time(request.as_of)  # bad input, not a refused snapshot
        options = LoadOptions(
            entities=request.entities or None, as_of=request.as_of or None,
            rejects=request.rejects or None,
            max_reject_ratio=request.max_reject_ratio or 0.001,
            allow_shrink=request.allow_shrink,
        )
        try:
            # seconds to minutes of parsing and building: checks go on meanwhile
            report = await asyncio.to_thread(self.engine.load_snapshot, list(request.paths),
                                             options)
        except SnapshotRefused:
            self.metrics.refusals.inc()
            raise
        return pb.LoadReport(
            rows=report.rows, loaded=report.loaded, duplicates=report.duplicates,
            rejected=report.rejected, rejected_by_reason=report.rejected_by_reason,
            entries_before=report.entries_before or 0, entries_after=report.entries_after or 0,
            as_of=report.as_of or "", seconds=report.seconds,
            rejects_file=report.rejects_file or "", refused=report.refused or "",
        )

    @_rpc("Status")
    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusReply:
        self.engine.refresh()
        s = self.engine.status()
        return pb.StatusReply(
            ready=s.ready, entries=s.entries, senders=s.senders, bytes=s.bytes,
            snapshot_as_of=s.as_of or "", snapshot_age_seconds=s.age_seconds, events=s.events,
            writes_ok=s.writes_ok, writes_error=s.writes_error, last_refusal=s.last_refusal,
            workers=self.workers, version=__version__,
        )


def _identity(x: bytes) -> bytes:
    return x


def build_handlers(engine: Engine, metrics: Metrics, limits: Limits, calls: CallsInFlight,
                   workers: int, writes: WriteQueue
                   ) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    """service name -> method name -> handler (for server.add_registered_method_handlers,
    grpc's fast path that skips the per-call search of generic handlers)."""
    suppression = Suppression(engine, metrics, limits, calls)
    opt_outs = OptOuts(engine, metrics, limits, calls, writes)
    admin = Admin(engine, metrics, limits, calls, workers)

    def unary(fn: Callable[..., Any], req: Any, resp: Any) -> grpc.RpcMethodHandler:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=req.FromString, response_serializer=resp.SerializeToString)

    return {
        "anning.v1.Suppression": {
            "Check": unary(suppression.Check, pb.CheckRequest, pb.CheckResponse),
            "CheckBatch": grpc.unary_unary_rpc_method_handler(
                suppression.CheckBatch, request_deserializer=_identity,
                response_serializer=_identity),
            "CheckStream": grpc.stream_stream_rpc_method_handler(
                suppression.CheckStream, request_deserializer=pb.CheckRequest.FromString,
                response_serializer=pb.CheckResponse.SerializeToString),
            "CheckColumns": unary(suppression.CheckColumns, pb.CheckColumnsRequest,
                                  pb.CheckColumnsResponse),
        },
        "anning.v1.OptOuts": {
            "OptOut": unary(opt_outs.OptOut, pb.OptOutRequest, pb.WriteAck),
            "OptIn": unary(opt_outs.OptIn, pb.OptOutRequest, pb.WriteAck),
            "ReportReply": unary(opt_outs.ReportReply, pb.ReplyRequest, pb.ReplyResult),
            "Reassign": unary(opt_outs.Reassign, pb.ReassignRequest, pb.WriteAck),
            "WriteBatch": unary(opt_outs.WriteBatch, pb.WriteBatchRequest, pb.WriteBatchAck),
            "Explain": unary(opt_outs.Explain, pb.CheckRequest, pb.Explanation),
        },
        "anning.v1.Admin": {
            "LoadSnapshot": unary(admin.LoadSnapshot, pb.LoadSnapshotRequest, pb.LoadReport),
            "Status": unary(admin.Status, pb.StatusRequest, pb.StatusReply),
        },
    }

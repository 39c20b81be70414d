"""anning.aio.Client: anning.Client for asyncio ports, with the same API as coroutines.

    async with Client("anning.internal:50051", token=TOKEN, fail_closed=True) as client:
        if await client.check("【京东】", "13812345678"):
            ...  # suppressed (or no answer): do not send
        checker = client.checker()           # many tasks, one check each: coalesced
        results = await asyncio.gather(*(checker.check("京东", n) for n in numbers))

Checks retry on UNAVAILABLE (and CANCELLED) with backoff within their deadline; with
`fail_closed=True` a check that cannot be answered reports suppressed. `checker()` coalesces the
checks of many tasks into batches (`CheckBatchStream` messages, or `CheckBatch` calls) as
`anning.Client.checker()` does for threads: the checks made while the loop runs its ready tasks
go out together once the loop comes round (or after `linger`), and while `depth` batches are in
flight the next one fills on. Each caller gets its own answer, or its own error.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
import numpy as np

from anning.batching import (
    Batch,
    Transport,
    answer,
    check_settings,
    encode,
    outcome,
    validate,
)
from anning.client import (
    FAILED_CLOSED,
    RETRYABLE,
    CheckError,
    CheckResult,
    _result,
    open_channel,
)
from anning.v1 import anning_pb2 as pb
from anning.v1 import anning_pb2_grpc as rpc

__all__ = ["Checker", "Client"]

_NOT_FALLBACK = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                 grpc.StatusCode.PERMISSION_DENIED)
_GRACE = 0.1


class Client:
    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        token: str | None = None,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        backoff: float = 0.02,
        fail_closed: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        tls: bool = False,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.channel = open_channel(grpc.aio, target, root_certificates, private_key,
                                    certificate_chain, tls, options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.fail_closed = fail_closed
        self.suppression = rpc.SuppressionStub(self.channel)
        self.opt_outs = rpc.OptOutsStub(self.channel)
        self.admin = rpc.AdminStub(self.channel)
        self._check_batch_bytes = self.channel.unary_unary("/anning.v1.Suppression/CheckBatch")
        self._check_batch_stream = self.channel.stream_stream(
            "/anning.v1.Suppression/CheckBatchStream")

    # -- checks ------------------------------------------------------------------------------
    async def _call(self, method: Callable[..., Any], request: Any,
                    timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                return await method(request, timeout=remaining, metadata=self.metadata)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retries:
                    raise
            await asyncio.sleep(min(delay * (1 + random.random()),
                                    max(deadline - loop.time(), 0)))
            delay *= 2
        raise CheckError(grpc.StatusCode.DEADLINE_EXCEEDED,
                         "deadline exceeded before anning answered")

    async def _checked(self, call: Awaitable[Any], fallback: Any) -> Any:
        try:
            return await call
        except grpc.RpcError as exc:
            if self.fail_closed and exc.code() not in _NOT_FALLBACK:
                return fallback
            raise

    async def check(self, sender: str, number: str, category: str = "",
                    timeout: float | None = None) -> CheckResult:
        request = pb.CheckRequest(sender=sender, number=str(number), category=category)

        async def call() -> CheckResult:
            return _result(await self._call(self.suppression.Check, request, timeout))

        result: CheckResult = await self._checked(call(), FAILED_CLOSED)
        return result

    async def check_batch(self, checks: Iterable[tuple[str, str] | tuple[str, str, str]],
                          timeout: float | None = None) -> list[CheckResult]:
        """Many (sender, number[, category]) checks in one call; a bad item gets its error."""
        items = [pb.CheckRequest(sender=c[0], number=str(c[1]),
                                 category=c[2] if len(c) > 2 else "") for c in checks]
        request = pb.CheckBatchRequest(checks=items)

        async def call() -> list[CheckResult]:
            raw = await self._call(self._check_batch_bytes, request.SerializeToString(),
                                   timeout)
            return [_result(r) for r in pb.CheckBatchResponse.FromString(raw).results]

        results: list[CheckResult] = await self._checked(call(), [FAILED_CLOSED] * len(items))
        return results

    async def check_columns(self, senders: Sequence[str], sender_index: np.ndarray,
                            numbers: np.ndarray, category: str = "",
                            timeout: float | None = None) -> np.ndarray:
        """The columnar form (see anning.Client.check_columns); failed closed: all 255."""
        request = pb.CheckColumnsRequest(
            senders=list(senders), category=category,
            sender_index=np.ascontiguousarray(sender_index, "<u4").tobytes(),
            numbers=np.ascontiguousarray(numbers, "<u8").tobytes(),
        )

        async def call() -> np.ndarray:
            reply = await self._call(self.suppression.CheckColumns, request, timeout)
            return np.frombuffer(reply.scopes, np.uint8)

        codes: np.ndarray = await self._checked(call(), np.full(len(numbers), 255, np.uint8))
        return codes

    def checker(self, *, max_batch: int = 1000, linger: float = 0.0, depth: int = 2,
                transport: Transport = "stream") -> Checker:
        """Coalescing checks for many tasks (see the module's text)."""
        return Checker(self, max_batch=max_batch, linger=linger, depth=depth,
                       transport=transport)

    # -- writes and the rest -----------------------------------------------------------------
    async def _write(self, method: Callable[..., Any], request: Any,
                     timeout: float | None) -> Any:
        return await method(request, timeout=timeout or max(self.timeout, 5.0),
                            metadata=self.metadata)

    async def opt_out(self, number: str, scope: str, category: str = "", at_ms: int = 0,
                      source: str = "", timeout: float | None = None) -> pb.WriteAck:
        request = pb.OptOutRequest(number=str(number), scope=scope, category=category,
                                   at_ms=at_ms, source=source)
        reply: pb.WriteAck = await self._write(self.opt_outs.OptOut, request, timeout)
        return reply

    async def opt_in(self, number: str, scope: str, category: str = "", at_ms: int = 0,
                     source: str = "", timeout: float | None = None) -> pb.WriteAck:
        request = pb.OptOutRequest(number=str(number), scope=scope, category=category,
                                   at_ms=at_ms, source=source)
        reply: pb.WriteAck = await self._write(self.opt_outs.OptIn, request, timeout)
        return reply

    async def reassign(self, number: str, at_ms: int = 0, source: str = "",
                       timeout: float | None = None) -> pb.WriteAck:
        request = pb.ReassignRequest(number=str(number), at_ms=at_ms, source=source)
        reply: pb.WriteAck = await self._write(self.opt_outs.Reassign, request, timeout)
        return reply

    async def write_batch(self, events: Iterable[pb.WriteEvent],
                          timeout: float | None = None) -> pb.WriteBatchAck:
        request = pb.WriteBatchRequest(events=list(events))
        reply: pb.WriteBatchAck = await self._write(self.opt_outs.WriteBatch, request, timeout)
        return reply

    async def report_reply(self, sender: str, number: str, text: str, at_ms: int = 0,
                           timeout: float | None = None) -> pb.ReplyResult:
        request = pb.ReplyRequest(sender=sender, number=str(number), text=text, at_ms=at_ms)
        reply: pb.ReplyResult = await self._write(self.opt_outs.ReportReply, request, timeout)
        return reply

    async def explain(self, sender: str, number: str, category: str = "",
                      timeout: float | None = None) -> pb.Explanation:
        request = pb.CheckRequest(sender=sender, number=str(number), category=category)
        reply: pb.Explanation = await self._call(self.opt_outs.Explain, request, timeout)
        return reply

    async def status(self, timeout: float | None = None) -> pb.StatusReply:
        reply: pb.StatusReply = await self._call(self.admin.Status, pb.StatusRequest(), timeout)
        return reply

    async def load_snapshot(self, paths: Sequence[str], entities: str = "", as_of: str = "",
                            allow_shrink: bool = False, timeout: float = 3600.0
                            ) -> pb.LoadReport:
        request = pb.LoadSnapshotRequest(paths=list(paths), entities=entities, as_of=as_of,
                                         allow_shrink=allow_shrink)
        reply: pb.LoadReport = await self.admin.LoadSnapshot(request, timeout=timeout,
                                                             metadata=self.metadata)
        return reply

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Checker:
    """Coalescing checks for the tasks of one event loop (see the module's text)."""

    def __init__(self, client: Client, *, max_batch: int = 1000, linger: float = 0.0,
                 depth: int = 2, transport: Transport = "stream") -> None:
        check_settings(max_batch, linger, depth, transport)
        self.client = client
        self.max_batch, self.linger, self.depth = max_batch, linger, depth
        self.transport = transport
        self._open: Batch | None = None
        self._settled = False  # the open batch may go once a slot is free
        self._queued: deque[Batch] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stream = _Stream(self) if transport == "stream" else None
        self._closed = False
        self.batches = 0
        self.checks = 0

    async def check(self, sender: str, number: str | int, category: str = "") -> CheckResult:
        validate(sender, number, category)
        if self._closed:
            raise CheckError(grpc.StatusCode.CANCELLED, "the checker is closed")
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = Batch()
            self._settled = False
            batch.started = loop.time()
            batch.deadline = batch.started + self.client.timeout
            batch.waiters.append(loop.create_future())
            if self.linger:
                loop.call_later(self.linger, self._settle, batch)
            else:  # once the loop has run the tasks that are ready now
                loop.call_soon(self._settle, batch)
            batch.timer = loop.call_at(batch.deadline + _GRACE, self._expire, batch)
        i = len(batch.senders)
        batch.senders.append(sender)
        batch.numbers.append(number)
        batch.categories.append(category)
        if i + 1 >= self.max_batch:
            self._close_open()
        await batch.waiters[0]
        return outcome(batch, i, self.client.fail_closed)

    def _settle(self, batch: Batch) -> None:
        if batch is self._open:
            self._settled = True
            self._pump()

    def _close_open(self) -> None:
        assert self._open is not None
        self._queued.append(self._open)
        self._open = None
        self._pump()

    def _pump(self) -> None:
        """Send what may go: closed batches in order, then a settled open one."""
        while self._in_flight < self.depth:
            if self._queued:
                batch = self._queued.popleft()
            elif self._open is not None and self._settled:
                batch, self._open = self._open, None
            else:
                return
            self._in_flight += 1
            self.batches += 1
            self.checks += len(batch)
            if self._stream is not None:
                self._stream.send(batch)
            else:
                task = asyncio.get_running_loop().create_task(self._send_unary(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send_unary(self, batch: Batch) -> None:
        client = self.client
        try:
            data, keep = encode(batch)
            timeout = batch.deadline - asyncio.get_running_loop().time()
            if timeout <= 0:
                batch.fail(grpc.StatusCode.DEADLINE_EXCEEDED,
                           "deadline exceeded before the batch was sent")
            else:
                answer(batch, await client._call(client._check_batch_bytes, data, timeout),
                       keep)
        except grpc.RpcError as exc:
            batch.fail(exc.code(), exc.details() or "")
        except Exception as exc:  # never leave the callers waiting
            batch.fail(grpc.StatusCode.INTERNAL, f"checker: {exc!r}")
        self.complete(batch)

    def complete(self, batch: Batch) -> None:
        done = batch.waiters[0]
        if done.done():  # expired already
            return
        batch.timer.cancel()
        self._in_flight -= 1
        done.set_result(None)
        self._pump()

    def _expire(self, batch: Batch) -> None:
        """Past the deadline and its grace without an answer: the batch fails by itself."""
        if batch.waiters[0].done():
            return
        if self._stream is not None:
            self._stream.expire(batch)
        if batch is self._open or batch in self._queued:  # not in flight: complete() would
            if batch is self._open:                         # give back a slot it never took
                self._open = None
            else:
                self._queued.remove(batch)
            self._in_flight += 1
        batch.fail(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before anning answered")
        self.complete(batch)

    async def close(self) -> None:
        """No new checks; the batches in flight are answered first."""
        self._closed = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stream is not None:
            await self._stream.close()

    async def __aenter__(self) -> Checker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_END = object()


class _Stream:
    """Batches on one CheckBatchStream, answered in order by a reader task; what a broken
    stream had not answered is sent again on a new one (as checks retry) or failed."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self._call: Any = None
        self._queue: asyncio.Queue[Any] | None = None
        self._fifo: deque[tuple[Batch, list[int] | None]] = deque()
        self._reader: asyncio.Task[None] | None = None

    def send(self, batch: Batch) -> None:
        try:
            data, keep = encode(batch)
            if self._call is None:
                self._open()
            assert self._queue is not None
            self._fifo.append((batch, keep))
            self._queue.put_nowait(data)
        except Exception as exc:  # a closed channel, ...: never leave the callers waiting
            batch.fail(grpc.StatusCode.CANCELLED if isinstance(exc, ValueError)
                       else grpc.StatusCode.INTERNAL, f"checker: {exc}")
            self.checker.complete(batch)

    def _open(self) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        fifo: deque[tuple[Batch, list[int] | None]] = deque()

        async def requests() -> AsyncIterator[bytes]:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                yield item

        call = self.checker.client._check_batch_stream(
            requests(), metadata=self.checker.client.metadata)
        self._call, self._queue, self._fifo = call, queue, fifo
        self._reader = asyncio.get_running_loop().create_task(self._read(call, fifo))

    async def _read(self, call: Any, fifo: deque[tuple[Batch, list[int] | None]]) -> None:
        failure = (grpc.StatusCode.UNAVAILABLE, "the stream ended before every answer")
        try:
            async for response in call:
                batch, keep = fifo.popleft()
                try:
                    answer(batch, response, keep)
                except Exception as exc:
                    batch.fail(grpc.StatusCode.INTERNAL, f"checker: {exc!r}")
                self.checker.complete(batch)
        except grpc.RpcError as exc:
            failure = (exc.code(), exc.details() or "")
        except asyncio.CancelledError:
            failure = (grpc.StatusCode.CANCELLED, "the checker's stream was cancelled")
        except Exception as exc:
            failure = (grpc.StatusCode.INTERNAL, f"checker: {exc!r}")
        if self._call is call:
            self._call = None
        orphans = list(fifo)
        fifo.clear()
        if orphans:
            await self._again(orphans, failure)

    async def _again(self, orphans: list[tuple[Batch, list[int] | None]],
                     failure: tuple[grpc.StatusCode, str]) -> None:
        client = self.checker.client
        loop = asyncio.get_running_loop()
        later = []
        for batch, keep in orphans:
            if batch.waiters[0].done():
                continue
            batch.attempts += 1
            if failure[0] in RETRYABLE and batch.attempts <= client.retries and \
                    loop.time() < batch.deadline:
                later.append((batch, keep))
                continue
            if loop.time() >= batch.deadline:
                batch.fail(grpc.StatusCode.DEADLINE_EXCEEDED,
                           "deadline exceeded before anning answered")
            else:
                batch.fail(*failure)
            self.checker.complete(batch)
        if not later:
            return
        delay = client.backoff * (2 ** (later[0][0].attempts - 1)) * (1 + random.random())
        await asyncio.sleep(max(min(delay, min(b.deadline for b, _ in later) - loop.time()), 0))
        for batch, _keep in later:
            if not batch.waiters[0].done():
                self.send(batch)

    def expire(self, batch: Batch) -> None:
        if self._call is not None and any(b is batch for b, _ in self._fifo):
            self._call.cancel()

    async def close(self) -> None:
        if self._queue is not None and self._call is not None:
            self._queue.put_nowait(_END)  # half-close: the server answers what it has
        if self._reader is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._reader),
                                       self.checker.client.timeout + 1.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                if self._call is not None:
                    self._call.cancel()

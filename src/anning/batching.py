"""Checks from many callers coalesced into batches: `anning.Client.checker()` (threads) and the
parts `anning.aio` shares.

A port written like most ports — many threads, each checking one message before it sends it —
would make one unary call a message (a few thousand a second a connection). A `Checker` takes
each thread's single check into a shared batch and sends the batch as one `CheckBatch` call, or
as one message of a `CheckBatchStream`; every caller gets its own answer, or its own error.

How a batch forms: the first check of a batch leads it. The leader waits until the batch holds
`max_batch` checks, or `linger` has passed since it began, or every caller inside `check()` is
already in this batch or in one on its way (nobody else is coming: waiting longer would only add
latency; a single thread checking one message after another never waits); then, once fewer
than `depth` batches are in flight (the batch fills on meanwhile), it sends the batch.

Errors are the caller's own: a bad number is that caller's `CheckError` (INVALID_ARGUMENT, the
details the unary Check would give), never its neighbours'. A batch that gets no answer (server
down, deadline) is retried as `Client.check` retries; then each of its callers fails as
`Client.check` would: with `fail_closed` a suppressed `CheckResult` (scope UNKNOWN,
`failed_closed`), otherwise a `CheckError` with the call's code.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from _thread import allocate_lock
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import grpc

from anning import _wire
from anning.client import FAILED_CLOSED, RESULTS, RETRYABLE, CheckError, CheckResult

if TYPE_CHECKING:
    from anning.client import Client

__all__ = ["Batch", "Checker", "Transport", "check_settings", "encode", "outcome", "validate"]

Transport = Literal["stream", "unary"]
# Codes a fail-closed client still raises: the request is wrong, no answer will ever differ.
NOT_FALLBACK = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED)
_GRACE = 0.1  # seconds a caller waits past its batch's deadline before it gives up by itself


class Batch:
    """The checks of one batch and, once answered, its codes and errors, or why it failed."""

    __slots__ = ("attempts", "categories", "codes", "deadline", "errors", "failure", "numbers",
                 "senders", "started", "timer", "waiters")

    def __init__(self) -> None:
        self.senders: list[str] = []
        self.numbers: list[str | int] = []
        self.categories: list[str] = []
        self.waiters: list[Any] = []  # a lock a caller (threads); unused by anning.aio
        self.started = 0.0
        self.deadline = 0.0
        self.codes: list[int] = []
        self.errors: dict[int, str] = {}
        self.failure: tuple[grpc.StatusCode, str] | None = None
        self.attempts = 0
        self.timer: Any = None  # anning.aio: the deadline's timer handle

    def __len__(self) -> int:
        return len(self.senders)

    def answer(self, response: bytes) -> None:
        codes, errors = _wire.decode_results(response, len(self.senders))
        self.codes, self.errors = codes.tolist(), {**self.errors, **errors}

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        self.failure = (code, details)


def validate(sender: object, number: object, category: object) -> None:
    """A check that cannot even be sent is its caller's error at once, not its batch's."""
    if type(sender) is not str:
        raise CheckError(grpc.StatusCode.INVALID_ARGUMENT, f"sender: {sender!r} is not text")
    if type(number) is not str and type(number) is not int:
        raise CheckError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"number: {number!r} is neither text nor an integer")
    if type(category) is not str:
        raise CheckError(grpc.StatusCode.INVALID_ARGUMENT, f"category: {category!r} is not text")


def encode(batch: Batch) -> tuple[bytes, list[int] | None]:
    """The CheckBatchRequest of a batch, and None; or, when some of its texts cannot be sent as
    UTF-8 (a lone surrogate), the request of the others and their positions, the bad ones
    getting their errors."""
    try:
        return _wire.encode_checks(batch.senders, batch.numbers, batch.categories), None
    except UnicodeEncodeError:
        pass
    keep: list[int] = []
    for i, texts in enumerate(zip(batch.senders, batch.numbers, batch.categories, strict=True)):
        for name, text in zip(("sender", "number", "category"), texts, strict=True):
            try:
                str(text).encode("utf-8")
            except UnicodeEncodeError:
                batch.errors[i] = f"{name}: {text!r} is not valid text"
                break
        else:
            keep.append(i)
    data = _wire.encode_checks([batch.senders[i] for i in keep], [batch.numbers[i] for i in keep],
                               [batch.categories[i] for i in keep])
    return data, keep


def answer(batch: Batch, response: bytes, keep: list[int] | None) -> None:
    """Take a batch's response (of the items `keep` when some could not be sent)."""
    if keep is None:
        batch.answer(response)
        return
    codes, errors = _wire.decode_results(response, len(keep))
    batch.codes = [0] * len(batch)
    for j, i in enumerate(keep):
        batch.codes[i] = int(codes[j])
        if j in errors:
            batch.errors[i] = errors[j]


def outcome(batch: Batch, i: int, fail_closed: bool) -> CheckResult:
    """Caller i's answer, or its own error (a new exception object for each caller)."""
    if batch.failure is not None:
        code, details = batch.failure
        if fail_closed and code not in NOT_FALLBACK:
            return FAILED_CLOSED
        raise CheckError(code, details)
    if batch.errors:
        error = batch.errors.get(i)
        if error is not None:  # "checks[7].number: ..." -> "number: ...", as unary Check says
            if error.startswith("checks["):
                error = error.partition("].")[2]
            raise CheckError(grpc.StatusCode.INVALID_ARGUMENT, error)
    return RESULTS[batch.codes[i]]


def check_settings(max_batch: int, linger: float, depth: int, transport: str) -> None:
    """A checker's settings (both checkers', threads' and tasks'), ValueError naming them."""
    if max_batch < 1 or depth < 1 or not 0 <= linger < 1:
        raise ValueError(f"max_batch {max_batch!r}, depth {depth!r}, linger {linger!r}: "
                         "max_batch and depth at least 1, linger in seconds below 1")
    if transport not in ("stream", "unary"):
        raise ValueError(f"transport: {transport!r} is neither 'stream' nor 'unary'")


class Checker:
    """Thread-safe coalescing checks over one client's channel (see the module's text).

        with client.checker() as checker:          # shared by every thread of the port
            if checker.check("【京东】", "13812345678"):
                ...                                # suppressed (or failed closed): do not send
    """

    def __init__(self, client: Client, *, max_batch: int = 1000, linger: float = 0.0005,
                 depth: int = 2, transport: Transport = "stream") -> None:
        check_settings(max_batch, linger, depth, transport)
        self.client = client
        self.max_batch, self.linger, self.depth = max_batch, linger, depth
        self.transport = transport
        self._mutex = threading.Lock()
        self._filled = threading.Condition(self._mutex)  # the open batch's leader waits here
        self._slots = threading.Condition(self._mutex)  # leaders of closed batches wait here
        self._open = Batch()
        self._queued: deque[Batch] = deque()  # closed, waiting for a slot, in order
        self._leader_waiting = False
        self._inside = 0  # callers inside check()
        self._in_flight = 0
        self._closed_items = 0  # checks in batches closed and not yet answered
        self._closed = False
        self._stream = _Stream(self) if transport == "stream" else None
        self.batches = 0  # sent, for the curious (benchmarks print the mean batch)
        self.checks = 0

    # -- the caller's side -------------------------------------------------------------------
    def check(self, sender: str, number: str | int, category: str = "") -> CheckResult:
        validate(sender, number, category)
        waiter = allocate_lock()
        waiter.acquire()
        with self._mutex:
            if self._closed:
                raise CheckError(grpc.StatusCode.CANCELLED, "the checker is closed")
            batch = self._open
            i = len(batch.senders)
            batch.senders.append(sender)
            batch.numbers.append(number)
            batch.categories.append(category)
            batch.waiters.append(waiter)
            self._inside += 1
            if i == 0:
                batch.started = time.monotonic()
                batch.deadline = batch.started + self.client.timeout
            if i + 1 >= self.max_batch:  # full: closed now, its leader sends it
                self._open = Batch()
                self._closed_items += i + 1
                self._filled.notify()
            elif self._leader_waiting and self._nobody_coming():
                self._filled.notify()
        try:
            if i == 0:
                self._lead(batch)
            if not waiter.acquire(timeout=max(batch.deadline - time.monotonic(), 0) + _GRACE):
                self._expire(batch)
                if not waiter.acquire(timeout=1.0):  # no word at all: this caller's own end
                    late = Batch()
                    late.fail(grpc.StatusCode.DEADLINE_EXCEEDED,
                              "deadline exceeded before anning answered")
                    return outcome(late, 0, self.client.fail_closed)
            return outcome(batch, i, self.client.fail_closed)
        finally:
            with self._mutex:
                self._inside -= 1
                if self._leader_waiting and self._nobody_coming():
                    self._filled.notify()

    def _nobody_coming(self) -> bool:
        """Every caller inside check() is in the open batch or in one on its way."""
        return self._inside - self._closed_items - len(self._open.senders) <= 0

    # -- the leader's side -------------------------------------------------------------------
    def _lead(self, batch: Batch) -> None:
        with self._mutex:
            if batch is self._open:  # it fills on until it may go and a slot is free
                until = batch.started + self.linger
                self._leader_waiting = True
                while batch is self._open:
                    left = until - time.monotonic()
                    settled = left <= 0 or self._nobody_coming()
                    if settled and self._in_flight < self.depth and not self._queued:
                        self._open = Batch()
                        self._closed_items += len(batch)
                        break
                    self._filled.wait(0.05 if settled else left)  # slots free notify
                self._leader_waiting = False
            self._queued.append(batch)  # sent in the order they were closed
            while self._in_flight >= self.depth or self._queued[0] is not batch:
                self._slots.wait()
            self._queued.popleft()
            self._in_flight += 1
            self.batches += 1
            self.checks += len(batch)
            if self._queued:
                self._slots.notify_all()
        if self._stream is not None:
            self._stream.send(batch)
        else:
            self._send_unary(batch)

    def _send_unary(self, batch: Batch) -> None:
        client = self.client
        try:
            data, keep = encode(batch)
            timeout = batch.deadline - time.monotonic()
            if timeout <= 0:
                batch.fail(grpc.StatusCode.DEADLINE_EXCEEDED,
                           "deadline exceeded before the batch was sent")
            else:
                answer(batch, client._call(client._check_batch_bytes, data, timeout), keep)
        except grpc.RpcError as exc:
            batch.fail(exc.code(), exc.details() or "")
        except Exception as exc:  # never leave the callers waiting
            batch.fail(grpc.StatusCode.INTERNAL, f"checker: {exc!r}")
        self.complete(batch)

    def complete(self, batch: Batch) -> None:
        """The batch is answered (or failed): free its slot, wake its callers."""
        with self._mutex:
            self._in_flight -= 1
            self._closed_items -= len(batch)
            self._slots.notify_all()
            if self._leader_waiting:
                self._filled.notify()
        for waiter in batch.waiters:
            waiter.release()

    def _expire(self, batch: Batch) -> None:
        if self._stream is not None:
            self._stream.expire(batch)

    # -- the end -----------------------------------------------------------------------------
    def close(self) -> None:
        """No new checks; the batches in flight are answered first."""
        with self._mutex:
            self._closed = True
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_END = object()


class _Stream:
    """Batches on one CheckBatchStream, answered in order by a reader thread; when the stream
    breaks, what it had not answered is sent again on a new one (as Client.check retries) or
    failed."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self._method = checker.client._check_batch_stream
        self._lock = threading.Lock()
        self._call: Any = None
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._fifo: deque[tuple[Batch, list[int] | None]] = deque()
        self._reader: threading.Thread | None = None

    def send(self, batch: Batch) -> None:
        try:
            data, keep = encode(batch)
            with self._lock:
                if self._call is None:
                    self._open()
                self._fifo.append((batch, keep))
                self._requests.put(data)
        except Exception as exc:  # a closed channel, ...: never leave the callers waiting
            batch.fail(grpc.StatusCode.CANCELLED if isinstance(exc, ValueError)
                       else grpc.StatusCode.INTERNAL, f"checker: {exc}")
            self.checker.complete(batch)

    def _open(self) -> None:
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        fifo: deque[tuple[Batch, list[int] | None]] = deque()
        call = self._method(iter(requests.get, _END), metadata=self.checker.client.metadata)
        self._call, self._requests, self._fifo = call, requests, fifo
        self._reader = threading.Thread(target=self._read, args=(call, fifo),
                                        name="anning-checker-stream", daemon=True)
        self._reader.start()

    def _read(self, call: Iterator[bytes], fifo: deque[tuple[Batch, list[int] | None]]) -> None:
        failure: tuple[grpc.StatusCode, str] = (grpc.StatusCode.UNAVAILABLE,
                                                "the stream ended before every answer")
        try:
            for response in call:
                with self._lock:
                    batch, keep = fifo.popleft()
                try:
                    answer(batch, response, keep)
                except Exception as exc:
                    batch.fail(grpc.StatusCode.INTERNAL, f"checker: {exc!r}")
                self.checker.complete(batch)
        except grpc.RpcError as exc:
            failure = (exc.code(), exc.details() or "")
        except Exception as exc:
            failure = (grpc.StatusCode.INTERNAL, f"checker: {exc!r}")
        with self._lock:
            if self._call is call:
                self._call = None
            orphans = list(fifo)
            fifo.clear()
        if orphans:
            self._again(orphans, failure)

    def _again(self, orphans: list[tuple[Batch, list[int] | None]],
               failure: tuple[grpc.StatusCode, str]) -> None:
        """Send again what a broken stream had not answered, or fail it."""
        client = self.checker.client
        retryable = failure[0] in RETRYABLE
        later = []
        for batch, keep in orphans:
            batch.attempts += 1
            if retryable and batch.attempts <= client.retries and \
                    time.monotonic() < batch.deadline:
                later.append((batch, keep))
            else:
                now = time.monotonic()
                if now >= batch.deadline:
                    batch.fail(grpc.StatusCode.DEADLINE_EXCEEDED,
                               "deadline exceeded before anning answered")
                else:
                    batch.fail(*failure)
                self.checker.complete(batch)
        if not later:
            return
        delay = client.backoff * (2 ** (later[0][0].attempts - 1)) * (1 + random.random())
        time.sleep(max(min(delay, min(b.deadline for b, _ in later) - time.monotonic()), 0))
        for batch, _keep in later:
            self.send(batch)

    def expire(self, batch: Batch) -> None:
        """A caller waited past its batch's deadline: end the stream (the reader fails the late
        batches and sends the others again on a new one)."""
        with self._lock:
            if self._call is not None and any(b is batch for b, _ in self._fifo):
                self._call.cancel()

    def close(self) -> None:
        with self._lock:
            call, reader = self._call, self._reader
            if call is not None:
                self._requests.put(_END)  # half-close: the server answers what it has
        if reader is not None:
            reader.join(timeout=self.checker.client.timeout + 1.0)
        if call is not None:
            call.cancel()


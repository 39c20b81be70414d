"""Requests decoded inside anning's own handling; bad ones answered, counted and logged sparingly.

Every method is registered with raw-bytes (de)serialisers (anning.server.servicers): a request
that gRPC decoded for us, and that failed, was answered UNKNOWN with a traceback in the log
for each call (anyone who can reach the port could flood the log). Here a corrupt or truncated
message, or a string field that is not UTF-8, is an `UndecodableRequest` (INVALID_ARGUMENT)
naming the first fault: the field, its byte offset and what is wrong with it.

A bad request is counted (`anning_bad_requests_total{method,reason}`) and logged through one
`SparseLog`: at most a few lines a second in total, without the values sent (a number is
personal data, and the caller has the details in its answer), and with a count of the lines
held back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from anning.errors import InvalidInput, TooLarge
from anning.server.status import status_of

__all__ = ["BadRequests", "SparseLog", "UndecodableRequest", "abort", "brief", "decode", "fault",
           "send"]

log = logging.getLogger("anning.server")
M = TypeVar("M")

MAX_DETAILS = 1024  # bytes of an error's details: gRPC sends them in a trailer
_MAX_FIELDS = 4096  # the walk that names a fault stops here: it is Python, on the event loop
_MAX_DEPTH = 32
_TYPE_STRING, _TYPE_MESSAGE = 9, 11  # FieldDescriptor.TYPE_*


class UndecodableRequest(InvalidInput):
    """Bytes that are not a message of the method's request type."""


def decode(message: type[M], raw: bytes) -> M:
    """The request `raw` as a `message`; UndecodableRequest naming the first fault."""
    try:
        return message.FromString(raw)  # type: ignore[attr-defined, no-any-return]
    except (DecodeError, RecursionError, ValueError) as exc:
        descriptor = message.DESCRIPTOR  # type: ignore[attr-defined]
        why = fault(descriptor, raw) or f"the wire format is corrupt ({exc})"
        raise UndecodableRequest(f"request: not a valid {descriptor.full_name}: {why}") from None


def fault(descriptor: Any, raw: bytes) -> str | None:
    """The first fault of `raw` as a message of `descriptor` ("events[2].number at byte 31: not
    UTF-8"), or None when none is found within the first few thousand fields."""
    budget = [_MAX_FIELDS]
    found = _walk(descriptor, raw, 0, len(raw), "", budget, 0)
    return found if isinstance(found, str) else None


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return None


def _walk(descriptor: Any, data: bytes, pos: int, end: int, prefix: str, budget: list[int],
          depth: int, group: int = 0) -> str | int | None:
    """Walk the fields in data[pos:end]: a fault (str), the position after the end-group tag
    of `group` (int), or None (no fault found, or the budget spent)."""
    if depth > _MAX_DEPTH:
        return f"{prefix or 'the message'}: nested more than {_MAX_DEPTH} deep"
    seen: dict[int, int] = {}
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            return None
        at = pos
        tag = _varint(data, pos, end)
        if tag is None:
            return f"byte {at}: a field tag cut off"
        key, pos = tag
        number, wire = key >> 3, key & 7
        if number == 0:
            return f"byte {at}: field number 0"
        field = descriptor.fields_by_number.get(number) if descriptor is not None else None
        name = prefix + (field.name if field is not None else f"field {number}")
        if field is not None and _repeated(field):
            seen[number] = seen.get(number, -1) + 1
            name += f"[{seen[number]}]"
        if wire == 0:
            got = _varint(data, pos, end)
            if got is None:
                return f"{name} at byte {at}: a number cut off"
            pos = got[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > end:
                return f"{name} at byte {at}: a fixed-size number cut off"
        elif wire == 2:
            got = _varint(data, pos, end)
            if got is None:
                return f"{name} at byte {at}: its length cut off"
            size, pos = got
            if size > end - pos:
                return f"{name} at byte {at}: {size} bytes said, {end - pos} there"
            if field is not None and field.type == _TYPE_STRING:
                try:
                    data[pos:pos + size].decode("utf-8")
                except UnicodeDecodeError as exc:
                    return f"{name} at byte {pos + exc.start}: not UTF-8"
            elif field is not None and field.type == _TYPE_MESSAGE:
                inner = _walk(field.message_type, data, pos, pos + size, name + ".", budget,
                              depth + 1)
                if inner is not None and not isinstance(inner, int):
                    return inner
            pos += size
        elif wire == 3:  # a group: proto3 has none, but a parser skips an unknown one whole
            inner = _walk(None, data, pos, end, name + ".", budget, depth + 1, group=number)
            if isinstance(inner, str):
                return inner
            if inner is None:
                return None if budget[0] < 0 else f"{name} at byte {at}: a group never closed"
            pos = inner
        elif wire == 4:
            if number != group:
                return f"byte {at}: the end of a group that was never opened"
            return pos
        else:
            return f"{name} at byte {at}: wire type {wire}, which does not exist"
    return None


def _repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def brief(details: str, limit: int = MAX_DETAILS) -> str:
    """`details` cut in the middle to at most about `limit` bytes of UTF-8: an error that
    quotes a 10 MB field must still fit in a trailer, where each byte past ASCII takes three
    (a client refuses trailers past 8 KiB and would see something else than the answer); the
    end is kept, which says what was wrong ("... is too long")."""
    data = details.encode("utf-8")
    if len(data) <= limit:
        return details
    keep = limit - 40
    head = data[:keep * 2 // 3].decode("utf-8", "ignore")
    tail = data[len(data) - keep // 3:].decode("utf-8", "ignore")
    cut = len(details) - len(head) - len(tail)
    return f"{head}…[{cut:,} characters]…{tail}"


class SparseLog:
    """Lines to a logger at most `rate` a second in total (after a burst of `burst`); the lines
    held back are counted and the count said with the next line that goes out, or a second
    after the first one held back when there is no next line."""

    def __init__(self, logger: logging.Logger, rate: float = 2.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._held = 0
        self._flush_due = False
        self._lock = threading.Lock()

    def log(self, level: int, message: str) -> bool:
        """Log `message` (no %-formatting is applied) unless over the rate; True if it went."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                self._held += 1
                self._schedule_flush()
                return False
            self._tokens -= 1
            held, self._held = self._held, 0
        if held:
            message += f" ({held:,} lines like it held back before this one)"
        self._logger.log(level, "%s", message)
        return True

    def flush(self) -> None:
        """Say how many lines were held back, if any."""
        with self._lock:
            self._flush_due = False
            held, self._held = self._held, 0
        if held:
            self._logger.warning("%s lines about bad requests held back (at most %g a second "
                                 "are logged)", f"{held:,}", self._rate)

    def _schedule_flush(self) -> None:
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop: the next line that goes out says the count
            return
        self._flush_due = True
        loop.call_later(1.0, self.flush)


_REASONS = {"undecodable", "invalid", "too_large", "failed"}


class BadRequests:
    """Requests refused as bad input (and calls that failed), counted by method and reason,
    and logged sparingly; the one place an error becomes a status code and its details."""

    def __init__(self, counter: Any, errors: Any = None, sparse: SparseLog | None = None) -> None:
        self._counter = counter  # anning_bad_requests_total{method, reason}
        self._errors = errors  # anning_errors_total{method, code}
        self._children: dict[tuple[str, str], Any] = {}
        self.log = sparse or SparseLog(log)

    def answer(self, method: str, exc: Exception, peer: str) -> tuple[grpc.StatusCode, str]:
        """The code and details for an error: a bad request (INVALID_ARGUMENT, or too large)
        counted and logged sparingly, anything unexpected answered INTERNAL; the details cut
        short enough to go in a trailer."""
        mapped = status_of(exc)
        if mapped is None:
            self.failed(method, exc, peer)
            mapped = (grpc.StatusCode.INTERNAL, f"{method} failed: {exc}")
        elif isinstance(exc, UndecodableRequest):
            self.refused(method, "undecodable", exc, peer)
        elif isinstance(exc, InvalidInput):
            self.refused(method, "invalid", exc, peer)
        elif isinstance(exc, TooLarge):
            self.refused(method, "too_large", exc, peer)
        if self._errors is not None:
            self._errors.labels(method, mapped[0].name).inc()
        return mapped[0], brief(mapped[1])

    def count(self, method: str, reason: str) -> None:
        assert reason in _REASONS, reason
        child = self._children.get((method, reason))
        if child is None:
            child = self._children[(method, reason)] = self._counter.labels(method, reason)
        child.inc()

    def refused(self, method: str, reason: str, exc: BaseException, peer: str) -> None:
        """A bad request: counted, and logged without the values it sent."""
        self.count(method, reason)
        self.log.log(logging.INFO, f"bad request to {method} from {peer}: {reason}, "
                                   f"{_what(exc)}")

    def failed(self, method: str, exc: BaseException, peer: str) -> None:
        """A call that failed on anning's side (a bug): counted, and logged sparingly too."""
        self.count(method, "failed")
        self.log.log(logging.ERROR, f"{method} failed: {exc!r} (answered INTERNAL to {peer})")


def _what(exc: BaseException) -> str:
    """What was wrong, without the value: the field an InvalidInput names ("number: '12x' is
    not ..." -> "number"), or the whole of an UndecodableRequest (offsets and names only)."""
    text = str(exc)
    if isinstance(exc, UndecodableRequest):
        return text.removeprefix("request: ")
    field = text.split(":", 1)[0]
    return field if len(field) <= 64 and "'" not in field and '"' not in field else \
        type(exc).__name__


async def abort(context: Any, bad: BadRequests, method: str, exc: Exception) -> None:
    """End the call with the answer for `exc` (grpc.aio's context.abort raises)."""
    await context.abort(*bad.answer(method, exc, context.peer()))


async def send(context: Any, message: Any) -> None:
    """One answer of a stream. When the caller has gone (cancelled, or its connection dropped
    while the answer waited for it to read), the stream ends as cancelled, quietly: an answer
    yielded to gRPC, or a return after the failed write, fails again inside gRPC when it sends
    the status, and gRPC logs a traceback for each (anyone could fill the log by opening
    streams, never reading them, and cancelling)."""
    try:
        await context.write(message)
    except Exception:
        raise asyncio.CancelledError("the caller has gone") from None

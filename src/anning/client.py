"""anning.Client: what a carrier's SMS port calls before each message.

    with Client("anning.internal:50051", token=TOKEN) as client:
        if client.check("【京东】", "13812345678").suppressed:
            ...  # do not send
        checker = client.checker()  # many threads, one check each: coalesced into batches

Checks retry on UNAVAILABLE (and CANCELLED) with exponential backoff within their deadline.
With `fail_closed=True` a check that cannot be answered reports suppressed (scope UNKNOWN,
`failed_closed=True`) instead of raising: a port must never send because anning was down.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from anning.errors import AnningError
from anning.v1 import anning_pb2 as pb
from anning.v1 import anning_pb2_grpc as rpc

if TYPE_CHECKING:
    from anning.batching import Checker, Transport

__all__ = ["CheckError", "CheckResult", "Client", "StreamingChecker"]

SCOPES = ("NONE", "SENDER", "ENTITY", "GLOBAL")
# CANCELLED too: a synchronous call is never cancelled by its caller, so it is the server's
# doing, as when a draining gRPC server drops calls it had received but not yet taken up.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
# After a connection is lost gRPC waits 1 s, then 1.6 times longer each time, up to 120 s,
# before it tries again; every check meanwhile fails (closed) at once. A port would stop
# sending for up to two minutes after anning came back: try again from 0.2 s, at most every 2 s.
RECONNECT = (("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000))
_RETRYABLE = RETRYABLE


class CheckError(AnningError, grpc.RpcError):
    """One caller's error from a coalescing checker: an RpcError with the code and details the
    unary Check would have given that caller (INVALID_ARGUMENT for its bad number, the batch
    call's code when no answer came)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@dataclass(frozen=True)
class CheckResult:
    suppressed: bool
    scope: str  # NONE, SENDER, ENTITY, GLOBAL; UNKNOWN when failed closed
    error: str = ""
    failed_closed: bool = False

    def __bool__(self) -> bool:
        return self.suppressed


FAILED_CLOSED = CheckResult(True, "UNKNOWN", "no answer from anning", True)
_FAILED_CLOSED = FAILED_CLOSED
RESULTS = tuple(CheckResult(bool(code), SCOPES[code]) for code in range(4))


def _result(response: pb.CheckResponse) -> CheckResult:
    return CheckResult(response.suppressed, SCOPES[response.scope], response.error)


def open_channel(kind: Any, target: str, root_certificates: bytes | None,
                 private_key: bytes | None, certificate_chain: bytes | None, tls: bool,
                 options: Sequence[tuple[str, Any]]) -> Any:
    """A channel of `kind` (the `grpc` module, or `grpc.aio`) as both clients open theirs:
    64 MB messages, the reconnect settings, TLS when asked for or given certificates."""
    opts = [("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20), *RECONNECT, *options]
    if tls or root_certificates or certificate_chain:
        credentials = grpc.ssl_channel_credentials(root_certificates, private_key,
                                                   certificate_chain)
        return kind.secure_channel(target, credentials, options=opts)
    return kind.insecure_channel(target, options=opts)


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
        self.channel = open_channel(grpc, target, root_certificates, private_key,
                                    certificate_chain, tls, options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.fail_closed = fail_closed
        self.suppression = rpc.SuppressionStub(self.channel)
        self.opt_outs = rpc.OptOutsStub(self.channel)
        self.admin = rpc.AdminStub(self.channel)
        self._check_batch_raw = self.channel.unary_unary(
            "/anning.v1.Suppression/CheckBatch",
            request_serializer=pb.CheckBatchRequest.SerializeToString,
            response_deserializer=pb.CheckBatchResponse.FromString,
        )
        # raw bytes both ways, for the coalescing checkers (anning._wire encodes and decodes)
        self._check_batch_bytes = self.channel.unary_unary("/anning.v1.Suppression/CheckBatch")
        self._check_batch_stream = self.channel.stream_stream(
            "/anning.v1.Suppression/CheckBatchStream")

    # -- checks ------------------------------------------------------------------------------
    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return method(request, timeout=remaining, metadata=self.metadata)
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE or attempt == self.retries:
                    raise
            time.sleep(min(delay * (1 + random.random()), max(deadline - time.monotonic(), 0)))
            delay *= 2
        raise _DeadlineError()

    def _checked(self, call: Callable[[], Any], fallback: Any) -> Any:
        try:
            return call()
        except (grpc.RpcError, _DeadlineError) as exc:
            code = exc.code() if isinstance(exc, grpc.RpcError) else None
            if self.fail_closed and code not in (grpc.StatusCode.INVALID_ARGUMENT,
                                                 grpc.StatusCode.UNAUTHENTICATED,
                                                 grpc.StatusCode.PERMISSION_DENIED):
                return fallback
            raise

    def check(self, sender: str, number: str, category: str = "",
              timeout: float | None = None) -> CheckResult:
        request = pb.CheckRequest(sender=sender, number=str(number), category=category)
        return self._checked(
            lambda: _result(self._call(self.suppression.Check, request, timeout)),
            _FAILED_CLOSED)

    def check_batch(self, checks: Iterable[tuple[str, str] | tuple[str, str, str]],
                    timeout: float | None = None) -> list[CheckResult]:
        """Many (sender, number[, category]) checks in one call; a bad item gets its error."""
        items = [pb.CheckRequest(sender=c[0], number=str(c[1]),
                                 category=c[2] if len(c) > 2 else "") for c in checks]
        request = pb.CheckBatchRequest(checks=items)
        return self._checked(
            lambda: [_result(r) for r in self._call(self._check_batch_raw, request,
                                                    timeout).results],
            [_FAILED_CLOSED] * len(items))

    def check_columns(self, senders: Sequence[str], sender_index: np.ndarray,
                      numbers: np.ndarray, category: str = "",
                      timeout: float | None = None) -> np.ndarray:
        """The columnar form: numbers as uint64 E.164, a sender table and an index per number.
        Returns scope codes (uint8); failed closed: all SCOPE_UNKNOWN (255)."""
        request = pb.CheckColumnsRequest(
            senders=list(senders), category=category,
            sender_index=np.ascontiguousarray(sender_index, "<u4").tobytes(),
            numbers=np.ascontiguousarray(numbers, "<u8").tobytes(),
        )
        return self._checked(
            lambda: np.frombuffer(self._call(self.suppression.CheckColumns, request,
                                             timeout).scopes, np.uint8),
            np.full(len(numbers), 255, np.uint8))

    def stream(self) -> StreamingChecker:
        return StreamingChecker(self)

    def checker(self, *, max_batch: int = 1000, linger: float = 0.0005, depth: int = 2,
                transport: Transport = "stream") -> Checker:
        """A thread-safe checker whose `check(sender, number[, category])`, called from many
        threads, is coalesced into batches (`anning.batching`): each caller gets the answer
        `check` would give, or its own error; failing closed as this client does."""
        from anning.batching import Checker

        return Checker(self, max_batch=max_batch, linger=linger, depth=depth,
                       transport=transport)

    # -- writes and the rest -----------------------------------------------------------------
    def _write(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        return method(request, timeout=timeout or max(self.timeout, 5.0), metadata=self.metadata)

    def opt_out(self, number: str, scope: str, category: str = "", at_ms: int = 0,
                source: str = "", timeout: float | None = None) -> pb.WriteAck:
        request = pb.OptOutRequest(number=str(number), scope=scope, category=category,
                                   at_ms=at_ms, source=source)
        return self._write(self.opt_outs.OptOut, request, timeout)

    def opt_in(self, number: str, scope: str, category: str = "", at_ms: int = 0,
               source: str = "", timeout: float | None = None) -> pb.WriteAck:
        request = pb.OptOutRequest(number=str(number), scope=scope, category=category,
                                   at_ms=at_ms, source=source)
        return self._write(self.opt_outs.OptIn, request, timeout)

    def reassign(self, number: str, at_ms: int = 0, source: str = "",
                 timeout: float | None = None) -> pb.WriteAck:
        request = pb.ReassignRequest(number=str(number), at_ms=at_ms, source=source)
        return self._write(self.opt_outs.Reassign, request, timeout)

    def write_batch(self, events: Iterable[pb.WriteEvent],
                    timeout: float | None = None) -> pb.WriteBatchAck:
        """Many events, durable together before the one acknowledgement (all or none)."""
        request = pb.WriteBatchRequest(events=list(events))
        return self._write(self.opt_outs.WriteBatch, request, timeout)

    def report_reply(self, sender: str, number: str, text: str, at_ms: int = 0,
                     timeout: float | None = None) -> pb.ReplyResult:
        request = pb.ReplyRequest(sender=sender, number=str(number), text=text, at_ms=at_ms)
        return self._write(self.opt_outs.ReportReply, request, timeout)

    def explain(self, sender: str, number: str, category: str = "",
                timeout: float | None = None) -> pb.Explanation:
        request = pb.CheckRequest(sender=sender, number=str(number), category=category)
        return self._call(self.opt_outs.Explain, request, timeout)

    def status(self, timeout: float | None = None) -> pb.StatusReply:
        return self._call(self.admin.Status, pb.StatusRequest(), timeout)

    def load_snapshot(self, paths: Sequence[str], entities: str = "", as_of: str = "",
                      allow_shrink: bool = False, timeout: float = 3600.0) -> pb.LoadReport:
        request = pb.LoadSnapshotRequest(paths=list(paths), entities=entities, as_of=as_of,
                                         allow_shrink=allow_shrink)
        return self.admin.LoadSnapshot(request, timeout=timeout, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _DeadlineError(grpc.RpcError):
    """The deadline passed between retries: raised as the RpcError a caller already handles."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self) -> str:
        return "deadline exceeded before anning answered"


class StreamingChecker:
    """Checks over one CheckStream: answers come in order, one per check."""

    _END = object()

    def __init__(self, client: Client) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses = client.suppression.CheckStream(iter(self._requests.get, self._END),
                                                         metadata=client.metadata)
        self._lock = threading.Lock()

    def check(self, sender: str, number: str, category: str = "") -> CheckResult:
        with self._lock:
            self._requests.put(pb.CheckRequest(sender=sender, number=str(number),
                                               category=category))
            return _result(next(self._responses))

    def check_many(self, checks: Iterable[tuple[str, str]]) -> list[CheckResult]:
        """Pipelined: all requests go out, then the answers are read."""
        with self._lock:
            count = 0
            for sender, number in checks:
                self._requests.put(pb.CheckRequest(sender=sender, number=str(number)))
                count += 1
            return [_result(next(self._responses)) for _ in range(count)]

    def close(self) -> None:
        self._requests.put(self._END)
        for _ in self._responses:
            pass

    def __enter__(self) -> StreamingChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

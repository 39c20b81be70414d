"""The one interface between the gate and anning: checks in columns, and users' replies.

Two implementations:

- `GrpcBackend` (the default): `Suppression.CheckColumns` and `OptOuts.ReportReply` over
  `grpc.aio` stubs on the gate's own event loop. The gate then holds no list and no write log:
  anning stays the one owner of the data, the gate is stateless and can be restarted, scaled
  or moved freely, and "anning stopped" arrives as UNAVAILABLE, which the gate answers with a
  temporary error. CheckColumns carries numbers as packed uint64 and senders as a small table,
  so a batch is built and read with numpy, not a protobuf message per check.
- `EngineBackend` (`--data DIR`): an `anning.engine.Engine` opened in the gate's process on
  the server's data directory (the engine shares the write log between processes): no network
  hop, at the cost of the list's memory in the gate. Blocking engine calls run in a thread.

Every use of the engine's API is in this file, so that if it moves one file changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["BackendUnavailable", "CheckBackend", "CheckColumns", "EngineBackend",
           "GrpcBackend", "InvalidReply", "ReplyOutcome", "make_backend"]

log = logging.getLogger("anning.gate")


class BackendUnavailable(Exception):
    """anning gave no answer (down, not ready, too slow, writes stopped): fail closed."""


class InvalidReply(ValueError):
    """anning refused a reply as bad input (the number, the sender); it names the field."""


@dataclass(frozen=True, slots=True)
class CheckColumns:
    """Many checks: `senders` is a table of distinct sender names, `sender_index` (uint32)
    picks one per check, `numbers` (uint64 E.164) and `category` (uint8 into `categories`)
    are one per check."""

    senders: list[str]
    sender_index: np.ndarray
    numbers: np.ndarray
    category: np.ndarray
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    recognised: bool
    action: str  # opt_out, opt_out_global, opt_in, none
    scope: str  # what the event covers
    sequence: int  # of the durable event (0: nothing recorded)


class CheckBackend(Protocol):
    async def check_many(self, batch: CheckColumns) -> np.ndarray:
        """One scope code (0 none, 1 sender, 2 entity, 3 global) per check, uint8. Raises
        BackendUnavailable when anning cannot answer."""
        ...

    async def record_reply(self, sender: str, number: str, text: str) -> ReplyOutcome:
        """Run a user's reply to `sender` through the reply rules (SPEC §4) and make the event
        durable before returning. Raises BackendUnavailable or InvalidReply."""
        ...

    async def close(self) -> None: ...


def _groups(batch: CheckColumns) -> list[tuple[str, np.ndarray]]:
    """(category, positions) for each category present; one group in the common case."""
    present = np.unique(batch.category)
    if len(present) == 1:
        return [(batch.categories[int(present[0])], np.arange(len(batch.numbers)))]
    return [(batch.categories[int(c)], np.flatnonzero(batch.category == c)) for c in present]


class GrpcBackend:
    def __init__(self, target: str, token: str | None = None, timeout: float = 0.5) -> None:
        import grpc

        from anning.v1 import anning_pb2 as pb
        from anning.v1 import anning_pb2_grpc as rpc

        self._grpc = grpc
        self._pb = pb
        self.channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            # reconnect quickly once anning is back: the default backoff grows to 2 minutes
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.suppression = rpc.SuppressionStub(self.channel)
        self.opt_outs = rpc.OptOutsStub(self.channel)

    async def check_many(self, batch: CheckColumns) -> np.ndarray:
        pb = self._pb
        codes = np.zeros(len(batch.numbers), np.uint8)

        async def one(category: str, where: np.ndarray) -> None:
            request = pb.CheckColumnsRequest(
                senders=batch.senders, category=category,
                sender_index=np.ascontiguousarray(batch.sender_index[where], "<u4").tobytes(),
                numbers=np.ascontiguousarray(batch.numbers[where], "<u8").tobytes())
            reply = await self.suppression.CheckColumns(request, timeout=self.timeout,
                                                        metadata=self.metadata)
            got = np.frombuffer(reply.scopes, np.uint8)
            if len(got) != len(where):
                raise BackendUnavailable(f"CheckColumns answered {len(got)} scopes for "
                                         f"{len(where)} checks")
            codes[where] = got

        try:
            await asyncio.gather(*(one(c, w) for c, w in _groups(batch)))
        except self._grpc.aio.AioRpcError as exc:
            raise BackendUnavailable(f"CheckColumns: {exc.code().name}: {exc.details()}") \
                from None
        return codes

    async def record_reply(self, sender: str, number: str, text: str) -> ReplyOutcome:
        request = self._pb.ReplyRequest(sender=sender, number=number, text=text)
        try:
            # a durable write: fsync on the server, so more time than a check
            result = await self.opt_outs.ReportReply(request, timeout=max(self.timeout, 5.0),
                                                     metadata=self.metadata)
        except self._grpc.aio.AioRpcError as exc:
            if exc.code() == self._grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidReply(exc.details()) from None
            raise BackendUnavailable(f"ReportReply: {exc.code().name}: {exc.details()}") \
                from None
        return ReplyOutcome(result.recognised, result.action, result.scope, result.ack.sequence)

    async def close(self) -> None:
        await self.channel.close()


class EngineBackend:
    """The engine in this process, on the server's data directory."""

    def __init__(self, data_dir: str) -> None:
        from anning.engine import Engine
        from anning.errors import CorruptFile, DiskFull, InvalidInput, NotReady, WritesStopped

        self._invalid = InvalidInput
        self._unavailable: tuple[type[Exception], ...] = (NotReady, CorruptFile, DiskFull,
                                                          WritesStopped, OSError)
        self.engine = Engine(data_dir=data_dir)
        if not self.engine.open_snapshot():
            log.warning("no snapshot in %s yet: checks answer temporary errors until one "
                        "is there", data_dir)

    def _check(self, batch: CheckColumns) -> np.ndarray:
        engine = self.engine
        state = engine.serving()  # one list for the batch: its sender ids are its own
        ids = engine.sender_ids(list(batch.senders), state)[batch.sender_index]
        codes = np.zeros(len(batch.numbers), np.uint8)
        for category, where in _groups(batch):
            codes[where] = engine.check_ids(ids[where], batch.numbers[where], category, state)
        return codes

    async def check_many(self, batch: CheckColumns) -> np.ndarray:
        try:
            return await asyncio.to_thread(self._check, batch)
        except self._unavailable as exc:
            raise BackendUnavailable(f"engine: {exc}") from None

    async def record_reply(self, sender: str, number: str, text: str) -> ReplyOutcome:
        try:
            outcome = await asyncio.to_thread(self.engine.reply, sender, number, text)
        except self._invalid as exc:
            raise InvalidReply(str(exc)) from None
        except self._unavailable as exc:
            raise BackendUnavailable(f"engine: {exc}") from None
        return ReplyOutcome(outcome.recognised, outcome.action, outcome.scope, outcome.sequence)

    async def close(self) -> None:
        return None


def make_backend(target: str, token: str | None, timeout: float,
                 data: str | None) -> CheckBackend:
    if data is not None:
        return EngineBackend(data)
    return GrpcBackend(target, token, timeout)


def normalize_numbers(texts: list[str], default_country: int) -> np.ndarray:
    """E.164 uint64 for each text, 0 where the text is not a number (compiled, one call)."""
    from anning import normalize_numbers as core

    result: np.ndarray = core(texts, default_country, strict=False)
    return result


def number_error(text: str, default_country: int) -> str:
    """Why a number was refused, naming the field and the value."""
    from anning import InvalidInput, normalize_number

    try:
        normalize_number(text, default_country, "destination_addr")
    except InvalidInput as exc:
        return str(exc)
    return f"destination_addr: {text!r} is not a number"


def normalize_sender(text: str, field: str) -> str:
    """A sender's canonical name (SPEC §3); ValueError naming the field and the value."""
    from anning import normalize_sender as core

    name: str = core(text, field)
    return name

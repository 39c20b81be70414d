"""Checks batched across sessions: every message that arrived while the previous backend call
was in flight goes into the next one, so the gate makes one CheckColumns call (or one
`check_ids`) per round, never one per PDU, and a busy gate makes fewer, larger calls.

A message is suppressed when any of its senders is (the signature, the port, the account's
entity); its answer is the most specific scope that matched.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np

from anning.gate.backend import (
    BackendUnavailable,
    CheckBackend,
    CheckColumns,
    normalize_numbers,
    normalize_sender,
    number_error,
)
from anning.gate.config import CATEGORIES
from anning.gate.metrics import GateMetrics

__all__ = ["CheckBatcher", "Decision"]

log = logging.getLogger("anning.gate")

NONE, SENDER, ENTITY, GLOBAL = range(4)
UNAVAILABLE = -1
BAD_NUMBER = -2
BAD_SENDER = -3


@dataclass(frozen=True, slots=True)
class Decision:
    """A scope code (0-3: suppressed when above 0) or one of UNAVAILABLE, BAD_NUMBER,
    BAD_SENDER with the reason; `number` is the E.164 destination when it was read."""

    code: int
    number: int = 0
    reason: str = ""
    sender: str = ""  # the first sender of the message, normalised (the one replies go to)

    @property
    def clean(self) -> bool:
        return self.code == NONE


@dataclass(slots=True)
class _Ask:
    senders: list[str]
    number: str
    category: int
    future: asyncio.Future[Decision]


class CheckBatcher:
    def __init__(self, backend: CheckBackend, metrics: GateMetrics, default_country: int = 86,
                 batch_max: int = 2000, concurrency: int = 2) -> None:
        self.backend = backend
        self.metrics = metrics
        self.default_country = default_country
        self.batch_max = batch_max
        self._asks: list[_Ask] = []
        self._wake = asyncio.Event()
        self._names: dict[str, str | Exception] = {}  # raw sender -> normalised, or why not
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(concurrency)]

    def decide(self, senders: list[str], number: str, category: str) -> asyncio.Future[Decision]:
        """The decision for one message: its senders (raw text), its destination (raw)."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._asks.append(_Ask(senders, number, CATEGORIES.index(category), future))
        self._wake.set()
        return future

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            while not self._asks:
                self._wake.clear()
                await self._wake.wait()
            asks, self._asks = self._asks[:self.batch_max], self._asks[self.batch_max:]
            try:
                await self._run(asks)
            except Exception as exc:  # never leave a submit unanswered
                log.exception("check batch failed")
                for ask in asks:
                    if not ask.future.done():
                        ask.future.set_result(Decision(UNAVAILABLE, reason=repr(exc)))

    def _name(self, raw: str) -> str | Exception:
        name = self._names.get(raw)
        if name is None:
            try:
                name = normalize_sender(raw, "sender")
            except ValueError as exc:
                name = exc
            if len(self._names) > 100_000:
                self._names.clear()
            self._names[raw] = name
        return name

    async def _run(self, asks: list[_Ask]) -> None:
        numbers = normalize_numbers([a.number for a in asks], self.default_country)
        table: dict[str, int] = {}
        index: list[int] = []
        owners: list[int] = []  # the ask each check belongs to
        taken: list[_Ask] = []
        kept_at: list[int] = []  # positions in `asks` of those taken
        firsts: list[str] = []
        for i, ask in enumerate(asks):
            if numbers[i] == 0:
                ask.future.set_result(Decision(BAD_NUMBER, reason=number_error(
                    ask.number, self.default_country)))
                continue
            names: list[str] = []
            for raw in ask.senders:
                name = self._name(raw)
                if isinstance(name, Exception):
                    break
                names.append(name)
            else:
                at = len(taken)
                taken.append(ask)
                kept_at.append(i)
                firsts.append(names[0])
                for name in names:
                    index.append(table.setdefault(name, len(table)))
                    owners.append(at)
                continue
            ask.future.set_result(Decision(BAD_SENDER, int(numbers[i]),
                                           reason=f"source_addr: {raw!r}: {name}"))
        if not taken:
            return
        owner = np.fromiter(owners, np.intp, len(owners))
        kept = np.fromiter(kept_at, np.intp, len(kept_at))
        batch = CheckColumns(
            senders=list(table), sender_index=np.fromiter(index, np.uint32, len(index)),
            numbers=numbers[kept][owner], category=np.fromiter(
                (a.category for a in taken), np.uint8, len(taken))[owner],
            categories=CATEGORIES)
        self.metrics.batch.observe(len(index))
        try:
            codes = await self.backend.check_many(batch)
        except BackendUnavailable as exc:
            log.warning("anning unavailable, %d submits answered with a temporary error: %s",
                        len(taken), exc)
            for ask in taken:
                if not ask.future.done():
                    ask.future.set_result(Decision(UNAVAILABLE, reason=str(exc)))
            return
        # the most specific scope per message: 0 (none) sorts after every match
        ranked = np.where(codes == 0, 4, codes).astype(np.uint8)
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        best = np.minimum.reduceat(ranked, starts)
        best[best == 4] = 0
        e164 = numbers[kept]
        for ask, code, number, first in zip(taken, best.tolist(), e164.tolist(), firsts,
                                            strict=True):
            if not ask.future.done():
                ask.future.set_result(Decision(code, number, sender=first))

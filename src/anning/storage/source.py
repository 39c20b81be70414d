"""The seam between the engine and wherever events are made durable and shared.

The engine serves a snapshot with real-time events on top; it asks an `EventSource` to make a
write durable (and learns its sequence), to bring what other processes or replicas appended,
and to fold what it holds into a checkpoint. The local write log of the data directory
(`anning.storage.local.LocalEventLog`) is the first implementation; a replicated log is another,
without a change to serving or checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from anning.model.events import Event, EventTable

__all__ = ["CheckpointReport", "EventSource", "Update"]


@dataclass(frozen=True)
class CheckpointReport:
    rows: int  # latest events held, one per (number, scope, category) and per reassignment
    covers: int  # the last log segment folded in
    retired_bytes: int  # of log segments deleted
    seconds: float


@dataclass(frozen=True)
class Update:
    """What a source brought since it was last asked: events appended by others, in order;
    `reload` when it cannot go on from there (what it missed is only in a checkpoint now): the
    taker must `reload()` before it answers again."""

    events: list[Event]
    reload: bool = False


class EventSource(Protocol):
    """Where events go to be durable and come from to be served; shared by every process."""

    @property
    def failure(self) -> str | None:
        """Why writes are stopped (until an operator acts), or None while they are taken."""

    @property
    def last_sequence(self) -> int:
        """The sequence of the last durable event this process knows of."""

    def append(self, writes: Sequence[Sequence[Event]]) -> list[int]:
        """Make each write (all or none) durable, together; the sequence of each one's last
        event. Raises DiskFull, WritesStopped or TooLarge: then none of them was kept."""

    def recover(self, after_ms: int) -> EventTable:
        """Everything durable, folded (events not later than `after_ms` left out), repairing
        what a crash left; the source goes on from there. Run once, by the owner."""

    def poll(self) -> Update:
        """What was appended since the last poll (not by this process's own appends)."""

    def poll_blocked(self) -> bool:
        """Whether polls cannot go on until `reload` (what the reader missed is only in a
        checkpoint now)."""

    def reload_due(self) -> bool:
        """Whether `reload` would give what is held more compactly (a new checkpoint), or must
        be called (the last poll said so)."""

    def reload(self, after_ms: int) -> EventTable:
        """Everything durable again, folded, in place of what was taken before (no repair);
        polls go on from there."""

    def checkpoint(self, after_ms: int, min_bytes: int = 0) -> CheckpointReport | None:
        """Fold what is held into a checkpoint, when there are `min_bytes` to fold; None when
        there was nothing to do or another process is at it."""

    def lag(self) -> int:
        """How far this process's reading is behind what was appended (bytes or events)."""

    def reopen(self) -> EventSource:
        """The same source for a forked process: descriptors of its own, position kept."""

    def close(self) -> None: ...

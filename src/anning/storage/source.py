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

from anning.model.events import Event, EventColumns

__all__ = ["CheckpointReport", "EventFeed", "EventSource", "SourceCondition", "Update"]


@dataclass(frozen=True)
class CheckpointReport:
    rows: int  # latest events held, one per (number, scope, category) and per reassignment
    covers: int  # the last log segment folded in
    retired_bytes: int  # of log segments deleted
    seconds: float


@dataclass(frozen=True)
class SourceCondition:
    """Whether a source takes writes now, and whether what this process serves is current.

    `writable` False: writes answer UNAVAILABLE (`writes_problem` says why; for the local log,
    a disk failure). `current` False: the events applied are behind the log by more than the
    configured lag, or the position in it is lost (`stale` says which); a load balancer should
    route checks elsewhere."""

    writable: bool = True
    current: bool = True
    writes_problem: str = ""
    stale: str = ""
    lost: str = ""  # the position is lost: nothing is served until a snapshot load covers it
    lag_events: int = 0
    lag_seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class Update:
    """What a source brought since it was last asked: events appended by others, in order,
    with their sequences; `behind` when it cannot go on from there (what it missed is only in a
    checkpoint now): the taker must `catch_up()` before it answers again."""

    events: list[Event]
    behind: bool = False


class EventFeed(Protocol):
    """The change feed's reading: events in sequence order, each once, from a sequence on."""

    def read(self, max_events: int) -> EventColumns:
        """Up to `max_events` events past those read before (none: nothing new yet)."""

    def close(self) -> None: ...


class EventSource(Protocol):
    """Where events go to be durable and come from to be served; shared by every process."""

    @property
    def failure(self) -> str | None:
        """Why writes are stopped (until an operator acts), or None while they are taken."""

    @property
    def last_sequence(self) -> int:
        """The sequence of the last durable event this process knows of."""

    @property
    def applied(self) -> int:
        """Every event up to this sequence has been taken by this process (a replica may know
        of later ones, and hold its own later writes, before it has read those between)."""

    @property
    def lost(self) -> str:
        """Why this process cannot go on applying the log from where it stands (it answers
        nothing until a snapshot load covers the gap); "" while it can."""

    def append(self, writes: Sequence[Sequence[Event]]) -> list[int | Exception]:
        """Make each write (all or none) durable: its events get the next dense sequences;
        returns each one's last, or the error that kept it from being acknowledged (a
        replicated log: Unavailable, TooLarge). Raises DiskFull, WritesStopped or TooLarge
        when none of them was kept."""

    def recover(self) -> EventColumns:
        """Every durable event, repairing what a crash left; the source goes on from there.
        Run once, by the owner."""

    def poll(self) -> Update:
        """What was appended since the last poll (not by this process's own appends)."""

    def behind(self) -> bool:
        """Whether polls cannot go on until `catch_up` (what the reader missed is only in a
        checkpoint now)."""

    def catch_up(self) -> EventColumns:
        """The events from where the reader stood, however they are held now (own writes may
        come again); polls go on from their end."""

    def events_after(self, sequence: int) -> EventColumns:
        """Every durable event past `sequence`, in order (for a load, the change feed)."""

    def feed(self, after: int) -> EventFeed:
        """Every event past `after`, in order, each once, then those appended as they come."""

    def checkpoint(self, watermark: int, min_bytes: int = 0) -> CheckpointReport | None:
        """Fold what is held into a checkpoint (keeping the events past `watermark`), when
        there are `min_bytes` to fold; None when there was nothing to do or another process is
        at it."""

    def condition(self) -> SourceCondition:
        """Whether writes are taken now and whether this process's events are current."""

    def served(self, folded_through: int) -> None:
        """A list that holds the outcome of every event up to `folded_through` serves now."""

    def lag(self) -> int:
        """How far this process's reading is behind what was appended (bytes or events)."""

    def reopen(self) -> EventSource:
        """The same source for a forked process: descriptors of its own, position kept."""

    def close(self) -> None: ...

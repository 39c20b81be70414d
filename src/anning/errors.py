"""What anning raises to its callers: one root, `AnningError`, and a class per kind of fault.

Every message names what was wrong: the field and the value for bad input, the file and the
offset for a damaged file. The service maps each class to one gRPC code in one place
(`anning.server.status`); nothing here knows gRPC.

    AnningError
      InvalidInput        bad input: a field and its value (also a ValueError)
      NotPermitted        a request for what the server may not do (a path outside --load-dir)
      NotReady            no list loaded yet: a caller must fail closed, never "not suppressed"
      Refused             a snapshot load refused by a guard (reject ratio, shrink, columns)
      TooLarge            a request or a record over a limit (also an OverflowError)
      CorruptFile         a file anning wrote that cannot be trusted (path, problem)
        CorruptSnapshot   a binary snapshot
        CorruptCheckpoint an events checkpoint
        CorruptLog        the write log, before its end
      WriteError          a write that was not made durable
        WritesStopped     after a failure of the disk, until an operator restarts
        DiskFull          this write did not fit; nothing of it kept; retry later
        Unavailable       the replicated log did not acknowledge it; retry later
      InvariantError      an index whose structure breaks an invariant (a bug, not input)
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "AnningError",
    "CorruptCheckpoint",
    "CorruptFile",
    "CorruptLog",
    "CorruptSnapshot",
    "DiskFull",
    "InvalidInput",
    "InvariantError",
    "NotPermitted",
    "NotReady",
    "Refused",
    "TooLarge",
    "Unavailable",
    "WriteError",
    "WritesStopped",
]


class AnningError(Exception):
    """The root of every error anning raises on purpose."""


class InvalidInput(AnningError, ValueError):
    """Bad input; the message names the field and the value (`number: '12x' is not ...`)."""


class NotPermitted(AnningError):
    """A request for what this server is not configured to allow (a snapshot path outside the
    directories it may read); the message names it and what is allowed."""


class NotReady(AnningError):
    """No list is loaded yet: the caller must fail closed (UNAVAILABLE), never "not suppressed"."""


class Refused(AnningError):
    """A snapshot load refused by a guard; the list served and its file are untouched."""


class TooLarge(AnningError, OverflowError):
    """A request or a record over a limit: nothing of it was taken."""


class CorruptFile(AnningError):
    """A file that cannot be served or replayed: truncated, corrupt, or of another format.

    The message names the file and what is wrong. Nothing of such a file is ever used."""

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class CorruptSnapshot(CorruptFile):
    """A binary snapshot that cannot be served."""


class CorruptCheckpoint(CorruptFile):
    """An events checkpoint that cannot be taken in: start-up stops, naming it."""


class CorruptLog(CorruptFile):
    """A bad record before the end of the write log: start-up stops, naming file and offset."""


class WriteError(AnningError):
    """A write that was not made durable, and so not acknowledged."""


class WritesStopped(WriteError):
    """Writes are stopped after a failure of the disk; checks go on (UNAVAILABLE for writes)."""


class DiskFull(WriteError):
    """This write did not fit on the disk: nothing of it was kept; retry when there is space."""


class Unavailable(WriteError):
    """The replicated log did not acknowledge this write (unreachable, no quorum, no answer in
    time): it is not acknowledged; the caller may retry. Checks go on."""


class InvariantError(AnningError, RuntimeError):
    """An index whose structure breaks an invariant (unsorted keys, a missed entry, ...)."""

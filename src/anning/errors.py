"""The exceptions anning raises to its callers."""

from anning._normalize import InvalidInput

__all__ = ["CorruptSnapshot", "InvalidInput", "InvariantError"]


class CorruptSnapshot(Exception):
    """A binary snapshot that cannot be served: truncated, corrupt, or of another format.

    The message names the file and what is wrong. Nothing of such a file is ever served."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class InvariantError(RuntimeError):
    """An index whose structure breaks an invariant (unsorted keys, a missed entry, ...)."""

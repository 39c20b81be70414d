"""anning's errors as gRPC status codes: the one place the mapping is made (SPEC §7).

    InvalidInput      INVALID_ARGUMENT   bad input, named field and value
    NotPermitted      PERMISSION_DENIED  not allowed here (a path outside --load-dir)
    NotReady          UNAVAILABLE        no list yet: a port must fail closed
    WritesStopped     UNAVAILABLE        after a disk failure, until an operator acts
    Unavailable       UNAVAILABLE        the replicated log did not acknowledge: retry
    DiskFull          RESOURCE_EXHAUSTED nothing of the write kept; retry later
    TooLarge          RESOURCE_EXHAUSTED a request or record over a limit
    Refused           FAILED_PRECONDITION a snapshot load refused by a guard
    anything else     INTERNAL           a bug: logged
"""

from __future__ import annotations

import grpc

from anning.errors import (
    DiskFull,
    InvalidInput,
    NotPermitted,
    NotReady,
    Refused,
    TooLarge,
    Unavailable,
    WritesStopped,
)
from anning.load import SnapshotRefused

__all__ = ["status_of"]


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The code and details to answer for an error anning raised; None for an unexpected one."""
    if isinstance(exc, InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotPermitted):
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, NotReady):
        return grpc.StatusCode.UNAVAILABLE, f"not ready: {exc}"
    if isinstance(exc, WritesStopped):
        return grpc.StatusCode.UNAVAILABLE, f"writes stopped: {exc}"
    if isinstance(exc, Unavailable):
        return grpc.StatusCode.UNAVAILABLE, f"not written: {exc}"
    if isinstance(exc, SnapshotRefused):
        return grpc.StatusCode.FAILED_PRECONDITION, f"snapshot refused: {exc.report.refused}"
    if isinstance(exc, Refused):
        return grpc.StatusCode.FAILED_PRECONDITION, f"refused: {exc}"
    if isinstance(exc, DiskFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, f"disk full, nothing written: {exc}"
    if isinstance(exc, TooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    return None

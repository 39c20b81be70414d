"""anning: a suppression-list lookup engine for SMS.

    >>> idx = SuppressionIndex.build(["13812345678"], ["【京东】"])
    >>> idx.check("京东", "+86 138-1234-5678")
    <Scope.SENDER: 1>

The package, from the top down (nothing imports upwards): `cli` → `server` (gRPC) → `engine`
(what is served, writes, taking up others') → `load` (text snapshots), `storage` (the data
directory: write log, checkpoint, binary snapshot) and `index` (the in-memory list) → `model`
(scopes, events, replies) → the compiled core (`anning._index`, `_normalize`, ...).
"""

from anning._normalize import (
    normalize_number,
    normalize_numbers,
    normalize_sender,
    normalize_senders,
)
from anning.errors import (
    AnningError,
    CorruptCheckpoint,
    CorruptFile,
    CorruptLog,
    CorruptSnapshot,
    DiskFull,
    InvalidInput,
    InvariantError,
    NotPermitted,
    NotReady,
    Refused,
    TooLarge,
    WriteError,
    WritesStopped,
)
from anning.index import UNKNOWN_SENDER, SuppressionIndex
from anning.model.scopes import DEFAULT_CATEGORIES, DEFAULT_CATEGORY, Scope
from anning.storage.snapshot import read_snapshot, write_snapshot

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`anning.Client` without importing gRPC for every user of the engine."""
    if name == "Client":
        from anning.client import Client

        return Client
    raise AttributeError(f"module 'anning' has no attribute {name!r}")


__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_CATEGORY",
    "UNKNOWN_SENDER",
    "AnningError",
    "Client",
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
    "Scope",
    "SuppressionIndex",
    "TooLarge",
    "WriteError",
    "WritesStopped",
    "__version__",
    "normalize_number",
    "normalize_numbers",
    "normalize_sender",
    "normalize_senders",
    "read_snapshot",
    "write_snapshot",
]

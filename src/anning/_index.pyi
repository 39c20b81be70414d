from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

DEBUG: bool
NO_SCOPE: int
UNKNOWN_SENDER: int
GLOBAL_SCOPE: int
MAX_ENTRIES: int
BLOOM_K: int

def directory_bits(entries: int, scope_bits: int) -> int: ...
def build(
    numbers: npt.NDArray[np.uint64], scopes: npt.NDArray[np.uint32],
    masks: npt.NDArray[np.uint8], scope_bits: int, bloom_bits_per_entry: float = 10.0,
    validate: bool = True,
    allocate: Callable[[int, npt.DTypeLike], npt.NDArray[Any]] | None = None,
    times: npt.NDArray[np.int64] | None = None,
    keep: npt.NDArray[np.uint8] | None = None,
    more: tuple[npt.NDArray[Any], ...] | None = None,
) -> dict[str, Any]: ...

def fold_statements(
    rows: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8],
                npt.NDArray[np.int64] | None, npt.NDArray[np.uint8] | None],
    as_of: int,
    events: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8],
                  npt.NDArray[np.int64], npt.NDArray[np.uint8]],
    timed: bool, key_dtype: np.dtype[Any], move_dtype: np.dtype[Any],
) -> tuple[tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8],
                 npt.NDArray[np.int64]], npt.NDArray[np.void], npt.NDArray[np.void],
           npt.NDArray[np.void]]: ...

@disjoint_base
class DecisionTable:
    keys: int
    numbers: int
    def __new__(
        cls, allocate: Callable[[int, npt.DTypeLike], npt.NDArray[Any]] | None = None,
    ) -> DecisionTable: ...
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def get(self, number: int, scope: int) -> tuple[int, int]: ...
    def get_many(
        self, numbers: npt.NDArray[np.uint64], scopes: npt.NDArray[np.uint32],
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]: ...
    def set_bits(
        self, numbers: npt.NDArray[np.uint64], scopes: npt.NDArray[np.uint32],
        bits: npt.NDArray[np.uint8], decided: npt.NDArray[np.uint8],
        optout: npt.NDArray[np.uint8],
    ) -> None: ...
    def contains(self, numbers: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]: ...
def build_bloom(
    directory: npt.NDArray[np.uint32], words: npt.NDArray[np.uint64], remainder_bits: int,
    scope_bits: int, bits_per_entry: float,
    allocate: Callable[[int, npt.DTypeLike], npt.NDArray[Any]] | None = None,
) -> npt.NDArray[np.uint64]: ...

@disjoint_base
class IndexCore:
    directory: npt.NDArray[np.uint32]
    words: npt.NDArray[np.uint64]
    bloom: npt.NDArray[np.uint64]
    sender_scope: npt.NDArray[np.uint32]
    sender_entity: npt.NDArray[np.uint32]
    remainder_bits: int
    scope_bits: int
    bloom_k: int
    def __new__(
        cls, directory: npt.NDArray[np.uint32], words: npt.NDArray[np.uint64],
        bloom: npt.NDArray[np.uint64], sender_scope: npt.NDArray[np.uint32],
        sender_entity: npt.NDArray[np.uint32], remainder_bits: int, scope_bits: int,
        bloom_k: int,
    ) -> IndexCore: ...
    def __len__(self) -> int: ...
    def check_ids(
        self, sender_ids: npt.NDArray[np.uint32], numbers: npt.NDArray[np.uint64], bit: int,
        out: npt.NDArray[np.uint8] | None = None, decisions: DecisionTable | None = None,
        extra: npt.NDArray[np.uint32] | None = None,
    ) -> npt.NDArray[np.uint8]: ...
    def positions(
        self, numbers: npt.NDArray[np.uint64], scopes: npt.NDArray[np.uint32],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]: ...
    def entries_at(
        self, positions: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8]]: ...
    def number_entries(
        self, number: int,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8], npt.NDArray[np.int64]]: ...
    def check_one(self, sender_id: int, number: int, bit: int) -> int: ...
    def mask(self, number: int, scope: int) -> int: ...
    def entries(
        self,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8]]: ...
    def verify(self, scopes: int) -> str | None: ...
    def first_missing(
        self, numbers: npt.NDArray[np.uint64], scopes: npt.NDArray[np.uint32],
        masks: npt.NDArray[np.uint8],
    ) -> int: ...
    def bloom_hits(
        self, sender_ids: npt.NDArray[np.uint32], numbers: npt.NDArray[np.uint64],
    ) -> int: ...

@disjoint_base
class LatestTable:
    def __new__(cls) -> LatestTable: ...
    def __len__(self) -> int: ...
    @property
    def keys(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def offer_many(
        self, numbers: npt.NDArray[np.uint64], scopes: npt.NDArray[np.uint32],
        bits: npt.NDArray[np.uint8], ats: npt.NDArray[np.int64], kinds: npt.NDArray[np.uint8],
        sources: npt.NDArray[np.uint8], sequences: npt.NDArray[np.uint64],
        shared: bool = True,
    ) -> npt.NDArray[np.uint8]: ...
    def get_many(
        self, numbers: npt.NDArray[np.uint64], scopes: npt.NDArray[np.uint32],
        bits: npt.NDArray[np.uint8],
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.uint8],
               npt.NDArray[np.uint8], npt.NDArray[np.uint64]]: ...
    def reassigned_many(
        self, numbers: npt.NDArray[np.uint64],
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]: ...
    def keys_of(self, number: int) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]]: ...

def take_events(
    latest: LatestTable, decisions: DecisionTable, events: list[Any],
    scopes: npt.NDArray[np.uint32], sources: dict[str, int], newest_ms: int,
    listed_scopes: int, listed_moved: npt.NDArray[np.uint64],
    listed_moved_at: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8],
           npt.NDArray[np.uint64]]: ...

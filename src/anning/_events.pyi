from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

@disjoint_base
class NumberSet:
    def __new__(cls, numbers: npt.ArrayLike | None = None) -> NumberSet: ...
    def __len__(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    def add_many(self, numbers: npt.ArrayLike | Iterable[int]) -> None: ...
    def add(self, number: int) -> None: ...
    def __contains__(self, number: int, /) -> bool: ...
    def contains(self, numbers: npt.ArrayLike) -> npt.NDArray[np.uint8]: ...
    def to_array(self) -> npt.NDArray[np.uint64]: ...

FRAME_END: int
FRAME_TORN: int
FRAME_BAD: int

def scan_frames(
    data: bytes | memoryview, max_record: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int, int]: ...
def join_payloads(
    data: bytes | memoryview, offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64],
) -> bytes: ...

def fields_well_formed(
    items: Iterable[object], kinds: frozenset[int], sources: dict[str, int],
) -> bool: ...

def format_csv(
    sequence: npt.NDArray[np.uint64], number: npt.NDArray[np.uint64],
    at: npt.NDArray[np.int64], scope: npt.NDArray[np.uint32], mask: npt.NDArray[np.uint8],
    kind: npt.NDArray[np.uint8], source: npt.NDArray[np.uint8], scopes: list[bytes],
    categories: list[bytes], sources: list[bytes], actions: list[bytes],
) -> bytes: ...
def encode_changes(
    sequence: npt.NDArray[np.uint64], number: npt.NDArray[np.uint64],
    at: npt.NDArray[np.int64], scope: npt.NDArray[np.uint32], mask: npt.NDArray[np.uint8],
    kind: npt.NDArray[np.uint8], source: npt.NDArray[np.uint8], scopes: list[bytes],
    categories: list[bytes], sources: list[bytes],
) -> bytes: ...
def event_columns(
    fields: list[tuple[int, int, str, int, int, str]], source_ids: dict[str, int]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64], npt.NDArray[np.uint32],
           npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.uint8], list[str]]: ...
def decode_writes(
    data: bytes | memoryview, offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64],
    source_ids: dict[str, int],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.uint8],
           npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8],
           npt.NDArray[np.int64], npt.NDArray[np.uint8], list[str]] | None: ...

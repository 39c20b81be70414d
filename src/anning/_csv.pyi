from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

COLUMNS: tuple[str, ...]
MAX_RECORD: int

@disjoint_base
class SnapshotParser:
    numbers: npt.NDArray[np.uint64]
    scopes: npt.NDArray[np.uint32]
    masks: npt.NDArray[np.uint8]
    length: int
    rows: int
    rejected: int
    blank_lines: int
    line: int
    newest_at: int
    rejects: list[tuple[int, str, str, bytes]]
    ats: npt.NDArray[np.int64] | None
    actions: npt.NDArray[np.uint8] | None
    def __init__(
        self, columns: Sequence[str], delimiter: str, default_mask: int,
        resolve_sender: Callable[[str], int], resolve_category: Callable[[str], int],
        resolve_source: Callable[[str], int], normalize_text_number: Callable[..., int],
        default_country: int = 86, offset_minutes: int = 480, first_line: int = 2,
        capacity: int = ..., resolve_action: Callable[[str], int] | None = None,
    ) -> None: ...
    def start_file(self, columns: Sequence[str], delimiter: str, first_line: int = 2) -> None: ...
    def arrays(
        self,
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint32], npt.NDArray[np.uint8]]: ...
    @property
    def distinct_senders(self) -> int: ...
    def feed(self, chunk: bytes | memoryview, final: bool = False) -> int: ...

ACTIONS: dict[str, int]

def parse_time(text: bytes, offset_minutes: int = 480) -> int | None: ...

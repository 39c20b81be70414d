from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from anning.errors import InvalidInput

MAX_CACHED_TEXTS: int

class MalformedRequest(InvalidInput): ...

@disjoint_base
class BatchCodec:
    def __init__(
        self, resolve_sender: Callable[[str], int], resolve_category: Callable[[str], int],
        normalize_number: Callable[..., int], default_bit: int = 0, default_country: int = 86,
    ) -> None: ...
    def decode(
        self, data: bytes, max_items: int,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint64], npt.NDArray[np.uint8],
               dict[int, str]]: ...

def item_senders(data: bytes) -> list[str]: ...
def encode_results(codes: npt.NDArray[np.uint8], errors: dict[int, str]) -> bytes: ...

class MalformedResponse(ValueError): ...

def encode_checks(
    senders: list[str], numbers: list[str | int], categories: list[str] | None = None,
) -> bytes: ...
def decode_results(data: bytes, count: int) -> tuple[npt.NDArray[np.uint8], dict[int, str]]: ...

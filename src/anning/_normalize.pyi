from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from anning.errors import InvalidInput as InvalidInput

__all__ = [
    "COUNTRY_TABLE_VERSION",
    "InvalidInput",
    "check_e164",
    "normalize_number",
    "normalize_numbers",
    "normalize_sender",
    "normalize_senders",
]

COUNTRY_TABLE_VERSION: str
MAX_SENDER_LENGTH: int


def normalize_number(text: str | int, default_country: int = 86, field: str = "number") -> int: ...
def check_e164(value: int, field: str = "number") -> int: ...
def normalize_numbers(
    texts: Sequence[str | int], default_country: int = 86, strict: bool = True,
    field: str = "number",
) -> npt.NDArray[np.uint64]: ...
def normalize_sender(text: str, field: str = "sender") -> str: ...
def normalize_senders(texts: Sequence[str], field: str = "sender") -> list[str]: ...

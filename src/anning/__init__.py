"""anning: a suppression-list lookup engine for SMS.

    >>> idx = SuppressionIndex.build(["13812345678"], ["【京东】"])
    >>> idx.check("京东", "+86 138-1234-5678")
    <Scope.SENDER: 1>
"""

from anning._normalize import (
    normalize_number,
    normalize_numbers,
    normalize_sender,
    normalize_senders,
)
from anning.errors import CorruptSnapshot, InvalidInput, InvariantError
from anning.index import UNKNOWN_SENDER, SuppressionIndex
from anning.scopes import DEFAULT_CATEGORIES, Scope

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CATEGORIES",
    "UNKNOWN_SENDER",
    "CorruptSnapshot",
    "InvalidInput",
    "InvariantError",
    "Scope",
    "SuppressionIndex",
    "__version__",
    "normalize_number",
    "normalize_numbers",
    "normalize_sender",
    "normalize_senders",
]

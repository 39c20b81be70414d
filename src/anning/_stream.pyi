"""Stubs of the compiled reader of NATS deliveries (ext/_stream.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

DATA: int
CONTROL: int
OTHER: int

def scan_messages(
    buf: bytes | bytearray | memoryview, pos: int, end: int, sid: int
) -> tuple[int, dict[str, npt.NDArray[Any]]]: ...
def decode_events(
    buf: bytes | bytearray | memoryview, where: npt.NDArray[np.int64], sources: int,
    version: int,
) -> tuple[dict[str, npt.NDArray[Any]], int]: ...

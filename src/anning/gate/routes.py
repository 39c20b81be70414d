"""What the gate remembers between messages, bounded in count and in time.

- who last messaged a number through a port (so that the user's reply to that port is read for
  that sender, SPEC §9), and through which account (so that the reply goes back to it);
- which account a message id belongs to (so that its delivery receipt goes back to it);
- how a long message was decided (so that every part gets the same answer).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Recent"]

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A map that forgets its oldest entries past `limit` and any entry after `ttl` seconds."""

    def __init__(self, limit: int, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.ttl = ttl
        self.clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        items = self._items
        items[key] = (self.clock() + self.ttl, value)
        items.move_to_end(key)
        while len(items) > self.limit:
            items.popitem(last=False)

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        expires, value = found
        if expires < self.clock():
            del self._items[key]
            return None
        return value

    def __len__(self) -> int:
        return len(self._items)

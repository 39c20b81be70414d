"""Scope keys and senders with dense ids: what the compiled index knows as numbers."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from anning import _index
from anning._normalize import normalize_sender
from anning.model.scopes import ENTITY_PREFIX, GLOBAL

__all__ = ["NO_SCOPE", "ScopeTable"]

NO_SCOPE = _index.NO_SCOPE


class ScopeTable:
    """Scope keys (`*`, `entity:NAME`, `NAME`) and senders, each with a dense id.

    Scope 0 is global. Every sender has a scope of its own and, when it belongs to an entity,
    the entity's scope; sender ids index the arrays `sender_scope` and `sender_entity`."""

    def __init__(self) -> None:
        self.scopes: list[str] = [GLOBAL]
        self.scope_ids: dict[str, int] = {GLOBAL: 0}
        self.senders: list[str] = []
        self.sender_ids: dict[str, int] = {}
        self._entity_of: list[int] = []

    @classmethod
    def restore(cls, scopes: Sequence[str], senders: Sequence[str],
                sender_scope: npt.NDArray[np.uint32],
                sender_entity: npt.NDArray[np.uint32]) -> ScopeTable:
        """A table as a snapshot stored it; ValueError names the first inconsistency."""
        if not scopes or scopes[0] != GLOBAL:
            raise ValueError("the first scope is not global")
        table = cls()
        table.scopes = list(scopes)
        table.scope_ids = {s: i for i, s in enumerate(scopes)}
        if len(table.scope_ids) != len(scopes):
            raise ValueError("a scope is listed twice")
        if len(sender_scope) != len(senders) or len(sender_entity) != len(senders):
            raise ValueError(f"{len(sender_scope)} sender scopes for {len(senders)} senders")
        scope_of = sender_scope.tolist()
        for name, scope in zip(senders, scope_of, strict=True):
            if table.scope_ids.get(name) != scope or name.startswith(ENTITY_PREFIX):
                raise ValueError(f"sender {name!r} does not match its scope")
        # A sender's name is its scope's key (checked above): one string object for both, as
        # in a built table, not a second copy of every name from the snapshot's meta.
        table.senders = [table.scopes[i] for i in scope_of]
        table.sender_ids = {s: i for i, s in enumerate(table.senders)}
        if len(table.sender_ids) != len(senders):
            raise ValueError("a sender is listed twice")
        entity_of = sender_entity.tolist()
        if any(e != NO_SCOPE and e >= len(scopes) for e in entity_of):
            raise ValueError("a sender's entity is outside the scopes")
        table._entity_of = entity_of
        return table

    def python_bytes(self) -> int:
        """Memory of the tables: the containers, the scope keys (a sender's name is its
        scope's key object) and the ints they hold (one object a value: made one by one)."""
        getsizeof = sys.getsizeof
        total = sum(map(getsizeof, (self.scopes, self.scope_ids, self.senders,
                                    self.sender_ids, self._entity_of)))
        total += sum(map(getsizeof, self.scopes))
        for ints in (self.scope_ids.values(), self.sender_ids.values(), self._entity_of):
            total += sum(map(getsizeof, ints))
        return total

    def scope(self, key: str) -> int:
        """Id of a canonical scope key, registering it (and its sender) when new."""
        sid = self.scope_ids.get(key)
        if sid is None:
            sid = self.scope_ids[key] = len(self.scopes)
            self.scopes.append(key)
            if not key.startswith(ENTITY_PREFIX) and key != GLOBAL:
                self.sender_ids[key] = len(self.senders)
                self.senders.append(key)
                self._entity_of.append(NO_SCOPE)
        return sid

    def link(self, sender: str, entity: str, field: str = "entities") -> None:
        """Make `sender` belong to `entity` (both raw text, normalised here)."""
        name = normalize_sender(sender, f"{field} sender")
        entity_key = ENTITY_PREFIX + normalize_sender(entity, f"{field}[{sender!r}]")
        self.scope(name)
        self._entity_of[self.sender_ids[name]] = self.scope(entity_key)

    def arrays(self) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
        sender_scope = np.fromiter(
            (self.scope_ids[s] for s in self.senders), dtype=np.uint32, count=len(self.senders)
        )
        return sender_scope, np.asarray(self._entity_of, dtype=np.uint32)

    @property
    def scope_bits(self) -> int:
        return max(1, (len(self.scopes) - 1).bit_length())

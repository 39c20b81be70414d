"""SuppressionIndex: the exact three-level check of SPEC §2 over the compiled core.

An index knows nothing of files: `anning.storage.snapshot` writes one to disk and maps it back
(through `arrays()` and `from_arrays()`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from anning import _index
from anning._normalize import normalize_number, normalize_numbers, normalize_sender
from anning.errors import InvalidInput, InvariantError
from anning.index import hugepages
from anning.index.scopetable import NO_SCOPE, ScopeTable
from anning.index.statements import RowStatements
from anning.model.scopes import (
    DEFAULT_CATEGORIES,
    DEFAULT_CATEGORY,
    ENTITY_PREFIX,
    Scope,
    category_bit,
    category_mask,
    parse_scope,
    validate_categories,
)

__all__ = ["UNKNOWN_SENDER", "IndexArrays", "SuppressionIndex"]

UNKNOWN_SENDER = _index.UNKNOWN_SENDER
# Senders as callers write them -> id; bounded, as callers' spellings are not under our control.
RAW_SENDER_CACHE = 65_536
_SCOPES = tuple(Scope)  # code -> member, without IntEnum's lookup on the hot path


def _as_numbers(numbers: Any, default_country: int) -> np.ndarray:
    if isinstance(numbers, np.ndarray) and numbers.dtype.kind in "ui":
        if numbers.dtype.kind == "i" and numbers.size and numbers.min() < 0:
            bad = int(np.argmax(numbers < 0))
            raise InvalidInput(f"numbers[{bad}]: {numbers[bad]} is not an E.164 number")
        return np.ascontiguousarray(numbers, dtype=np.uint64)
    if isinstance(numbers, np.ndarray) and numbers.dtype.kind not in "OU":
        raise InvalidInput(f"numbers: an array of {numbers.dtype} is neither integers nor text")
    return normalize_numbers(list(numbers), default_country, True, "numbers")


def _factorise(values: list[Any], n: int) -> tuple[list[Any], np.ndarray]:
    table: dict[Any, int] = {}
    codes = np.fromiter((table.setdefault(v, len(table)) for v in values), np.uint32, count=n)
    return list(table), codes


def _as_masks(categories: Any, names: tuple[str, ...], n: int) -> np.ndarray:
    if categories is None or isinstance(categories, str):
        mask = category_mask(names, categories or DEFAULT_CATEGORY, "categories")
        return np.full(n, mask, np.uint8)
    if isinstance(categories, np.ndarray) and categories.dtype.kind in "ui":
        if len(categories) != n:
            raise InvalidInput(f"categories: {len(categories)} masks for {n} numbers")
        bad = np.flatnonzero((categories <= 0) | (categories > 0xFF))
        if bad.size:
            i = int(bad[0])
            raise InvalidInput(f"categories[{i}]: {categories[i]} is not a category mask 1..255")
        return np.ascontiguousarray(categories, dtype=np.uint8)
    values = list(categories)
    if len(values) != n:
        raise InvalidInput(f"categories: {len(values)} values for {n} numbers")
    table, codes = _factorise(values, n)
    masks = np.empty(len(table), np.uint8)
    for code, name in enumerate(table):
        first = values.index(name)
        masks[code] = category_mask(names, name, f"categories[{first}]")
    out: np.ndarray = masks[codes]
    return out


@dataclass(frozen=True)
class IndexArrays:
    """What an index is made of, as a snapshot stores it."""

    directory: npt.NDArray[np.uint32]
    words: npt.NDArray[np.uint64]
    bloom: npt.NDArray[np.uint64]
    sender_scope: npt.NDArray[np.uint32]
    sender_entity: npt.NDArray[np.uint32]
    remainder_bits: int
    scope_bits: int
    bloom_k: int


class SuppressionIndex:
    """An immutable, exact suppression list: (number, scope, category mask) entries.

    A check asks (number, sender), (number, entity of sender) and (number, global) at once and
    answers the most specific scope whose mask holds the category. Safe to share between
    threads; batch checks release the GIL."""

    def __init__(
        self,
        core: _index.IndexCore,
        table: ScopeTable,
        categories: tuple[str, ...],
        meta: Mapping[str, Any] | None = None,
        statements: RowStatements | None = None,
    ) -> None:
        self._core = core
        self._table = table
        self.categories = categories
        self._bits = {name: bit for bit, name in enumerate(categories)}
        self.meta = dict(meta or {})
        self.default_country = int(self.meta.setdefault("default_country", 86))
        # when its statements were made: only what real-time events are compared with
        self.statements = statements or RowStatements(int(self.meta.get("as_of_ms", 0)))
        self.statements.check_against(len(core))
        self._python_bytes = table.python_bytes()
        self._raw_sender_ids: dict[str, int] = {}
        self._mixed = np.empty(0, np.int64)  # entries built from rows of different times
        if _index.DEBUG:
            self.verify()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        numbers: Any,
        senders: Any,
        categories: Any = None,
        entities: Mapping[str, str] | None = None,
        *,
        sender_table: Sequence[str] | None = None,
        category_names: Iterable[str] = DEFAULT_CATEGORIES,
        default_country: int = 86,
        meta: Mapping[str, Any] | None = None,
        bloom_bits_per_entry: float = 12.0,
    ) -> SuppressionIndex:
        """Build an index from entries.

        numbers: E.164 ints (a uint64 array is the fast path) or text to normalise.
        senders: one scope per entry: a sender, `entity:NAME`, or `*` for global; or, with
            `sender_table`, integer codes into that table.
        categories: None (the first category), one name for all, a name per entry, or an
            integer array of masks. `all` is every category.
        entities: sender -> entity; a sender's checks also match its entity's entries.
        """
        names = validate_categories(category_names)
        nums = _as_numbers(numbers, default_country)
        n = len(nums)
        if sender_table is None:
            if isinstance(senders, str):
                raise InvalidInput("senders: one string given; one sender per number expected")
            values = list(senders)
            if len(values) != n:
                raise InvalidInput(f"senders: {len(values)} values for {n} numbers")
            sender_table, codes = _factorise(values, n)
        else:
            codes = np.asarray(senders)
            if codes.dtype.kind not in "ui" or len(codes) != n:
                raise InvalidInput("senders: with sender_table, one integer code per number")
            if n and (codes.min() < 0 or codes.max() >= len(sender_table)):
                bad = int(np.flatnonzero((codes < 0) | (codes >= len(sender_table)))[0])
                raise InvalidInput(f"senders[{bad}]: {codes[bad]} is not a code of sender_table")
        table = ScopeTable()
        scope_of_code = np.fromiter(
            (table.scope(parse_scope(t, "senders")) for t in sender_table),
            np.uint32,
            count=len(sender_table),
        )
        for sender, entity in (entities or {}).items():
            table.link(sender, entity)
        masks = _as_masks(categories, names, n)
        scope_ids = scope_of_code[codes] if n else np.empty(0, np.uint32)
        return cls.from_scope_ids(
            nums, scope_ids, masks, table, names,
            {**(meta or {}), "default_country": default_country}, bloom_bits_per_entry,
        )

    @classmethod
    def from_scope_ids(
        cls,
        numbers: np.ndarray,
        scope_ids: np.ndarray,
        masks: np.ndarray,
        table: ScopeTable,
        categories: tuple[str, ...],
        meta: Mapping[str, Any] | None = None,
        bloom_bits_per_entry: float = 12.0,
        times: np.ndarray | None = None,
        statements: RowStatements | None = None,
        keep: np.ndarray | None = None,
        more: tuple[np.ndarray, ...] | None = None,
    ) -> SuppressionIndex:
        """Build from arrays whose scope ids are `table`'s (the loader's path: no remapping).
        `times` (Unix ms per entry) become the entries' times in `statements` (an entry folded
        from rows of different times gets the latest; `statements.bit_times` says better).
        `keep` (bool per entry) leaves out the entries where it is False, and `more`
        (numbers, scope ids, masks[, times]) adds others: a folding load's, without a copy."""
        try:
            arrays = _index.build(numbers, scope_ids, masks, table.scope_bits,
                                  bloom_bits_per_entry, allocate=hugepages.zeros, times=times,
                                  keep=None if keep is None else keep.view(np.uint8),
                                  more=more)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if times is not None:
            statements = statements or RowStatements(int((meta or {}).get("as_of_ms", 0)))
            statements.times = arrays["times"]
        mixed = np.flatnonzero(arrays["mixed"]) if times is not None else None
        sender_scope, sender_entity = table.arrays()
        core = _index.IndexCore(
            arrays["directory"], arrays["words"], arrays["bloom"], sender_scope, sender_entity,
            arrays["remainder_bits"], arrays["scope_bits"], arrays["bloom_k"],
        )
        if _index.DEBUG:
            parts = [(numbers, scope_ids, masks) if keep is None else
                     (numbers[keep], scope_ids[keep], masks[keep]), more[:3] if more else None]
            for part in filter(None, parts):
                missing = core.first_missing(*part)
                if missing >= 0:
                    raise InvariantError(f"entry {missing} of the input is missing from the "
                                         "index")
        index = cls(core, table, categories, meta, statements)
        if mixed is not None:
            index._mixed = mixed
        return index

    @classmethod
    def from_arrays(cls, arrays: IndexArrays, table: ScopeTable, categories: tuple[str, ...],
                    meta: Mapping[str, Any] | None = None,
                    statements: RowStatements | None = None) -> SuppressionIndex:
        """An index over arrays made before (a snapshot's, mapped); ValueError when they do not
        fit together."""
        core = _index.IndexCore(
            arrays.directory, arrays.words, arrays.bloom, arrays.sender_scope,
            arrays.sender_entity, arrays.remainder_bits, arrays.scope_bits, arrays.bloom_k,
        )
        if (1 << arrays.scope_bits) < len(table.scopes):
            raise ValueError(f"{len(table.scopes)} scopes do not fit {arrays.scope_bits} bits")
        return cls(core, table, validate_categories(categories), meta, statements)

    def arrays(self) -> IndexArrays:
        """The arrays and parameters of the index (for writing a snapshot)."""
        core = self._core
        return IndexArrays(core.directory, core.words, core.bloom, core.sender_scope,
                           core.sender_entity, core.remainder_bits, core.scope_bits,
                           core.bloom_k)

    # -- checks ------------------------------------------------------------------------------
    def check(self, sender: str, number: str | int, category: str = "marketing") -> Scope:
        """Is `number` suppressed for `sender` in `category`? The most specific scope, or NONE."""
        sid = self._sender_id(sender)
        bit = self._bits.get(category)
        if bit is None:
            bit = category_bit(self.categories, category)
        number_value = normalize_number(number, self.default_country)
        return _SCOPES[self._core.check_one(sid, number_value, bit)]

    def _sender_id(self, text: str) -> int:
        """The id of a sender as a caller wrote it (normalised on the first sight only)."""
        sid = self._raw_sender_ids.get(text) if type(text) is str else None
        if sid is None:
            sid = self._table.sender_ids.get(normalize_sender(text), UNKNOWN_SENDER)
            if len(self._raw_sender_ids) >= RAW_SENDER_CACHE:
                self._raw_sender_ids.clear()
            self._raw_sender_ids[text] = sid
        return sid

    def sender_ids(self, senders: Iterable[str]) -> np.ndarray:
        """Ids of senders for `check_ids`; UNKNOWN_SENDER for one the index has never seen."""
        items = list(senders)
        out = np.empty(len(items), np.uint32)
        sender_id = self._sender_id
        for i, text in enumerate(items):
            try:
                out[i] = sender_id(text)
            except InvalidInput:
                normalize_sender(text, f"senders[{i}]")  # raises, naming the position
                raise
        return out

    def check_ids(
        self, sender_ids: Any, numbers: Any, category: str = DEFAULT_CATEGORY, out: Any = None,
        decisions: _index.DecisionTable | None = None, extra: np.ndarray | None = None,
    ) -> np.ndarray:
        """The raw batch path: scope codes (uint8) for uint32 sender ids and uint64 numbers.
        With `decisions` (real-time events resolved against this index), the numbers that
        have them are decided in the same pass; `extra` gives the scope ids of the sender ids
        past this index's senders (senders only events know)."""
        try:
            return self._core.check_ids(
                np.ascontiguousarray(sender_ids, dtype=np.uint32),
                np.ascontiguousarray(numbers, dtype=np.uint64),
                self.category_bit(category),
                out, decisions, extra,
            )
        except ValueError as exc:
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(str(exc)) from None

    def check_batch(
        self, senders: Sequence[str], numbers: Sequence[str | int], category: str = "marketing"
    ) -> np.ndarray:
        """Checks of text senders and numbers; the first bad item raises, naming its position."""
        nums = normalize_numbers(list(numbers), self.default_country)
        return self.check_ids(self.sender_ids(senders), nums, category)

    def category_bit(self, category: str) -> int:
        bit = self._bits.get(category)
        return category_bit(self.categories, category) if bit is None else bit

    # -- contents ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._core)

    @property
    def nbytes(self) -> int:
        """All the memory the index holds: arrays (mapped or not) and its Python tables."""
        core = self._core
        arrays = (core.directory, core.words, core.bloom, core.sender_scope, core.sender_entity)
        return sum(a.nbytes for a in arrays) + self._python_bytes

    @property
    def scopes(self) -> list[str]:
        return self._table.scopes

    @property
    def senders(self) -> list[str]:
        return self._table.senders

    def entity_of(self, sender: str) -> str | None:
        """The entity scope key (`entity:NAME`) of a normalised sender, or None."""
        sid = self._table.sender_ids.get(sender)
        if sid is None:
            return None
        scope = int(self._core.sender_entity[sid])
        return None if scope == NO_SCOPE else self._table.scopes[scope]

    def entities(self) -> dict[str, str]:
        """sender -> entity name, for senders that belong to one."""
        table, ent = self._table, self._core.sender_entity
        return {
            s: table.scopes[ent[i]][len(ENTITY_PREFIX) :]
            for i, s in enumerate(table.senders)
            if ent[i] != NO_SCOPE
        }

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(numbers uint64, scope ids uint32, masks uint8); `scopes[id]` names a scope."""
        return self._core.entries()

    def mask(self, number: str | int, scope: str) -> int:
        """Category mask stored for (number, scope key `*`/`entity:X`/sender); 0 if none."""
        sid = self._table.scope_ids.get(parse_scope(scope, "scope"))
        if sid is None:
            return 0
        return self._core.mask(normalize_number(number, self.default_country), sid)

    @property
    def events_through(self) -> int:
        """The watermark this list declares: upstream had every anning event up to it."""
        return int(self.meta.get("events_through", 0))

    @property
    def folded_through(self) -> int:
        """The last anning event whose outcome this list holds (folded in at its load)."""
        return int(self.meta.get("folded_through", 0))

    def scope_id(self, key: str) -> int | None:
        """The id of a canonical scope key, or None when the list does not name it."""
        return self._table.scope_ids.get(key)

    def positions(self, numbers: np.ndarray,
                  scope_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each (number, scope id) entry stands (-1: none), and its category mask."""
        at: np.ndarray
        masks: np.ndarray
        at, masks = self._core.positions(np.ascontiguousarray(numbers, np.uint64),
                                         np.ascontiguousarray(scope_ids, np.uint32))
        return at, masks

    def entries_of(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        """(scope ids, masks) of every entry of one number."""
        scopes, masks, _ = self._core.number_entries(number)
        return scopes, masks

    def entries_at(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The entries at these positions: (numbers, scope ids, masks)."""
        out: tuple[np.ndarray, np.ndarray, np.ndarray] = self._core.entries_at(
            np.ascontiguousarray(positions, np.int64))
        return out

    def mixed_entries(self) -> np.ndarray:
        """Positions of the entries built from rows of different times (build time only)."""
        return self._mixed

    def statement(self, number: int, scope_id: int, bit: int) -> tuple[int, int]:
        """(kind, at) of what the list says of one key (anning.index.statements)."""
        return self.statements.statement(self._core, number, scope_id, bit)

    def statements_of(self, numbers: np.ndarray, scope_ids: np.ndarray,
                      bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`statement` of many keys: (kinds, times)."""
        return self.statements.statements(self._core, numbers, scope_ids, bits)

    def verify(self) -> None:
        """Check the core's invariants; raise InvariantError naming the first one broken."""
        problem = self._core.verify(len(self._table.scopes))
        if problem:
            raise InvariantError(problem)

    def __repr__(self) -> str:
        return (
            f"<SuppressionIndex {len(self)} entries, {len(self.senders)} senders, "
            f"{len(self.scopes)} scopes, {self.nbytes / max(len(self), 1):.1f} B/entry>"
        )

"""Scopes and categories: what an opt-out covers (SPEC §1-2)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from enum import IntEnum

from anning._normalize import normalize_sender
from anning.errors import InvalidInput

__all__ = [
    "ALL_CATEGORIES",
    "DEFAULT_CATEGORIES",
    "DEFAULT_CATEGORY",
    "ENTITY_PREFIX",
    "GLOBAL",
    "REQUIRED_CATEGORIES",
    "SOURCES",
    "SOURCE_IDS",
    "Scope",
    "category_bit",
    "category_mask",
    "keep_categories",
    "parse_scope",
    "validate_categories",
]

DEFAULT_CATEGORIES = ("marketing", "notification")
# SPEC §1: `marketing` (the default wherever a category is left empty) and `notification` at
# least. One rule for checks and writes alike, enforced wherever a category set is taken in.
DEFAULT_CATEGORY = "marketing"
REQUIRED_CATEGORIES = ("marketing", "notification")
# where an entry or event came from (stored as the index into this tuple: append only)
SOURCES = ("snapshot", "reply", "customer_service", "complaint_12321", "regulator", "api")
SOURCE_IDS = {name: i for i, name in enumerate(SOURCES)}
ALL_CATEGORIES = "all"
MAX_CATEGORIES = 8
GLOBAL = "*"
ENTITY_PREFIX = "entity:"
_CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")


class Scope(IntEnum):
    """The most specific scope that matched a check; truthy when suppressed."""

    NONE = 0
    SENDER = 1
    ENTITY = 2
    GLOBAL = 3


def parse_scope(text: object, field: str = "sender") -> str:
    """The canonical key of a scope written as in a snapshot's sender column.

    `*` is global, `entity:NAME` an entity, anything else a sender; names are normalised as
    senders. Returns `*`, `entity:<name>` or `<name>`."""
    if not isinstance(text, str):
        raise InvalidInput(f"{field}: {text!r} is not text")
    stripped = text.strip()
    if stripped == GLOBAL:
        return GLOBAL
    if stripped[: len(ENTITY_PREFIX)].lower() == ENTITY_PREFIX:
        try:
            return ENTITY_PREFIX + normalize_sender(stripped[len(ENTITY_PREFIX) :], field)
        except InvalidInput as exc:
            raise InvalidInput(f"{field}: {text!r}: the entity name: {exc}") from None
    return normalize_sender(text, field)


def validate_categories(names: Iterable[str]) -> tuple[str, ...]:
    """Category names: up to 8 distinct lower-case names, `all` reserved, `marketing` and
    `notification` among them (empty means `marketing` in every check and write)."""
    if isinstance(names, str):
        raise InvalidInput(f"categories: {names!r} must be a list of names, not one string")
    result = tuple(names)
    if not 1 <= len(result) <= MAX_CATEGORIES:
        raise InvalidInput(f"categories: {len(result)} names; between 1 and {MAX_CATEGORIES}")
    for name in result:
        if not isinstance(name, str) or not _CATEGORY_NAME.match(name) or name == ALL_CATEGORIES:
            raise InvalidInput(
                f"categories: {name!r} is not a category name (a-z, 0-9, _ or -; not 'all')"
            )
    if len(set(result)) != len(result):
        raise InvalidInput(f"categories: {list(result)!r} names one category twice")
    missing = [name for name in REQUIRED_CATEGORIES if name not in result]
    if missing:
        raise InvalidInput(f"categories: {list(result)!r} lacks {missing[0]!r} (every list has "
                           f"{' and '.join(REQUIRED_CATEGORIES)})")
    return result


def keep_categories(previous: Sequence[str], wanted: Iterable[str]) -> tuple[str, ...]:
    """The categories of a new list over a data directory whose events hold category bits in
    `previous`'s order: that order kept, the new names after it (events are never renumbered;
    a name of `previous` that `wanted` lacks stays, with no entries)."""
    merged = list(previous) or list(wanted)
    merged += [name for name in wanted if name not in merged]
    if len(merged) > MAX_CATEGORIES:
        raise InvalidInput(
            f"categories: {merged!r}: the list's events already use {list(previous)!r}, in "
            f"that order, and more than {MAX_CATEGORIES} categories do not fit")
    return validate_categories(merged)


def category_bit(categories: tuple[str, ...], name: object, field: str = "category") -> int:
    """The bit of category `name` (empty means `marketing`, wherever it stands in the list)."""
    if not isinstance(name, str):
        raise InvalidInput(f"{field}: {name!r} is not text")
    key = name.strip().lower() or DEFAULT_CATEGORY
    try:
        return categories.index(key)
    except ValueError:
        raise InvalidInput(
            f"{field}: {name!r} is not one of {', '.join(categories)}"
        ) from None


def category_mask(categories: tuple[str, ...], name: object, field: str = "category") -> int:
    """The mask an entry of category `name` carries; `all` covers every category."""
    if isinstance(name, str) and name.strip().lower() == ALL_CATEGORIES:
        return 0xFF
    return 1 << category_bit(categories, name, field)

"""Writes as events: a request validated into an Event, a user's reply read into one.

Nothing here is durable yet: the engine makes events durable in its event source before they
are visible (anning.engine.engine.Engine.apply_each)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from anning._normalize import normalize_number, normalize_sender
from anning.errors import InvalidInput
from anning.index import SuppressionIndex
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event, validate_event
from anning.model.replies import OPT_IN as REPLY_OPT_IN
from anning.model.replies import OPT_OUT_GLOBAL, recognise_reply
from anning.model.scopes import (
    DEFAULT_CATEGORIES,
    DEFAULT_CATEGORY,
    GLOBAL,
    category_mask,
    parse_scope,
)

__all__ = ["ReplyOutcome", "make_event", "read_reply"]


@dataclass(frozen=True)
class ReplyOutcome:
    recognised: bool
    action: str
    keyword: str
    scope: str
    event: Event | None
    sequence: int


def make_event(index: SuppressionIndex | None, number: str | int, scope: str, category: str,
               kind: int, at_ms: int | None, source: str) -> Event:
    """Validate a write into an Event; InvalidInput names the bad field. A reassignment has no
    scope or category; an empty category is the default one (marketing)."""
    country = index.default_country if index is not None else 86
    num = normalize_number(number, country)
    if kind == REASSIGN:
        key, mask = "", 0
    elif kind in (OPT_OUT, OPT_IN):
        key = parse_scope(scope, "scope")
        categories = index.categories if index is not None else DEFAULT_CATEGORIES
        mask = category_mask(categories, category)
    else:
        raise InvalidInput(f"kind: {kind!r} is not an opt-out, opt-in or reassignment")
    event = Event(num, key, mask, kind, int(time.time() * 1000) if at_ms is None else at_ms,
                  source)
    validate_event(event)
    return event


def read_reply(index: SuppressionIndex | None, sender: str, number: str | int, text: str,
               at_ms: int | None = None) -> ReplyOutcome:
    """What a user's reply to a sender means, and the event it makes (not yet applied): an
    opt-out of the sender's entity (or the sender), a global opt-out, an opt-in, or free text
    that changes nothing."""
    reply = recognise_reply(text)
    name = normalize_sender(sender)
    if not reply.recognised:
        normalize_number(number, index.default_country if index else 86)  # bad input named
        return ReplyOutcome(False, reply.action, "", "", None, 0)
    if reply.action == OPT_OUT_GLOBAL:
        scope = GLOBAL
    else:
        scope = (index.entity_of(name) if index is not None else None) or name
    kind = OPT_IN if reply.action == REPLY_OPT_IN else OPT_OUT
    event = make_event(index, number, scope, DEFAULT_CATEGORY, kind, at_ms, "reply")
    return ReplyOutcome(True, reply.action, reply.keyword, scope, event, 0)

"""The change feed's two formats, written in one compiled pass each (anning.engine.export),
against plain Python: the CSV rows of `anning events export` (read back with the csv module) and
the ChangesResponse messages of OptOuts.Changes (parsed with protobuf)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from anning.engine.export import ChangeEncoder, format_csv
from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event, EventColumns
from anning.model.scopes import SOURCES
from anning.v1 import anning_pb2 as pb

CATEGORIES = ("marketing", "notification")
NAMES = {1: ["marketing"], 2: ["notification"], 3: ["marketing", "notification"],
         0xFF: ["all"]}
ACTIONS = {OPT_OUT: "opt_out", OPT_IN: "opt_in", REASSIGN: "reassign"}
KINDS = {OPT_OUT: pb.EVENT_KIND_OPT_OUT, OPT_IN: pb.EVENT_KIND_OPT_IN,
         REASSIGN: pb.EVENT_KIND_REASSIGN}


def feed_event(kind: int, number: int, scope: str, mask: int, at: int, source: str) -> Event:
    if kind == REASSIGN:
        return Event(number, "", 0, kind, at, source)
    return Event(number, scope, mask, kind, at, source)


feed_events = st.lists(st.builds(
    feed_event, st.sampled_from([OPT_OUT, OPT_IN, REASSIGN]),
    st.integers(10**6, 10**15 - 1),
    st.sampled_from(["京东", "entity:京东集团", "*", "a,b", 'say "hi"', "1069012345"]),
    st.sampled_from(sorted(NAMES)), st.integers(946_684_800_000, 4_102_444_800_000),
    st.sampled_from(SOURCES[1:])), max_size=30)


def sequenced(events: list[Event]) -> EventColumns:
    return EventColumns.from_events([Event(e.number, e.scope, e.mask, e.kind, e.at_ms,
                                           e.source, 1000 + i) for i, e in enumerate(events)])


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{ms % 1000:03d}Z"


@settings(max_examples=200, deadline=None)
@given(feed_events)
def test_csv_rows_say_what_each_event_says(events):
    """A row a category (`all` for every one), a reassignment as sender `*` and no category,
    the sequence of its event on every row of it; names quoted where they need it."""
    text = format_csv(sequenced(events), CATEGORIES).decode("utf-8")
    got = list(csv.reader(io.StringIO(text)))
    want = []
    for i, e in enumerate(events):
        for category in [""] if e.kind == REASSIGN else NAMES[e.mask]:
            want.append([str(e.number), "*" if e.kind == REASSIGN else e.scope, category,
                         ACTIONS[e.kind], iso(e.at_ms), e.source, str(1000 + i)])
    assert got == want


@settings(max_examples=200, deadline=None)
@given(feed_events)
def test_changes_say_what_each_event_says(events):
    """One Change an event: its categories by name (`all` for every one; none for a
    reassignment, whose sender is empty)."""
    message = pb.ChangesResponse.FromString(ChangeEncoder(CATEGORIES).encode(sequenced(events)))
    got = [(c.sequence, c.kind, c.number, c.sender, list(c.categories), c.at_ms, c.source)
           for c in message.changes]
    assert got == [(1000 + i, KINDS[e.kind], str(e.number),
                    "" if e.kind == REASSIGN else e.scope,
                    [] if e.kind == REASSIGN else NAMES[e.mask], e.at_ms, e.source)
                   for i, e in enumerate(events)]

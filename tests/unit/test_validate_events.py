"""The checks an event passes before the write log (anning.model.events): the batch form
`validate_events` (the clock read once, the plain types passed at once) must accept exactly
what `validate_event` accepts, and refuse with the same message, naming the field, whatever the
fields hold."""

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from anning import InvalidInput
from anning.model.events import (
    EARLIEST_MS,
    FUTURE_SLACK_MS,
    OPT_IN,
    OPT_OUT,
    REASSIGN,
    Event,
    validate_event,
    validate_events,
)
from anning.model.scopes import SOURCES


class Kind(int):
    """An int of another type: the field-by-field checks accept it, the fast path must not
    decide it alone."""


NOW = int(time.time() * 1000)
kinds = st.sampled_from([OPT_OUT, OPT_IN, REASSIGN, 0, 4, True, Kind(OPT_OUT), 1.0, "1", None])
masks = st.one_of(st.integers(-2, 300), st.sampled_from([True, False, 1.0, "1", Kind(1)]))
numbers = st.one_of(st.integers(-5, 10**15 + 5),
                    st.sampled_from([0, 10**15 - 1, 10**15, 2**63, True, 8.6e12]))
times = st.one_of(st.integers(EARLIEST_MS - 2, NOW + FUTURE_SLACK_MS + 60_000),
                  st.sampled_from([EARLIEST_MS, NOW, float(NOW), True, None]))
scopes = st.one_of(st.text(max_size=4), st.sampled_from([None, 5, b"shop"]))
sources = st.one_of(st.sampled_from([*SOURCES, "", "API", None, ["api"]]), st.text(max_size=3))
# good fields, then the same with one field (or more) drawn from anything
good_kinds = st.sampled_from([OPT_OUT, OPT_IN, REASSIGN])
good = st.fixed_dictionaries({
    "number": st.integers(1, 10**15 - 1), "scope": st.sampled_from(["shop", "entity:x", "*"]),
    "kind": good_kinds, "at_ms": st.integers(EARLIEST_MS, NOW),
    "source": st.sampled_from(SOURCES[1:])})
ANY = {"number": numbers, "scope": scopes, "mask": masks, "kind": kinds, "at_ms": times,
       "source": sources}


@st.composite
def events(draw) -> Event:
    fields = draw(good)
    fields["mask"] = 0 if fields["kind"] == REASSIGN else draw(st.integers(1, 0xFF))
    for name in draw(st.lists(st.sampled_from(sorted(ANY)), max_size=3, unique=True)):
        fields[name] = draw(ANY[name])
    return Event(**fields)


def outcome(check, event: Event) -> str:
    try:
        check(event)
    except InvalidInput as exc:
        return str(exc)
    return "accepted"


@settings(max_examples=600, deadline=None)
@given(events())
def test_the_batch_checks_accept_and_refuse_as_the_field_by_field_ones(event):
    assert outcome(lambda e: validate_events([e]), event) == outcome(validate_event, event)


@given(st.lists(events(), max_size=6))
def test_a_batch_is_refused_for_its_first_bad_event(batch):
    first_bad = next((outcome(validate_event, e) for e in batch
                      if outcome(validate_event, e) != "accepted"), "accepted")
    assert outcome(validate_events, batch) == first_bad


def test_good_events_of_every_kind_pass():
    validate_events([Event(8613812345678, "shop", 1, OPT_OUT, NOW, "api"),
                     Event(8613812345678, "entity:x", 0xFF, OPT_IN, NOW, "reply"),
                     Event(8613812345678, "", 0, REASSIGN, EARLIEST_MS, "regulator")])

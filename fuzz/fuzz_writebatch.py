"""Fuzz target: WriteBatch decoding, protobuf's WriteBatchRequest.FromString and anning's
validation of each event (Engine.make_event, as anning.server.servicers.OptOuts._events calls
it), on an in-memory engine.

Properties, per input:
- FromString raises nothing but DecodeError;
- every event is either an Event or InvalidInput whose message names a field of the event
  ("number: ...", "scope: ...", "category: ...", "kind: ...", "at_ms: ...", "source: ...") and
  nothing else escapes (no TypeError, OverflowError, UnicodeError ...);
- an Event is one the write log may take: an E.164 number check_e164 accepts, the kind asked
  for, a canonical scope key (parse_scope gives it back unchanged) and a category mask for
  opt-outs and opt-ins, none for a reassignment, the time given (or now), a known source.
Run: python fuzz/fuzz_writebatch.py [libFuzzer flags] CORPUS_DIR...
"""

from __future__ import annotations

import time

import _harness
import atheris
from _harness import expect

_harness.preload()
with atheris.instrument_imports(include=["anning"]):
    from google.protobuf.message import DecodeError

    from anning import InvalidInput, SuppressionIndex
    from anning._normalize import check_e164
    from anning.engine import Engine
    from anning.model.events import OPT_IN, OPT_OUT, REASSIGN, Event
    from anning.model.scopes import SOURCES, parse_scope
    from anning.v1 import anning_pb2 as pb

ENGINE = Engine(SuppressionIndex.build(["13812345678", "+44 20 7946 0958"],
                                       ["【京东】", "*"], ["marketing", "all"]))
KINDS = {pb.EVENT_KIND_OPT_OUT: OPT_OUT, pb.EVENT_KIND_OPT_IN: OPT_IN,
         pb.EVENT_KIND_REASSIGN: REASSIGN}  # as anning.server.servicers._KINDS
FIELDS = ("number", "scope", "category", "kind", "at_ms", "source")
TEXTS = ["13812345678", "+86 138-1234-5678", "京东", "entity:京东集团", "*", " * ", "all",
         "notification", "marketing", "reply", "api", "snapshot", "regulator", "ENTITY:",
         "【】", "tel:"]


def event_of(item: pb.WriteEvent) -> Event:
    """servicers.OptOuts._events for one item."""
    kind = KINDS.get(item.kind)
    if kind is None:
        raise InvalidInput(f"kind: {item.kind!r} is not an opt-out, opt-in or reassignment")
    return ENGINE.make_event(item.number, item.scope, item.category or "marketing", kind,
                             item.at_ms or None, item.source or "api")


def structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    request = pb.WriteBatchRequest()
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        texts = [fdp.PickValueInList(TEXTS) + fdp.ConsumeUnicodeNoSurrogates(4)
                 if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(12) for _ in range(4)]
        at = fdp.PickValueInList([0, int(time.time() * 1000), 946_684_800_000, -1,
                                  fdp.ConsumeIntInRange(-(1 << 63), (1 << 63) - 1)])
        request.events.add(kind=fdp.ConsumeIntInRange(-2, 5), number=texts[0], scope=texts[1],
                           category=texts[2], at_ms=at, source=texts[3])
    return request.SerializeToString()


def test_one_input(raw: bytes) -> None:
    data = structured(atheris.FuzzedDataProvider(raw[1:])) if raw[:1] == b"\x01" else raw
    try:
        request = pb.WriteBatchRequest.FromString(data)
    except DecodeError:
        return
    for item in request.events:
        asked = time.time() * 1000
        try:
            event = event_of(item)
        except InvalidInput as exc:
            field, sep, _ = str(exc).partition(": ")
            expect(sep and field in FIELDS, f"InvalidInput {exc} names no field")
            continue
        expect(check_e164(event.number) == event.number, f"{event}: number not E.164")
        expect(event.kind == KINDS[item.kind], f"{event}: kind for {item.kind}")
        if event.kind == REASSIGN:
            expect(event.scope == "" and event.mask == 0, f"{event}: a reassignment's scope")
        else:
            expect(parse_scope(event.scope) == event.scope, f"{event}: scope not canonical")
            expect(0 < event.mask <= 0xFF, f"{event}: mask")
        if item.at_ms:
            expect(event.at_ms == item.at_ms, f"{event}: at_ms for {item.at_ms}")
        else:
            expect(asked - 1000 <= event.at_ms <= time.time() * 1000 + 1000, f"{event}: now")
        expect(event.source in SOURCES and event.source != "snapshot", f"{event}: source")


if __name__ == "__main__":
    _harness.run(test_one_input)
